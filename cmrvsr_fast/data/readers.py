"""Readers for the two public datasets (ACDC, DSB15) and for a generic folder of cines.

Every reader returns CineRecords: a cine stack on the 0–255 scale cropped to multiples of 12 (docs/model.md), with
ED/ES where the data say them. Names are built from folder and file names only; no DICOM patient attribute is
read into a record or a log line. Unreadable files raise DataError naming the file and the reason; a sequence
that cannot be used (mixed frame sizes, too few frames) is skipped with a warning that names its folder.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cmrvsr_fast.cardiac.intensity import clip_and_scale
from cmrvsr_fast.data.preprocess import crop_to_multiple
from cmrvsr_fast.io.acdc_info import read_acdc_info
from cmrvsr_fast.io.dicom import find_cine_series
from cmrvsr_fast.io.dicom_pixels import read_series_pixels
from cmrvsr_fast.io.errors import DataError
from cmrvsr_fast.io.series import SeriesRefused

__all__ = ["CineRecord", "DataError", "read_acdc", "read_cine_file", "read_dsb", "read_dsb_series", "read_folder"]

log = logging.getLogger(__name__)


@dataclass
class CineRecord:
    """name: a label built from folder/file names; cine: (S, T, H, W) float32 on 0–255, H and W multiples of 12;
    ed, es: 0-based frame indices (es None: estimate it); source: the file or folder it came from;
    position: the slice position along its normal in mm, where the source says it."""

    name: str
    cine: np.ndarray
    ed: int = 0
    es: int | None = None
    source: str = ""
    position: float | None = None


def prepare_intensities(raw: np.ndarray) -> np.ndarray:
    """Scanner intensities -> the 0–255 scale: integer data (and float data outside 0–255) are clipped at the
    99.5 % point and min–max scaled as the public preprocessing does; 0–255 float data are kept."""
    data = np.asarray(raw)
    if np.issubdtype(data.dtype, np.integer) or data.min() < 0 or data.max() > 255:
        return clip_and_scale(data)
    return data.astype(np.float32)


def _finish(name: str, stack: np.ndarray, ed: int, es: int | None, source: Path) -> CineRecord:
    """(S, T, H, W) raw stack -> a CineRecord on the 0–255 scale, cropped; ED/ES checked against T."""
    frames = stack.shape[1]
    for label, index in (("ED", ed), ("ES", es)):
        if index is not None and not 0 <= index < frames:
            raise DataError(f"{source}: {label} frame {index} (0-based) is outside the cine's {frames} frames")
    if not np.isfinite(stack).all():
        raise DataError(f"{source}: contains NaN or infinite values")
    cine = crop_to_multiple(prepare_intensities(stack)).astype(np.float32)
    return CineRecord(name=name, cine=np.ascontiguousarray(cine), ed=ed, es=es, source=str(source))


def _load_nifti(path: Path) -> np.ndarray:
    try:
        return np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as error:  # nibabel raises many types for broken files  # noqa: BLE001
        raise DataError(f"{path}: cannot be read as NIfTI ({error})") from None


# ---- ACDC --------------------------------------------------------------------------------------------------


def read_acdc_patient(folder: str | Path) -> CineRecord:
    """One ACDC patient folder: `patientNNN_4d.nii.gz` (X, Y, Z, T) and `Info.cfg` -> a (Z, T, X, Y) record.
    Image rows are the NIfTI X axis, as in the public preprocessing."""
    folder = Path(folder)
    volumes = sorted(folder.glob("*_4d.nii*"))
    if len(volumes) != 1:
        raise DataError(f"{folder}: expected one *_4d.nii(.gz) file, found {len(volumes)}")
    data = _load_nifti(volumes[0])
    if data.ndim != 4:
        raise DataError(f"{volumes[0]}: expected a 4-D (X, Y, Z, T) volume, got shape {data.shape}")
    info = read_acdc_info(folder / "Info.cfg")
    try:
        ed, es = int(info["ED"]) - 1, int(info["ES"]) - 1
    except (KeyError, ValueError):
        raise DataError(f"{folder / 'Info.cfg'}: needs integer 'ED:' and 'ES:' lines (1-based frames)") from None
    if "NbFrame" in info and info["NbFrame"].isdigit() and int(info["NbFrame"]) != data.shape[3]:
        log.warning("%s: Info.cfg says %s frames, the volume has %d", folder.name, info["NbFrame"], data.shape[3])
    return _finish(folder.name, np.transpose(data, (2, 3, 0, 1)), ed, es, volumes[0])


def read_acdc(root: str | Path) -> list[CineRecord]:
    """Every `patient*` folder below root (e.g. ACDC's training/ and testing/), sorted by name."""
    folders = sorted({p.parent for p in Path(root).rglob("*_4d.nii*")}, key=lambda p: p.name)
    if not folders:
        raise DataError(f"{root}: no ACDC patient folder (patientNNN/patientNNN_4d.nii.gz) found")
    return [read_acdc_patient(f) for f in folders]


# ---- DSB15 (Kaggle Second Annual Data Science Bowl) ---------------------------------------------------------


def read_dsb_series(folder: str | Path, min_frames: int = 1) -> list[CineRecord]:
    """One `sax_N` folder of single-frame DICOMs -> one record per slice position (usually one).

    Frames are grouped into series and slices by the scanner input's rules (io/series.py), each slice judged on
    its own (`slices_alone`): ordered by TriggerTime then InstanceNumber; a slice holding a whole multiple of the
    cardiac cycle is a repeated acquisition, of which the last cycle is kept. Slices with mixed frame sizes or
    fewer than `min_frames` frames, and series that cannot be used, are skipped with a warning."""
    folder = Path(folder)
    found = find_cine_series(folder, slices_alone=True)
    for name in found.report.not_dicom:
        if not Path(name).name.startswith("."):  # hidden files (.DS_Store) are not part of the data
            raise DataError(f"{name}: cannot be read as a DICOM image (not DICOM)")
    if found.report.unreadable:
        name, reason = found.report.unreadable[0]
        raise DataError(f"{name}: cannot be read as a DICOM image ({reason})")
    for reason in found.refused:
        log.warning("%s: skipped %s", folder, reason)
    passed_over = {"not a cine": found.not_cine, "derived": found.derived}
    passed_over.update((reason, n) for reason, n in found.report.skipped.items() if reason != "not DICOM")
    for what, count in passed_over.items():
        if count:
            log.warning("%s: skipped %d %s series or file(s)", folder, count, what)
    for note in (note for series in found.series for note in series.notes):
        log.warning("%s: %s", folder, note)
    # Series in acquisition order (SeriesNumber), so that read_dsb's "the later acquisition of a position wins"
    # means the later series, not the later UID in text order.
    ordered = sorted(found.series, key=lambda series: (series.number is None, series.number or 0))
    slices = [(series, cine) for series in ordered for cine in series.slices]
    records = []
    for series, cine in slices:
        if len(cine.frames) < min_frames:
            log.warning("%s: skipped a slice with %d frames (< %d)", folder, len(cine.frames), min_frames)
            continue
        try:
            stored = read_series_pixels(found.archive, dataclasses.replace(series, slices=[cine]))
        except SeriesRefused as error:
            raise DataError(str(error)) from None
        position = round(cine.position, 1)
        label = folder.name if len(slices) == 1 else f"{folder.name}@{position}"
        record = _finish(f"{folder.parent.parent.name}/{label}", stored, 0, None, folder)
        record.position = position
        records.append(record)
    return records


def read_dsb(root: str | Path, min_frames: int = 1) -> list[CineRecord]:
    """Every `<id>/study/sax_N` folder below root. When one study has two sax folders at the same position
    (a re-acquisition), the folder with the higher number is kept."""
    series = sorted(
        (p for p in Path(root).rglob("sax_*") if p.is_dir()), key=lambda p: (str(p.parent), _folder_number(p))
    )
    if not series:
        raise DataError(f"{root}: no DSB15 series (<id>/study/sax_N/) found")
    kept: dict[tuple[str, float | None], CineRecord] = {}  # (study folder, slice position) -> record
    for folder in series:
        for record in read_dsb_series(folder, min_frames):
            key = (str(folder.parent), record.position)
            if key in kept:
                log.warning("%s re-acquires the position of %s; keeping the later", folder, kept[key].source)
            kept[key] = record
    return list(kept.values())


def _folder_number(path: Path) -> int:
    digits = re.findall(r"\d+", path.name)
    return int(digits[-1]) if digits else -1


# ---- a generic folder of cines -----------------------------------------------------------------------------


def read_cine_file(path: str | Path) -> CineRecord:
    """A .npy cine ((T, H, W) or (S, T, H, W)) or a NIfTI cine ((X, Y, T) or (X, Y, Z, T)); ED = 0, ES estimated."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot be read as a .npy array ({error})") from None
        if data.ndim == 3:
            data = data[None]
        elif data.ndim != 4:
            raise DataError(f"{path}: expected (T, H, W) or (S, T, H, W), got shape {data.shape}")
    else:
        data = _load_nifti(path)
        if data.ndim == 3:
            data = np.transpose(data, (2, 0, 1))[None]
        elif data.ndim == 4:
            data = np.transpose(data, (2, 3, 0, 1))
        else:
            raise DataError(f"{path}: expected (X, Y, T) or (X, Y, Z, T), got shape {data.shape}")
    return _finish(path.name.split(".")[0], data, 0, None, path)


def read_folder(root: str | Path) -> list[CineRecord]:
    """Every .npy, .nii and .nii.gz cine below root, sorted by path."""
    paths = sorted(p for p in Path(root).rglob("*") if p.suffix == ".npy" or p.name.endswith((".nii", ".nii.gz")))
    if not paths:
        raise DataError(f"{root}: no .npy, .nii or .nii.gz cine found")
    return [read_cine_file(p) for p in paths]
