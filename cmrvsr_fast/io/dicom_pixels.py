"""Read a series' stored pixel values as one (S, T, H, W) array, with errors that name the file and the reason."""

from __future__ import annotations

import numpy as np
import pydicom

from cmrvsr_fast.io.dicom_scan import InputArchive
from cmrvsr_fast.io.series import CineSeries, SeriesRefused

DECODERS_EXTRA = "pip install 'cmrvsr_fast[dicom]'"


def _decode(archive: InputArchive, name: str) -> np.ndarray:
    """All frames of one file: (H, W) for a classic image, (frames, H, W) for a multi-frame one."""
    display = archive.display(name)
    try:
        with archive.open(name) as handle:
            ds = pydicom.dcmread(handle)
    except Exception as error:  # noqa: BLE001  (pydicom raises many types on damaged files)
        raise SeriesRefused(f"{display}: cannot be read ({type(error).__name__}: {error})") from None
    if "PixelData" not in ds:
        raise SeriesRefused(f"{display}: has no PixelData")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        return ds.pixel_array
    except Exception as error:  # noqa: BLE001
        if syntax is not None and syntax.is_compressed:
            raise SeriesRefused(
                f"{display}: pixel data are compressed ({syntax.name}, {syntax}) and could not be decoded "
                f"({error.__class__.__name__}); the decoders come with the `dicom` extra: {DECODERS_EXTRA}"
            ) from None
        raise SeriesRefused(f"{display}: pixel data are short or damaged ({error})") from None


def read_series_pixels(archive: InputArchive, series: CineSeries) -> np.ndarray:
    """(S, T, H, W) stored values (before RescaleSlope/Intercept) in the stored dtype."""
    cache: dict[str, np.ndarray] = {}
    slices = []
    for cine in series.slices:
        frames = []
        for ref in cine.frames:
            if ref.name not in cache:
                cache[ref.name] = _decode(archive, ref.name)
            data = cache[ref.name]
            image = data if ref.frame is None else data[ref.frame]
            if image.shape != (ref.rows, ref.columns):
                raise SeriesRefused(f"{archive.display(ref.name)}: pixel data shape {image.shape} does not match "
                                    f"Rows × Columns {ref.rows} × {ref.columns}")  # fmt: skip
            frames.append(image)
        slices.append(np.stack(frames))
        if all(ref.frame is None for ref in cine.frames):
            cache.clear()  # single-frame files are not shared between slices
    return np.stack(slices)
