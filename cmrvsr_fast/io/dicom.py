"""DICOM cines in: scan a folder or zip (dicom_scan.py), group frames into cine series (series.py), read their
pixels (dicom_pixels.py); derived series are written by dicom_write.py.

    from cmrvsr_fast.io import read_cines
    for series, stack in read_cines("scanner_export/"):   # stack: (S, T, H, W) real values (rescale applied)
        print(series.label, series.shape, series.notes)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmrvsr_fast.io.dicom_pixels import read_series_pixels
from cmrvsr_fast.io.dicom_scan import InputArchive, ScanReport, scan
from cmrvsr_fast.io.series import CineSeries, DerivedSeries, NotACine, SeriesRefused, build_series, group_frames

log = logging.getLogger(__name__)


@dataclass
class Discovery:
    """What a DICOM input holds: usable cine series, refusals (each with its reason), non-cine series count."""

    archive: InputArchive
    report: ScanReport
    series: list[CineSeries] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    not_cine: int = 0
    derived: int = 0


def find_cine_series(source: str | Path, slices_alone: bool = False) -> Discovery:
    """Scan `source` (a folder or a .zip) and group its MR frames into cine series by the rules of series.py
    (slices_alone: each slice judged on its own, for a reader that makes a record of each)."""
    found = Discovery(InputArchive(source), scan(source))
    for frames in group_frames(found.report.frames).values():
        try:
            found.series.append(build_series(frames, slices_alone))
        except NotACine:
            found.not_cine += 1
        except DerivedSeries:
            found.derived += 1
        except SeriesRefused as error:
            number = str(frames[0].header.get("SeriesNumber", "?"))
            found.refused.append(f"series #{number}: {error}")
    return found


def rescale(series: CineSeries) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of a series (one pair per series: series.py refuses mixed ones)."""
    header = series.first.header
    return float(header.get("RescaleSlope", 1) or 1), float(header.get("RescaleIntercept", 0) or 0)


def read_cines(source: str | Path) -> list[tuple[CineSeries, np.ndarray]]:
    """Every usable cine series under `source` with its (S, T, H, W) float64 pixels in real units. Refused series
    and unreadable files are logged (reason and file name only) and left out."""
    found = find_cine_series(source)
    for name, reason in found.report.unreadable:
        log.warning("%s: %s", name, reason)
    for text in found.refused:
        log.warning("%s", text)
    cines = []
    for series in found.series:
        try:
            slope, intercept = rescale(series)
            cines.append((series, read_series_pixels(found.archive, series).astype(np.float64) * slope + intercept))
        except SeriesRefused as error:
            log.warning("%s: %s", series.label, error)
    return cines
