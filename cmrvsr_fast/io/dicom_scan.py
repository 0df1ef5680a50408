"""Find the MR images in a folder (recursively) or a zip archive and read their headers; pixels stay on disk.

Every file is classified: an MR image (classic MR Image Storage, or Enhanced MR Image Storage with one FrameRef
per frame), a DICOMDIR, another kind of DICOM object (skipped), not DICOM at all (skipped), or a DICOM file whose
header cannot be parsed (reported by name, with the reason). Only file names and UIDs are recorded here; no
patient attribute is read into any field that is printed.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
PIXEL_DATA = 0x7FE00010


class InputArchive:
    """A folder (walked recursively, hidden files included so that they are counted) or a .zip file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._zip = zipfile.ZipFile(self.root) if self.root.is_file() and zipfile.is_zipfile(self.root) else None
        # A single DICOM file (an enhanced multi-frame cine is one file) is a folder of one member.
        self._folder = self.root.parent if self.root.is_file() and self._zip is None else self.root

    def names(self) -> list[str]:
        """Member names relative to the root, sorted, files only."""
        if self._zip is not None:
            return sorted(info.filename for info in self._zip.infolist() if not info.is_dir())
        if self._folder != self.root:
            return [self.root.name]
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def open(self, name: str) -> BinaryIO:
        if self._zip is not None:
            return io.BytesIO(self._zip.read(name))
        return open(self._folder / name, "rb")

    def display(self, name: str) -> str:
        """How a member is named in messages: the input path and the member."""
        return f"{self.root}:{name}" if self._zip is not None else str(self._folder / name)


@dataclass(eq=False)
class FrameRef:
    """One 2-D frame of an MR image file, with the header facts the grouping needs."""

    name: str  # member name in the archive
    frame: int | None  # index inside a multi-frame (enhanced) file, None for a classic single-frame file
    header: pydicom.Dataset  # the file's header (no pixels); shared by the frames of one file
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str
    rows: int
    columns: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    trigger_time: float | None
    instance: int
    cardiac_images: int | None


@dataclass
class ScanReport:
    frames: list[FrameRef] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> count of files
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    not_dicom: list[str] = field(default_factory=list)  # files skipped as "not DICOM", as messages name them
    files: int = 0


def _floats(value, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _number(ds: pydicom.Dataset, keyword: str, kind=float):
    value = ds.get(keyword)
    try:
        return kind(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _functional(ds: pydicom.Dataset, index: int, sequence: str) -> pydicom.Dataset | None:
    """The first item of a functional-group macro for frame `index`: per-frame groups first, then shared."""
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if not groups:
            continue
        group = groups[index] if len(groups) > 1 else groups[0]
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def _file_facts(name: str, ds: pydicom.Dataset, sop_class: str) -> dict:
    """The FrameRef fields every frame of one file shares."""
    return {
        "name": name,
        "header": ds,
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_uid": str(ds.get("SOPInstanceUID", "")),
        "sop_class": sop_class,
        "rows": int(ds.get("Rows", 0) or 0),
        "columns": int(ds.get("Columns", 0) or 0),
        "cardiac_images": _number(ds, "CardiacNumberOfImages", int),
    }


def _classic_frames(name: str, ds: pydicom.Dataset) -> list[FrameRef]:
    return [
        FrameRef(
            **_file_facts(name, ds, MR_IMAGE),
            frame=None,
            position=_floats(ds.get("ImagePositionPatient"), 3),
            orientation=_floats(ds.get("ImageOrientationPatient"), 6),
            pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
            slice_thickness=_number(ds, "SliceThickness"),
            trigger_time=_number(ds, "TriggerTime"),
            instance=_number(ds, "InstanceNumber", int) or 0,
        )
    ]


def _enhanced_frames(name: str, ds: pydicom.Dataset) -> list[FrameRef]:
    shared, frames = _file_facts(name, ds, ENHANCED_MR_IMAGE), []
    for index in range(int(ds.get("NumberOfFrames", 1) or 1)):
        plane = _functional(ds, index, "PlanePositionSequence")
        orient = _functional(ds, index, "PlaneOrientationSequence")
        measures = _functional(ds, index, "PixelMeasuresSequence")
        cardiac = _functional(ds, index, "CardiacSynchronizationSequence")
        frames.append(
            FrameRef(
                **shared,
                frame=index,
                position=_floats(plane.get("ImagePositionPatient"), 3) if plane else None,
                orientation=_floats(orient.get("ImageOrientationPatient"), 6) if orient else None,
                pixel_spacing=_floats(measures.get("PixelSpacing"), 2) if measures else None,  # type: ignore[arg-type]
                slice_thickness=_number(measures, "SliceThickness") if measures else None,
                trigger_time=_number(cardiac, "NominalCardiacTriggerDelayTime") if cardiac else None,
                instance=index,  # frames of one file keep their stored order among equal trigger times
            )
        )
    return frames


def _missing_pixel_bytes(ds: pydicom.Dataset, file_size: int) -> int:
    """How many bytes of PixelData the file declares but does not hold (0 when complete or of undefined length,
    as encapsulated pixel data is: its decoder finds a cut itself)."""
    element = ds.get_item(PIXEL_DATA) if PIXEL_DATA in ds else None
    tell, length = getattr(element, "value_tell", None), getattr(element, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return 0
    return max(0, tell + length - file_size)


def _detach(ds: pydicom.Dataset) -> None:
    """Keep the header only: drop the (deferred) pixel data after noting its presence, and the closed source."""
    ds.has_pixel_data = PIXEL_DATA in ds
    if ds.has_pixel_data:
        del ds[PIXEL_DATA]
    ds.buffer = None


def scan(root: str | Path) -> ScanReport:
    """Classify every file under `root` (a folder or a .zip) and collect the MR image frames."""
    archive = InputArchive(root)
    report = ScanReport()
    for name in archive.names():
        report.files += 1
        if Path(name).name.upper() == "DICOMDIR":
            report.skipped["DICOMDIR"] += 1
            continue
        try:
            with archive.open(name) as handle:
                # Parse every element but leave large values on disk: PixelData's presence is checked here,
                # its value is read when the series is processed.
                ds = pydicom.dcmread(handle, defer_size="64 KB")
                size = handle.seek(0, os.SEEK_END)
        except InvalidDicomError:
            report.skipped["not DICOM"] += 1
            report.not_dicom.append(archive.display(name))
            continue
        except Exception as error:  # pydicom raises many types on a damaged header  # noqa: BLE001
            report.unreadable.append((archive.display(name), f"damaged DICOM header ({type(error).__name__})"))
            continue
        missing = _missing_pixel_bytes(ds, size)
        _detach(ds)
        sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
        if sop_class == MEDIA_DIRECTORY:
            report.skipped["DICOMDIR"] += 1
        elif sop_class in (MR_IMAGE, ENHANCED_MR_IMAGE) and not ds.has_pixel_data:
            report.unreadable.append((archive.display(name), "no PixelData (truncated, or not an image)"))
        elif sop_class in (MR_IMAGE, ENHANCED_MR_IMAGE) and missing:
            report.unreadable.append((archive.display(name), f"truncated: PixelData lacks {missing} of its bytes"))
        elif sop_class == MR_IMAGE:
            report.frames.extend(_classic_frames(name, ds))
        elif sop_class == ENHANCED_MR_IMAGE:
            report.frames.extend(_enhanced_frames(name, ds))
        else:
            report.skipped["DICOM, not an MR image"] += 1
    return report
