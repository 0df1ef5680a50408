"""Group scanned MR frames into cine series: Study and Series Instance UID, then slice position, then time.

Rules (each one reported in the series' notes or as the reason it is refused):
- Slice position is ImagePositionPatient projected on the slice normal (row × column direction), not
  SliceLocation; positions closer than 0.01 mm are one slice. A series without position or orientation on every
  frame, with mixed orientations, mixed frame sizes or mixed pixel formats is refused.
- Frames of a slice are ordered by TriggerTime, then InstanceNumber. Without TriggerTime on any frame of the
  series they are ordered by InstanceNumber (noted); with TriggerTime on only some frames the series is refused.
- The cycle length N is CardiacNumberOfImages where the header has it, else the number of distinct trigger times.
  A position holding k·N frames (k > 1) was acquired k times: its frames are split into k runs of N in
  InstanceNumber order and the last run is kept (noted). A position with fewer than N frames is a short slice and
  is dropped (noted); any other count is refused as ambiguous.
- Copies of one SOP instance (the same frame twice) count once (noted).
- A series whose slices have a single frame each is not a cine, nor is one whose every frame has its own plane
  (a 3-plane localiser); a series derived after acquisition (ImageType DERIVED\\SECONDARY, or a projection or
  reformat: MIP, MPR, …) and any series this package wrote are not upscaled (again). Both are counted as
  skipped, not as failures. The kept slices must all have the same number of frames.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from cmrvsr_fast.io.dicom_scan import FrameRef

POSITION_TOLERANCE_MM = 0.01


class SeriesRefused(ValueError):
    """A series that cannot be used as it is; the message says why (and names a file where one is to blame)."""


class NotACine(ValueError):
    """A series of single images (localisers, scouts, in one plane or several): skipped, not a failure."""


class DerivedSeries(ValueError):
    """A series derived after acquisition (ImageType DERIVED\\SECONDARY, projections and reformats) or written by
    this package: skipped, not a failure, so that an output routed back is not upscaled again."""


@dataclass
class SliceCine:
    position: float  # mm along the slice normal
    frames: list[FrameRef]


@dataclass
class CineSeries:
    study_uid: str
    series_uid: str
    number: int | None
    description: str
    slices: list[SliceCine]
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> FrameRef:
        return self.slices[0].frames[0]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(slices, frames, rows, columns)."""
        return len(self.slices), len(self.slices[0].frames), self.first.rows, self.first.columns

    @property
    def label(self) -> str:
        """How the series is named in progress lines and tables: its number and description (no patient data)."""
        number = "?" if self.number is None else str(self.number)
        return f"#{number} {self.description}".strip()


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return np.cross(row, column)


def _pixel_format(frame: FrameRef) -> tuple:
    h = frame.header
    return (
        h.get("BitsAllocated"),
        h.get("BitsStored"),
        h.get("PixelRepresentation"),
        h.get("SamplesPerPixel", 1),
        str(h.get("PhotometricInterpretation", "")),
        str(h.get("RescaleSlope", "")),
        str(h.get("RescaleIntercept", "")),
    )


def _check_series(frames: list[FrameRef], one_frame_size: bool = True) -> None:
    for frame in frames:
        if frame.position is None or frame.orientation is None:
            raise SeriesRefused(
                f"{frame.name}: no ImagePositionPatient/ImageOrientationPatient, so slices cannot be told apart"
            )
    reference = np.asarray(frames[0].orientation)
    for frame in frames:
        if not np.allclose(frame.orientation, reference, atol=1e-3):
            raise SeriesRefused(f"{frame.name}: orientation differs from {frames[0].name} (mixed orientations)")
    sizes = {(f.rows, f.columns) for f in frames}
    if one_frame_size and len(sizes) > 1:
        raise SeriesRefused(f"inconsistent frame sizes in one series: {sorted(sizes)}")
    formats = {_pixel_format(f) for f in frames}
    if len(formats) > 1:
        raise SeriesRefused("inconsistent pixel formats (bits, sign or rescale) in one series")
    fmt = next(iter(formats))
    if fmt[3] != 1 or fmt[4] not in ("MONOCHROME1", "MONOCHROME2"):
        raise SeriesRefused(f"{frames[0].name}: not a greyscale image ({fmt[3]} samples, {fmt[4] or 'no'} photometric)")


PROJECTIONS = {"MIP", "MINIP", "MPR", "PROJECTION IMAGE", "REFORMATTED", "CURVED"}  # ImageType values of reformats


def _rounded(values, decimals: int) -> tuple[float, ...] | None:
    return None if values is None else tuple(np.round(np.asarray(values, dtype=float), decimals))


def _order_slice(frames: list[FrameRef], with_triggers: bool) -> list[FrameRef]:
    if with_triggers:
        return sorted(frames, key=lambda f: (f.trigger_time, f.instance))
    return sorted(frames, key=lambda f: f.instance)


def build_series(frames: list[FrameRef], slices_alone: bool = False) -> CineSeries:
    """One series' frames -> a CineSeries, applying the module's rules; raises SeriesRefused, NotACine or
    DerivedSeries. slices_alone: judge each slice on its own (the module docstring)."""
    unique = list({(f.sop_uid, f.frame): f for f in frames}.values())
    duplicates = len(frames) - len(unique)
    frames = unique
    image_type = [str(v).upper() for v in (frames[0].header.get("ImageType") or [])]
    # This package's own output is DERIVED\SECONDARY too: an output routed back is caught here.
    if image_type[:2] == ["DERIVED", "SECONDARY"] or PROJECTIONS & set(image_type):
        raise DerivedSeries("ImageType " + "\\".join(image_type))
    # Every frame in a plane of its own (one orientation or several, as a 3-plane localiser): no cine.
    places = {(_rounded(f.orientation, 3), _rounded(f.position, 2)) for f in frames}
    if len(places) == len(frames) and frames[0].position is not None:
        raise NotACine(f"{len(frames)} single image(s), not a cine")
    _check_series(frames, one_frame_size=not slices_alone)
    header = frames[0].header
    series = CineSeries(
        study_uid=frames[0].study_uid,
        series_uid=frames[0].series_uid,
        number=int(header.SeriesNumber) if str(header.get("SeriesNumber", "")).strip().lstrip("-").isdigit() else None,
        description=str(header.get("SeriesDescription", "") or ""),
        slices=[],
    )
    if duplicates:
        series.notes.append(f"{duplicates} duplicate file(s) of the same SOP instance ignored")
    triggers = [f.trigger_time is not None for f in frames]
    if any(triggers) and not all(triggers):
        missing = next(f for f in frames if f.trigger_time is None)
        raise SeriesRefused(f"{missing.name}: no TriggerTime while other frames of the series have one")
    if not any(triggers):
        series.notes.append("no TriggerTime: frames ordered by InstanceNumber")

    normal = slice_normal(frames[0].orientation)
    by_position: dict[float, list[FrameRef]] = defaultdict(list)
    for frame in sorted(frames, key=lambda f: float(np.dot(f.position, normal))):
        distance = float(np.dot(frame.position, normal))
        near = [p for p in by_position if abs(p - distance) <= POSITION_TOLERANCE_MM]
        by_position[near[0] if near else distance].append(frame)

    declared = {f.cardiac_images for f in frames if f.cardiac_images}
    for position, group in sorted(by_position.items()):
        cycle = max(declared) if declared else len({f.trigger_time for f in group}) if all(triggers) else len(group)
        count = len(group)
        where = f"slice at {position:.2f} mm"
        sizes = {(f.rows, f.columns) for f in group}
        if len(sizes) > 1:  # only with slices_alone: else the whole series was refused above
            series.notes.append(f"{where}: mixed frame sizes {sorted(sizes)}; dropped")
            continue
        if count == cycle:
            kept = group
        elif count > cycle and count % cycle == 0:
            runs = count // cycle
            kept = sorted(group, key=lambda f: (f.instance, f.name))[-cycle:]
            series.notes.append(f"{where}: {runs} acquisitions of {cycle} frames; kept the last")
        elif slices_alone:
            kept = group
            series.notes.append(f"{where}: {count} frames, not a whole number of {cycle}-frame cycles; kept")
        elif count < cycle:
            series.notes.append(f"{where}: short ({count} of {cycle} frames); dropped")
            continue
        else:
            raise SeriesRefused(f"{where}: {count} frames is not a multiple of the {cycle}-frame cycle")
        series.slices.append(SliceCine(position, _order_slice(kept, all(triggers))))

    if not series.slices and slices_alone:
        raise SeriesRefused("no usable slice left: " + "; ".join(series.notes))
    if not series.slices:
        raise SeriesRefused("no complete slice left (every slice is short)")
    counts = {len(s.frames) for s in series.slices}
    if len(counts) > 1 and not slices_alone:
        raise SeriesRefused(f"slices have different frame counts {sorted(counts)}")
    return series


def group_frames(frames: list[FrameRef]) -> dict[tuple[str, str], list[FrameRef]]:
    """(StudyInstanceUID, SeriesInstanceUID) -> the frames of that series, in a stable order."""
    groups: dict[tuple[str, str], list[FrameRef]] = defaultdict(list)
    for frame in frames:
        groups[(frame.study_uid, frame.series_uid)].append(frame)
    return dict(sorted(groups.items()))
