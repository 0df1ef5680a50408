"""ACDC's Info.cfg beside a 4-D NIfTI cine: `key: value` lines (ED and ES as 1-based frame numbers, NbFrame,
Group, Height, Weight). Read by the ACDC dataset reader and by the NIfTI input of the upscale job."""

from __future__ import annotations

from pathlib import Path

from cmrvsr_fast.io.errors import DataError


def read_acdc_info(path: Path) -> dict[str, str]:
    """The key: value lines of an Info.cfg (other lines are ignored); DataError when it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error})") from None
    info = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info
