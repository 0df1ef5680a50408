"""4-D NIfTI cines (X, Y, Z, T) in and out, with the affine of the ×r grid; ACDC folders with their Info.cfg.

Orientation: a NIfTI voxel (i, j) of a file converted from DICOM (dcm2niix, and this package's DICOM → NIfTI
output) is DICOM pixel (row j, column i): i runs along a DICOM row. So a (X, Y) plane is read as the (Y, X) image
(rows, columns), and the network sees the same anatomy the same way up from either file format.

Upscaling voxel (i, j) of the fine grid sits at source voxel coordinate (i + 0.5)/r − 0.5 (half-pixel centres,
as the bicubic baseline), so the new affine is A · S with S = diag(1/r, 1/r, 1) and a translation of
(1 − r)/(2r) voxels along X and Y. Data are read as real values (scl_slope/scl_inter applied); integer files
without scaling are written back in their own integer type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cmrvsr_fast.atomic import atomic_write
from cmrvsr_fast.io.acdc_info import read_acdc_info
from cmrvsr_fast.io.errors import DataError


@dataclass
class NiftiCine:
    name: str  # the file name without .nii/.nii.gz
    path: Path
    stack: np.ndarray  # (Z, T, Y, X) real values, float64: (slices, frames, rows, columns) as DICOM has them
    image: nib.Nifti1Image  # the source image (header and affine)
    ed: int | None = None  # 0-based, from an ACDC Info.cfg beside the file
    es: int | None = None


def nifti_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name[: -len(".nii")]


def check_nifti_dimensions(path: Path, shape: tuple[int, ...]) -> None:
    """A cine is 4-D (X, Y, Z, T); every other shape is refused with what it probably is and what to do."""
    if len(shape) == 4:
        return
    if len(shape) == 3:
        reason = ("a 3-D file is ambiguous (a volume, or a single-slice cine?): save a single slice as "
                  "(X, Y, 1, T)")  # fmt: skip
    elif len(shape) < 3:
        reason = f"a {len(shape)}-D file is one image, not a cine"
    else:
        reason = (f"a {len(shape)}-D file holds more than one cine (dimensions after T: echoes, components?): "
                  "save each cine as its own 4-D file")  # fmt: skip
    raise DataError(f"{path}: expected a 4-D (X, Y, Z, T) cine, got shape {tuple(shape)}; {reason}")


def read_nifti_cine(path: str | Path) -> NiftiCine:
    """A 4-D (X, Y, Z, T) cine as (Z, T, Y, X) (see the module docstring); ED/ES come from an Info.cfg in the same
    folder (ACDC layout) when present."""
    path = Path(path)
    try:
        image = nib.load(str(path))
        check_nifti_dimensions(path, image.shape)
        data = np.asarray(image.get_fdata(dtype=np.float64))
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001  (nibabel raises many types for broken files)
        raise DataError(f"{path}: cannot be read as NIfTI ({error})") from None
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{path}: contains {bad} NaN or infinite value(s)")
    cine = NiftiCine(nifti_stem(path), path, np.transpose(data, (2, 3, 1, 0)), image)
    info_path = path.parent / "Info.cfg"
    if info_path.is_file():
        info = read_acdc_info(info_path)
        try:
            cine.ed, cine.es = int(info["ED"]) - 1, int(info["ES"]) - 1
        except (KeyError, ValueError):
            raise DataError(f"{info_path}: needs integer 'ED:' and 'ES:' lines (1-based frames)") from None
        frames = data.shape[3]
        for label, index in (("ED", cine.ed), ("ES", cine.es)):
            if not 0 <= index < frames:
                raise DataError(f"{info_path}: {label} frame {index + 1} is outside the cine's {frames} frames")
    return cine


def upscaled_affine(affine: np.ndarray, scale: int) -> np.ndarray:
    """The affine of the ×scale grid in X and Y (see the module docstring)."""
    grid = np.eye(4)
    grid[0, 0] = grid[1, 1] = 1.0 / scale
    grid[0, 3] = grid[1, 3] = (1.0 - scale) / (2.0 * scale)
    return affine @ grid


def write_nifti_cine(path: Path, stack: np.ndarray, source: nib.Nifti1Image, scale: int) -> Path:
    """stack: (Z, T, rY, rX) real values -> a 4-D NIfTI beside nothing half-written (temporary file, rename)."""
    data = np.transpose(stack, (3, 2, 0, 1))
    header = source.header.copy()
    slope, inter = source.header.get_slope_inter()
    source_dtype = source.get_data_dtype()
    if np.issubdtype(source_dtype, np.integer) and slope in (None, 1.0) and inter in (None, 0.0):
        info = np.iinfo(source_dtype)
        data = np.clip(np.rint(data), info.min, info.max).astype(source_dtype)
    else:
        data = data.astype(np.float32)
        header.set_data_dtype(np.float32)
        header.set_slope_inter(1.0, 0.0)
    affine = upscaled_affine(source.affine, scale)
    image = nib.Nifti1Image(data, affine, header=header)
    qform, qcode = source.get_qform(coded=True)
    sform, scode = source.get_sform(coded=True)
    image.set_qform(upscaled_affine(qform, scale) if qform is not None else affine, int(qcode or 1))
    image.set_sform(upscaled_affine(sform, scale) if sform is not None else affine, int(scode or 1))
    zooms = list(source.header.get_zooms())
    zooms[0], zooms[1] = zooms[0] / scale, zooms[1] / scale
    image.header.set_zooms(zooms)
    return atomic_write(path, lambda tmp: nib.save(image, tmp), keep_suffix=True)


def affine_from_dicom(
    first_position: np.ndarray, orientation: tuple[float, ...], spacing: tuple[float, float], slice_step: np.ndarray
) -> np.ndarray:
    """The NIfTI (RAS) affine of a DICOM stack written as data[column, row, slice, time].

    first_position: ImagePositionPatient (LPS) of the first slice's first pixel; spacing: PixelSpacing (between
    rows, between columns); slice_step: LPS vector from one slice to the next."""
    row_dir, column_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # i: along a row (column index)
    lps[:3, 1] = column_dir * spacing[0]  # j: down a column (row index)
    lps[:3, 2] = slice_step
    lps[:3, 3] = first_position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


def write_nifti_from_dicom(path: Path, stack: np.ndarray, affine: np.ndarray, frame_ms: float | None) -> Path:
    """stack: (S, T, rows, columns) real values -> (columns, rows, S, T) float32 NIfTI with the given affine."""
    data = np.transpose(stack, (3, 2, 0, 1)).astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, 1)
    image.set_sform(affine, 1)
    zooms = list(image.header.get_zooms())
    if frame_ms:
        zooms[3] = frame_ms
        image.header.set_xyzt_units("mm", "msec")
    image.header.set_zooms(zooms)
    return atomic_write(path, lambda tmp: nib.save(image, tmp), keep_suffix=True)
