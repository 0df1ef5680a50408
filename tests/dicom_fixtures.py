"""DICOM cine fixtures written by the tests from pydicom's bundled real MR header (MR_small.dcm), with planted
patient identifiers that must never reach a log line, an error message or a file name."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from cmrvsr_fast.data.phantom import generate

SECRETS = {
    "PatientName": "Doe^Jane^SECRETNAME",
    "PatientID": "PID-SECRET-4711",
    "PatientBirthDate": "19390411",
    "AccessionNumber": "ACC-SECRET-0815",
}
SECRET_STRINGS = ["SECRETNAME", "Doe^Jane", "PID-SECRET-4711", "19390411", "ACC-SECRET-0815"]
SPACING = 1.5
SLICE_GAP = 8.0
FRAME_MS = 33.0


def mr_header() -> pydicom.Dataset:
    """pydicom's MR test image, made an acquired (ORIGINAL) image as a scanner's cine is."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    return ds


def phantom_stored(slices: int, frames: int, size: int, seed: int = 3) -> np.ndarray:
    """(S, T, H, W) int16 stored values of a phantom cine (0–255 grey × 8)."""
    cine = generate(seed, (size, size), max(frames, 8), slices).cine[:, :frames]
    return np.rint(cine * 8).astype(np.int16)


def write_cine_series(
    folder: Path,
    *,
    slices: int = 2,
    frames: int = 10,
    size: int = 36,
    series_number: int = 5,
    seed: int = 3,
    study_uid: str | None = None,
    series_uid: str | None = None,
    with_trigger: bool = True,
    overlay: bool = True,
) -> list[Path]:
    """A classic MR cine series, one file per frame, named so that file order is not acquisition order."""
    folder.mkdir(parents=True, exist_ok=True)
    base = mr_header()
    for keyword, value in SECRETS.items():
        setattr(base, keyword, value)
    base.StudyInstanceUID = study_uid or generate_uid(entropy_srcs=["study", str(seed)])
    base.SeriesInstanceUID = series_uid or generate_uid(entropy_srcs=["series", str(seed), str(series_number)])
    base.FrameOfReferenceUID = generate_uid(entropy_srcs=["for", str(seed)])
    base.SeriesNumber, base.SeriesDescription = series_number, "cine sax"
    base.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]
    base.PixelSpacing = [SPACING, SPACING]
    base.SliceThickness = SLICE_GAP
    base.Rows = base.Columns = size
    base.CardiacNumberOfImages = frames
    if overlay:  # an overlay plane and its data: must not be carried into the derived series
        base.add_new(0x60000010, "US", size)
        base.add_new(0x60000011, "US", size)
        base.add_new(0x60003000, "OW", b"\x00" * (size * size // 8))
    normal = np.cross([1, 0, 0], [0, 0.8, -0.6])
    stored = phantom_stored(slices, frames, size, seed)
    paths = []
    for s in range(slices):
        for t in range(frames):
            ds = copy.deepcopy(base)
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[base.SeriesInstanceUID, str(s), str(t)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = s * frames + t + 1
            ds.ImagePositionPatient = list(np.array([-20.0, -30.0, 10.0]) + s * SLICE_GAP * normal)
            ds.SliceLocation = 0  # deliberately useless: positions come from ImagePositionPatient
            if with_trigger:
                ds.TriggerTime = t * FRAME_MS
            ds.PixelData = stored[s, t].astype("<i2").tobytes()
            path = folder / f"IMG_{(t * 7 + s * 3) % 97:03d}_{s}_{t}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def write_enhanced_series(path: Path, *, slices: int = 2, frames: int = 8, size: int = 36, seed: int = 4) -> Path:
    """An Enhanced MR Image (multi-frame) cine built from the same real header: per-frame plane position and
    trigger delay, shared orientation and spacing."""
    base = mr_header()
    for keyword, value in SECRETS.items():
        setattr(base, keyword, value)
    ds = copy.deepcopy(base)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "TriggerTime"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["enh", str(seed)])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["enh-study", str(seed)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["enh-series", str(seed)])
    ds.SeriesNumber, ds.SeriesDescription = 7, "enhanced cine"
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = slices * frames
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [SPACING, SPACING], SLICE_GAP
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    stored = phantom_stored(slices, frames, size, seed)
    images = []
    for t in range(frames):  # stored time-major, to check that grouping does not rely on file order
        for s in range(slices):
            group, plane, cardiac = Dataset(), Dataset(), Dataset()
            plane.ImagePositionPatient = [-20.0, -30.0, 10.0 + s * SLICE_GAP]
            cardiac.NominalCardiacTriggerDelayTime = t * FRAME_MS
            group.PlanePositionSequence = Sequence([plane])
            group.CardiacSynchronizationSequence = Sequence([cardiac])
            per_frame.append(group)
            images.append(stored[s, t])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(images).astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# MR Image IOD (PS3.3 A.4): Type 1 attributes (present, non-empty) and Type 2 (present) of its mandatory modules
# (Patient, General Study, General Series, Frame of Reference, General Equipment, General Image, Image Plane,
# Image Pixel, MR Image, SOP Common), as far as they apply to a single-frame MONOCHROME image.
TYPE1 = [
    "StudyInstanceUID", "Modality", "SeriesInstanceUID", "FrameOfReferenceUID", "PixelSpacing",
    "ImageOrientationPatient", "ImagePositionPatient", "SamplesPerPixel", "PhotometricInterpretation", "Rows",
    "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData", "ImageType",
    "ScanningSequence", "SequenceVariant", "SOPClassUID", "SOPInstanceUID",
]  # fmt: skip
TYPE2 = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "StudyID", "AccessionNumber", "SeriesNumber", "PositionReferenceIndicator", "Manufacturer", "InstanceNumber",
    "SliceThickness", "ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength",
]  # fmt: skip


def assert_mr_image_iod(ds: pydicom.Dataset) -> None:
    missing = [k for k in TYPE1 if k not in ds or ds[k].value in (None, "", [])]
    absent = [k for k in TYPE2 if k not in ds]
    assert not missing and not absent, (missing, absent)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" == ds.file_meta.MediaStorageSOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.ImageType[0] in ("ORIGINAL", "DERIVED") and ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
    assert ds.HighBit == ds.BitsStored - 1
