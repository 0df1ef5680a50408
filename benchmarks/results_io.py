"""Where benchmark results go: dated JSON files under benchmarks/results/, written atomically."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from cmrvsr_fast.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, hardware_kind: str, result: dict, out: Path | None = None, quiet: bool = False) -> Path:
    """Write `result` to `out`, or to results/<name>_<date>_<hardware_kind>.json, and say where."""
    path = out or RESULTS / f"{name}_{dt.date.today().isoformat()}_{hardware_kind}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if not quiet:
        print(f"wrote {path}")
    return path
