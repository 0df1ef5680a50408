"""Write a super-resolved cine as a derived MR series (classic MR Image Storage, Explicit VR Little Endian).

What the derived images carry, and why:
- New SeriesInstanceUID and SOPInstanceUIDs: name-based UUIDs under the 2.25 root, derived from the source UIDs,
  the scale, the weights' sha256 and every other setting that changes the pixels (precision, backend, device,
  ED/ES, consistency strength) and the source series' shape (each frame depends on its whole cine), so a rerun
  gives the same UIDs and any change of pixels gives different ones.
- ImageType DERIVED\\SECONDARY; DerivationDescription; DerivationCodeSequence (DCM 113085 "Spatial resampling");
  SourceImageSequence referencing the source image (and frame) each image was made from.
- Rows/Columns ×r, PixelSpacing ÷r, and ImagePositionPatient moved to the centre of the finer grid's first pixel:
  a source pixel spans ±Δ/2 around its centre, so the first fine pixel's centre is (r−1)/(2r)·Δ back along both
  in-plane directions. The same half-pixel geometry as the bicubic baseline and the network's training pairs.
- The same Study, Frame of Reference, orientation, trigger times and cardiac tags; SeriesNumber + 1000 and
  "SR×r" in SeriesDescription.
- Overlays (60xx), icon images, private elements (they may describe the source pixels) and the source's pixel
  range attributes are not carried. Pixels keep the source's bit depth, signedness and rescale.
- An enhanced (multi-frame) source becomes classic single-frame images: its per-frame position, orientation,
  spacing and trigger delay are written as the classic attributes.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from cmrvsr_fast._version import __version__
from cmrvsr_fast.io.dicom_scan import ENHANCED_MR_IMAGE, MR_IMAGE, FrameRef
from cmrvsr_fast.io.series import CineSeries

SERIES_NUMBER_OFFSET = 1000
# uuid5(NAMESPACE_URL, "https://github.com/cmrvsr_fast/implementation") under 2.25: fixed across releases
IMPLEMENTATION_UID = "2.25.75608941667017098140248766984506546548"
NOT_CARRIED = (
    "IconImageSequence",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "SourceImageSequence",
    "DerivationDescription",
    "DerivationCodeSequence",
    "NumberOfFrames",
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
    "DimensionIndexSequence",
    "DimensionOrganizationSequence",
    "DataSetTrailingPadding",
)
# Type 2 attributes of the MR Image IOD's modules (Patient, General Study, General Series, Frame of Reference,
# General Equipment, General Image, Image Plane, MR Image): present, possibly empty.
TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "PositionReferenceIndicator",
    "Manufacturer",
    "InstanceNumber",
    "SliceThickness",
    "ScanOptions",
    "MRAcquisitionType",
    "EchoTime",
    "EchoTrainLength",
)


def derived_uid(*parts: object) -> str:
    """A deterministic UID from the given parts: a name-based (SHA-1, version 5) UUID under the 2.25 root
    (ISO/IEC 9834-8), so it needs no registered prefix and a rerun gives the same UID."""
    name = "".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _ds(values) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values]


def finer_grid_position(ref: FrameRef, scale: int) -> np.ndarray:
    """ImagePositionPatient of the first pixel of the ×scale grid (see the module docstring)."""
    row_dir, column_dir = np.asarray(ref.orientation[:3]), np.asarray(ref.orientation[3:])
    row_spacing, column_spacing = ref.pixel_spacing
    back = (scale - 1) / (2 * scale)
    return np.asarray(ref.position) - back * (column_spacing * row_dir + row_spacing * column_dir)


def _classic_header(ref: FrameRef) -> Dataset:
    """A copy of the source header as a classic single-frame MR image header, without pixels."""
    ds = copy.deepcopy(ref.header)
    ds.remove_private_tags()
    for element in list(ds):
        if 0x6000 <= element.tag.group <= 0x60FF:
            del ds[element.tag]  # overlay planes and their attributes
    if ref.sop_class == ENHANCED_MR_IMAGE:
        ds.ImageOrientationPatient = _ds(ref.orientation)
        ds.SliceThickness = "" if ref.slice_thickness is None else DSfloat(ref.slice_thickness, auto_format=True)
        if ref.trigger_time is not None:
            ds.TriggerTime = DSfloat(ref.trigger_time, auto_format=True)
        ds.ScanningSequence = ds.get("ScanningSequence") or "RM"  # research mode: enhanced MR does not say
        ds.SequenceVariant = ds.get("SequenceVariant") or "NONE"
    for keyword in NOT_CARRIED:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, None)
    _declare_cardiac_gating(ds)
    return ds


def _declare_cardiac_gating(ds: Dataset) -> None:
    """TriggerTime (Type 2C) belongs in an MR image only when ScanOptions says it was gated (CG cardiac, PPG
    peripheral pulse). A cine with trigger times was gated, and many scanners leave ScanOptions empty (always,
    for an enhanced source, which has no such attribute): CG is added rather than the trigger times dropped."""
    if ds.get("TriggerTime") in (None, ""):
        return
    value = ds.get("ScanOptions")
    options = [str(v) for v in (value if isinstance(value, list | MultiValue) else [value]) if v]
    if not {"CG", "PPG"} & set(options):
        ds.ScanOptions = [*options, "CG"] if options else "CG"


def _stored(values: np.ndarray, header: Dataset) -> np.ndarray:
    """Float stored values -> the source's stored integer type, rounded and limited to BitsStored."""
    bits_allocated, bits_stored = int(header.BitsAllocated), int(header.get("BitsStored", header.BitsAllocated))
    signed = int(header.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
    return np.clip(np.rint(values), low, high).astype(dtype)


_ASCII = str.maketrans({"²": "^2", "³": "^3", "×": "x", "–": "-", "—": "-", "’": "'"})


def _ascii(text: str) -> str:
    """Text this package writes, in DICOM's default repertoire (the source's SpecificCharacterSet may be any)."""
    return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")


def _settings_text(settings: Mapping[str, object]) -> str:
    return "; ".join(f"{key} {settings[key]}" for key in sorted(settings))


def derived_dataset(
    ref: FrameRef,
    pixels: np.ndarray,
    *,
    scale: int,
    weights_sha256: str,
    series_uid: str,
    instance_number: int,
    now: dt.datetime,
    settings: Mapping[str, object] = MappingProxyType({}),
    trained_on: str = "",
) -> Dataset:
    """The derived image made from source frame `ref`; pixels: (rH, rW) in stored-value units. `settings`: every
    other choice that changed the pixels (precision, backend, device, ED/ES, consistency), in the UIDs and the
    DerivationDescription; `trained_on`: what the weights learned from, for the ImageComments notice."""
    ds = _classic_header(ref)
    sop_uid = derived_uid(ref.sop_uid, ref.frame, scale, weights_sha256, _settings_text(settings), "image")
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE, sop_uid
    ds.SeriesInstanceUID = series_uid
    source_type = list(ref.header.get("ImageType", []))
    ds.ImageType = ["DERIVED", "SECONDARY", *source_type[2:]]
    ds.DerivationDescription = _ascii("; ".join(
        filter(None, (f"cmrvsr_fast {__version__} x{scale} super-resolution", f"weights sha256 {weights_sha256}",
                      _settings_text(settings), "not for diagnostic use"))
    ))[:1024]  # fmt: skip
    ds.ImageComments = _ascii(
        f"Super-resolved x{scale} by a neural network (cmrvsr_fast {__version__})"
        + (f" trained on {trained_on}" if trained_on else "")
        + ". Detail finer than the source was estimated, not acquired: for research, not for diagnosis."
    )
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113085", "DCM", "Spatial resampling"
    ds.DerivationCodeSequence = Sequence([code])
    source = Dataset()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = ref.sop_class, ref.sop_uid
    if ref.frame is not None:
        source.ReferencedFrameNumber = ref.frame + 1
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "121322", "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    source.PurposeOfReferenceCodeSequence = Sequence([purpose])
    ds.SourceImageSequence = Sequence([source])

    number = ref.header.get("SeriesNumber")
    ds.SeriesNumber = (int(number) if number not in (None, "") else 0) + SERIES_NUMBER_OFFSET
    ds.SeriesDescription = f"{ref.header.get('SeriesDescription', '') or ''} SRx{scale}".strip()[-64:]
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = _ds(finer_grid_position(ref, scale))
    ds.PixelSpacing = _ds(np.asarray(ref.pixel_spacing) / scale)
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime

    stored = _stored(pixels, ref.header)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = int(ref.header.get("BitsStored", ds.BitsAllocated))
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(ref.header.get("PixelRepresentation", 0))
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MR_IMAGE, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"CMRVSR_{__version__}"[:16]
    ds.file_meta = meta
    return ds


def write_series(
    series: CineSeries,
    sr_stored: np.ndarray,
    folder: Path,
    scale: int,
    weights_sha256: str,
    settings: Mapping[str, object] = MappingProxyType({}),
    trained_on: str = "",
) -> list[Path]:
    """Write every derived image of `series` into `folder` (which must exist); sr_stored: (S, T, rH, rW)."""
    # Each output frame depends on its whole cine: a series made again from more of its frames or slices (a DICOM
    # node reopening a series that arrived in two parts) must not reuse the UIDs of the first, partial one.
    settings = {**settings, "input": "x".join(map(str, series.shape))}
    text = _settings_text(settings)
    series_uid = derived_uid(series.study_uid, series.series_uid, scale, weights_sha256, text, "series")
    now = dt.datetime.now()
    written, instance = [], 0
    for slice_index, cine in enumerate(series.slices):
        for frame_index, ref in enumerate(cine.frames):
            instance += 1
            ds = derived_dataset(
                ref,
                sr_stored[slice_index, frame_index],
                scale=scale,
                weights_sha256=weights_sha256,
                series_uid=series_uid,
                instance_number=instance,
                now=now,
                settings=settings,
                trained_on=trained_on,
            )
            path = folder / f"IM{instance:05d}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            written.append(path)
    return written
