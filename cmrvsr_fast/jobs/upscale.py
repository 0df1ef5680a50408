"""`cmrvsr-fast upscale INPUT OUTPUT`: DICOM (folder, zip or one file) or NIfTI cines in, derived series out.

Safety rules, all checked before inference: INPUT must exist; OUTPUT may not be INPUT or lie inside it; an
existing OUTPUT is refused unless --overwrite, --resume or --shard; ED/ES asked for must lie in every cine; OUTPUT
must be writable and have room for the results. Every series is completed in a hidden staging folder inside
OUTPUT (`.cmrvsr-partial-<pid>`, so that the final rename never crosses a filesystem, even when OUTPUT is a mount
point) and moved into place by one rename, so no reader ever sees half a series. The staging folder is removed at
the end, on failure, on Ctrl-C and on SIGTERM; an OUTPUT this run created is removed again if it stayed empty.

Exit codes (EXIT_CODES): 0 every selected series written (or kept by --resume); 1 internal error (traceback);
2 bad input or usage, nothing written; 3 some series failed (each reason printed, the other series written);
130 / 143 stopped by Ctrl-C / SIGTERM (finished series kept, the one in progress discarded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from cmrvsr_fast._version import __version__
from cmrvsr_fast.atomic import atomic_write_text
from cmrvsr_fast.export.runners import ShapeMismatch
from cmrvsr_fast.inference.consistency import DEFAULT_STRENGTH, input_agreement
from cmrvsr_fast.inference.upscaler import TooLarge, Upscaler
from cmrvsr_fast.io import find_cine_series, rescale
from cmrvsr_fast.io.dicom_pixels import read_series_pixels
from cmrvsr_fast.io.dicom_scan import ScanReport
from cmrvsr_fast.io.dicom_write import finer_grid_position, write_series
from cmrvsr_fast.io.errors import DataError
from cmrvsr_fast.io.nifti import (
    affine_from_dicom,
    check_nifti_dimensions,
    nifti_stem,
    read_nifti_cine,
    write_nifti_cine,
    write_nifti_from_dicom,
)
from cmrvsr_fast.io.series import CineSeries, SeriesRefused, slice_normal

EXIT_OK, EXIT_INTERNAL_ERROR, EXIT_BAD_INPUT, EXIT_SOME_FAILED, EXIT_CTRL_C, EXIT_SIGTERM = 0, 1, 2, 3, 130, 143
EXIT_CODES = {
    EXIT_OK: "every selected series written (or kept by --resume); non-cine and derived series skipped",
    EXIT_INTERNAL_ERROR: "internal error (a bug, or the system failing): the traceback is printed; series "
    "finished before it are kept",
    EXIT_BAD_INPUT: "bad input or usage: nothing written",
    EXIT_SOME_FAILED: "some series failed (each reason printed); every other series written",
    EXIT_CTRL_C: "stopped by Ctrl-C: finished series kept, the one in progress discarded",
    EXIT_SIGTERM: "stopped by SIGTERM: finished series kept, the one in progress discarded",
}
MIN_SIDE = 16  # pixels: a smaller frame is no image to super-resolve (a thumbnail, a navigator, a broken header)
STAGING_PREFIX = ".cmrvsr-partial-"


class InputRefused(ValueError):
    """Bad input or usage, found before any work: exit code 2."""


class NoCineFound(InputRefused):
    """The input holds no MR cine series (only localisers, derived series, other objects)."""


@dataclass
class Options:
    output_format: str | None = None  # "dicom" | "nifti"; None: the input's own
    ed: int | None = None  # 0-based; None: frame 0
    es: int | None = None  # 0-based; None: estimated
    overwrite: bool = False
    dry_run: bool = False
    shard: tuple[int, int] | None = None
    progress: bool = True
    consistency: float = DEFAULT_STRENGTH  # how far the output is moved to reproduce its input (Upscaler.upscale)
    resume: bool = False  # keep series whose output and record exist and were made by the same weights and options


@dataclass
class SeriesResult:
    label: str
    shape: tuple[int, ...]
    status: str  # written | failed | kept (--resume: done before with the same weights and options)
    detail: str = ""
    seconds: float = 0.0
    output: str = ""
    qa: dict[str, float] = field(default_factory=dict)  # consistency.input_agreement of the written series
    tile_core: int | None = None  # LR tile core when the series was processed in tiles (Upscaler.check_memory)

    @property
    def worse_than_bicubic(self) -> bool:
        return bool(self.qa) and bool(self.qa["super_resolved_db"] < self.qa["bicubic_db"])


@dataclass
class JobReport:
    results: list[SeriesResult] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # unreadable files, refused series: each names the reason

    @property
    def exit_code(self) -> int:
        failed = self.problems or any(r.status == "failed" for r in self.results)
        return EXIT_SOME_FAILED if failed else EXIT_OK


@contextlib.contextmanager
def recorded(report: JobReport, label: str, shape: tuple[int, ...]) -> Iterator[SeriesResult]:
    """One series' result, timed: "failed" with the reason when the body raises for bad data (the run goes on
    with the next series), "written" when the body says so."""
    result = SeriesResult(label, shape, "failed")
    report.results.append(result)
    start = time.perf_counter()
    try:
        yield result
    except (SeriesRefused, DataError, ShapeMismatch, TooLarge) as error:
        result.detail = str(error)
    finally:
        result.seconds = time.perf_counter() - start


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise InputRefused(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


def check_paths(source: Path, output: Path, options: Options) -> None:
    if not source.exists():
        raise InputRefused(f"{source}: does not exist")
    source, output = source.resolve(), output.resolve()
    if output == source or source in output.parents:
        raise InputRefused(f"OUTPUT {output} is INPUT or inside it; results are never written into an input folder")
    if output.exists() and not output.is_dir():
        raise InputRefused(f"OUTPUT {output} exists and is not a folder")
    shared = options.overwrite or options.shard or options.resume or options.dry_run
    held = [p for p in output.iterdir() if not p.name.startswith(STAGING_PREFIX)] if output.is_dir() else []
    if held and not shared:
        raise InputRefused(f"OUTPUT {output} exists; pass --resume to keep the series it holds or --overwrite "
                           "to replace them")  # fmt: skip


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def input_kind(source: Path) -> str:
    """'nifti' or 'dicom'; a folder holding both is refused as ambiguous."""
    if source.is_file():
        if _is_nifti(source):
            return "nifti"
        if zipfile.is_zipfile(source) or _looks_like_dicom(source):
            return "dicom"
        raise InputRefused(f"{source}: INPUT must be a folder, a .zip of DICOM files, a DICOM file, or a "
                           ".nii/.nii.gz cine")  # fmt: skip
    files = [p for p in source.rglob("*") if p.is_file()]
    if not files:
        raise InputRefused(f"{source}: the folder is empty")
    niftis = [p for p in files if _is_nifti(p)]
    if niftis:
        dicoms = [p for p in files if not _is_nifti(p) and _looks_like_dicom(p)]
        if dicoms:
            raise InputRefused(f"{source}: holds both NIfTI ({niftis[0].name}) and DICOM ({dicoms[0].name}) files; "
                               "give one kind per run")  # fmt: skip
        return "nifti"
    return "dicom"


def nifti_inputs(source: Path) -> list[Path]:
    """The cines of a NIfTI input: the file itself, or a folder's *_4d.nii(.gz) files (ACDC layout) when it has
    any, else every .nii/.nii.gz file."""
    if source.is_file():
        return [source]
    found = sorted(p for p in source.rglob("*") if p.is_file() and _is_nifti(p))
    acdc = [p for p in found if nifti_stem(p).endswith("_4d")]
    return acdc or found


def select_shard(items: list, shard: tuple[int, int] | None) -> list:
    return items if shard is None else items[shard[0] :: shard[1]]


def series_name(series: CineSeries, scale: int) -> str:
    """A folder/file stem that is unique, the same on every shard and free of patient data."""
    digest = hashlib.sha256(series.series_uid.encode()).hexdigest()[:8]
    number = 0 if series.number is None else series.number
    return f"series{number:04d}_x{scale}_{digest}"


class Staging:
    """A hidden folder inside OUTPUT where each result is completed before one rename moves it into place.

    Inside OUTPUT, not beside it: the rename then never crosses a filesystem, also when OUTPUT is a mount point
    (a Docker volume, an NFS share, a PACS export mount). Entering creates OUTPUT and the staging folder, so an
    unwritable OUTPUT is refused before any inference (InputRefused, with the system's reason), as is one without
    room for `needed_bytes`. Leaving removes the staging folder and, when this run created OUTPUT and nothing was
    published into it, OUTPUT again."""

    def __init__(self, output: Path, overwrite: bool, needed_bytes: int = 0, resume: bool = False) -> None:
        self.output, self.overwrite, self.needed_bytes, self.resume = output, overwrite, needed_bytes, resume
        self.folder = output  # until entered: a unique name is made then (runs in containers share PID 1)
        self.created: Path | None = None  # the topmost folder this run created

    def __enter__(self) -> Staging:
        missing = [p for p in (self.output, *self.output.parents) if not p.exists()]
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            self.created = missing[-1] if missing else None
            self.folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.output))
            free = shutil.disk_usage(self.folder).free
        except OSError as error:
            self._remove_created()
            raise InputRefused(f"OUTPUT {self.output}: cannot be written ({error.strerror or error})") from None
        if self.needed_bytes > free:
            self.__exit__()
            raise InputRefused(f"OUTPUT {self.output}: {free / 2**30:.2f} GiB free, the results need about "
                               f"{self.needed_bytes / 2**30:.2f} GiB")  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        if self.folder != self.output:
            shutil.rmtree(self.folder, ignore_errors=True)
        self._remove_created()

    def _remove_created(self) -> None:
        """Remove the folders this run created, from OUTPUT upwards, as long as they are empty."""
        if self.created is None:
            return
        for folder in (self.output, *self.output.parents):
            try:
                folder.rmdir()
            except OSError:  # not empty: something was published, or somebody else wrote there
                return
            if folder == self.created:
                return

    def check_free(self, relative: str) -> None:
        """Neither the output nor its record may exist already, unless --overwrite (a DICOM series and the NIfTI
        of the same series share the record's name). With --resume, an output without its record is one whose
        run stopped between the two renames of `publish_series`: incomplete, so it is redone."""
        record = self.output / sidecar_name(relative)
        unrecorded = self.resume and not record.exists()
        for path in (self.output / relative, record):
            if path.exists() and not (self.overwrite or unrecorded):
                raise SeriesRefused(f"{path} exists (pass --overwrite to replace it)")

    def publish_series(self, relative: str) -> Path:
        """Publish a staged output, then its record: an old record goes first, so that a record beside an output
        always describes it."""
        (self.output / sidecar_name(relative)).unlink(missing_ok=True)
        final = self.publish(relative)
        self.publish(sidecar_name(relative))
        return final

    def publish(self, relative: str) -> Path:
        """Move staged `relative` into OUTPUT, replacing what is there (the old copy is removed afterwards)."""
        staged, final = self.folder / relative, self.output / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final.is_dir():
            old = self.folder / f".old-{final.name}"
            os.replace(final, old)
        try:
            os.replace(staged, final)
        except BaseException:  # a stop between the two renames: the old copy goes back
            if old is not None:
                os.replace(old, final)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final


def output_bytes(shapes: list[tuple[int, ...]], scale: int, bytes_per_pixel: int) -> int:
    """About how much the outputs of these (S, T, H, W) inputs take on disk (uncompressed pixels, 2 % headers)."""
    return int(1.02 * sum(int(np.prod(shape)) * scale * scale * bytes_per_pixel for shape in shapes))


def check_phases_asked(options: Options, cines: list[tuple[str, int]]) -> None:
    """--ed/--es apply to every cine: an index outside any of them is a usage error, found before any work."""
    for label, index in (("--ed", options.ed), ("--es", options.es)):
        if index is None:
            continue
        for name, frames in cines:
            if index >= frames:
                raise InputRefused(f"{label} {index}: {name} has {frames} frames (0-based: 0-{frames - 1})")


def check_size(shape: tuple[int, ...]) -> None:
    if min(shape[-2:]) < MIN_SIDE:
        raise SeriesRefused(f"{shape[-2]}×{shape[-1]} pixels: smaller than {MIN_SIDE}×{MIN_SIDE}, no image to "
                            "super-resolve")  # fmt: skip


def check_content(stack: np.ndarray) -> None:
    low, high = float(stack.min()), float(stack.max())
    if low == high:
        raise SeriesRefused(f"every pixel has the value {low:g}: a blank cine, nothing to super-resolve")


def _phase_frames(frames: int, options: Options, ed: int | None, es: int | None) -> tuple[int, int | None]:
    ed = options.ed if options.ed is not None else (ed if ed is not None else 0)
    es = options.es if options.es is not None else es
    for label, index in (("ED", ed), ("ES", es)):
        if index is not None and not 0 <= index < frames:
            raise SeriesRefused(f"{label} frame {index} (0-based) is outside the cine's {frames} frames")
    return ed, es


def _upscale(upscaler: Upscaler, stack: np.ndarray, ed: int, es: int, result: SeriesResult, options: Options):
    """The series through the Upscaler, in the tiles chosen (and recorded) before its pixels were read."""
    with tqdm(total=stack.shape[0], desc=result.label[:40], unit="slice", disable=not options.progress,
              leave=False) as bar:  # fmt: skip
        return upscaler.upscale(stack, ed=ed, es=es, on_slice=lambda: bar.update(1), consistency=options.consistency,
                                tile=result.tile_core or 0)  # fmt: skip


def pixel_settings(
    upscaler: Upscaler, options: Options, ed: int, es: int, tile_core: int | None = None
) -> dict[str, object]:
    """Everything besides the weights and scale that changes the output's pixels: in the derived UIDs (so that
    different pixels never share a UID) and in the DerivationDescription. Tiles change pixels only by float
    rounding (docs/scanner-io.md), but a rounding can flip a stored integer: a tiled output says so."""
    settings = {"precision": upscaler.precision, "backend": upscaler.runner.backend, "device": upscaler.device.type,
                "ED": ed, "ES": es, "consistency": options.consistency}  # fmt: skip
    return settings if tile_core is None else settings | {"tiles": tile_core}


def job_settings(upscaler: Upscaler, options: Options, output_format: str) -> dict[str, object]:
    """What a series' output depends on besides its input: a --resume keeps an output whose record says the same."""
    settings = pixel_settings(upscaler, options, options.ed, options.es)
    settings.pop("ED"), settings.pop("ES")
    return {"software": __version__, "weights_sha256": upscaler.card.weights_sha256, "scale": upscaler.scale,
            "format": output_format, "ed_asked": options.ed, "es_asked": options.es, **settings}  # fmt: skip


def done_before(output: Path, name: str, settings: dict[str, object]) -> bool:
    """Whether OUTPUT holds `name` complete (its record is written last) and made with these settings."""
    record = output / sidecar_name(name)
    if not (output / name).exists() or not record.is_file():
        return False
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("job") == settings
    except (OSError, ValueError):
        return False


def keep(report: JobReport, label: str, shape: tuple[int, ...], output: Path) -> None:
    report.results.append(SeriesResult(label, shape, "kept", "done before with the same weights and options",
                                       output=str(output)))  # fmt: skip


def trained_on(upscaler: Upscaler) -> str:
    return str(upscaler.card.training.get("data", "")) if upscaler.card.training else ""


def sidecar_name(output_name: str) -> str:
    """The per-series record beside an output (a DICOM series folder or a .nii.gz file)."""
    return output_name.removesuffix(".nii.gz") + ".json"


def write_sidecar(
    staging: Staging,
    output_name: str,
    result: SeriesResult,
    upscaler: Upscaler,
    options: Options,
    ed: int,
    es: int,
) -> None:
    """Stage the series' record: what made it (weights, scale, options, phases) and its QA figure. Written
    last, so a record beside an output means the output is complete."""
    body = {
        "format": "cmrvsr_fast.series/1",
        "software": f"cmrvsr_fast {__version__}",
        "input": result.label,
        "input_shape": list(result.shape),
        "output": output_name,
        "scale": upscaler.scale,
        "weights_sha256": upscaler.card.weights_sha256,
        "precision": upscaler.precision,
        "consistency": options.consistency,
        "ed": ed,
        "es": es,
        "pixel_settings": pixel_settings(upscaler, options, ed, es, result.tile_core),
        "job": job_settings(upscaler, options, "nifti" if output_name.endswith(".nii.gz") else "dicom"),
        "trained_on": trained_on(upscaler),
        "qa": {
            "input_reproduction_db": result.qa,
            "explanation": "PSNR of the output degraded again (k-space truncation, bicubic) against the input, "
            "on the input's 0-255 window, beside the same for bicubic interpolation; lower than bicubic means "
            "the output changed what was acquired",
            "worse_than_bicubic": result.worse_than_bicubic,
        },
    }  # fmt: skip
    atomic_write_text(staging.folder / sidecar_name(output_name), json.dumps(body, indent=2) + "\n")


def _spacing_text(series: CineSeries) -> str:
    spacing = series.first.pixel_spacing
    return "?" if spacing is None else f"{spacing[0]:.3g}×{spacing[1]:.3g}"


def describe_dicom(
    report: ScanReport, usable: list[CineSeries], refused: list[str], not_cine: int, derived: int = 0
) -> str:
    lines = [f"{report.files} files: {len(report.frames)} MR frames"]
    lines += [f"  skipped {count} file(s): {reason}" for reason, count in sorted(report.skipped.items())]
    if not_cine:
        lines.append(f"  skipped {not_cine} series of single images (not cines)")
    if derived:
        lines.append(f"  skipped {derived} derived series (ImageType DERIVED: not upscaled again)")
    lines += [f"  unreadable: {name}: {reason}" for name, reason in report.unreadable]
    lines += [f"  refused {text}" for text in refused]
    lines.append(f"{'series':<32} {'slices':>6} {'frames':>6} {'size':>9} {'spacing mm':>11}  notes")
    for series in usable:
        slices, frames, rows, columns = series.shape
        lines.append(f"{series.label[:32]:<32} {slices:>6} {frames:>6} {f'{rows}×{columns}':>9} "
                     f"{_spacing_text(series):>11}  {'; '.join(series.notes)}")  # fmt: skip
    return "\n".join(lines)


@dataclass
class Work:
    """One cine of the job: how it is named, read and written; everything else is the same for every format."""

    label: str  # in the summary and the report (no patient data)
    what: str  # in a usage message about it
    shape: tuple[int, ...]  # (S, T, H, W)
    name: str  # the output's name in OUTPUT
    read: Callable[[], tuple[np.ndarray, int | None, int | None]]  # real values; ED/ES the input itself states
    write: Callable[[Path, np.ndarray, int, int, SeriesResult], None]  # staged path, SR, ED, ES


def run_works(
    works: list[Work], output: Path, upscaler: Upscaler, options: Options, report: JobReport, fmt: str
) -> JobReport:
    """Keep what --resume may keep, check what is asked of the rest up front, then each cine in turn: read,
    upscale, write into staging with its record, publish."""
    settings = job_settings(upscaler, options, fmt)
    todo = []
    for work in works:
        if options.resume and done_before(output, work.name, settings):
            keep(report, work.label, work.shape, output / work.name)
        else:
            todo.append(work)
    check_phases_asked(options, [(work.what, work.shape[1]) for work in todo])
    needed = output_bytes([work.shape for work in todo], upscaler.scale, 4 if fmt == "nifti" else 2)
    with Staging(output, options.overwrite, needed, options.resume) as staging:
        for work in todo:
            with recorded(report, work.label, work.shape) as result:
                staging.check_free(work.name)
                check_size(work.shape)
                result.tile_core = upscaler.check_memory(work.shape)
                cine, stated_ed, stated_es = work.read()
                check_content(cine)
                ed, es = _phase_frames(cine.shape[1], options, stated_ed, stated_es)
                es = upscaler.es_frame(cine, ed) if es is None else es
                sr = _upscale(upscaler, cine, ed, es, result, options)
                result.qa = input_agreement(sr, cine, upscaler.scale)
                (staging.folder / work.name).parent.mkdir(parents=True, exist_ok=True)
                work.write(staging.folder / work.name, sr, ed, es, result)
                write_sidecar(staging, work.name, result, upscaler, options, ed, es)
                result.output = str(staging.publish_series(work.name))
                result.status = "written"
    return report


def run_dicom(
    source: Path, output: Path, upscaler: Upscaler, options: Options, say: Callable[[str], None], report: JobReport
) -> JobReport:
    found = find_cine_series(source)
    report.skipped.update(found.report.skipped)
    report.problems += [f"{name}: {reason}" for name, reason in found.report.unreadable] + found.refused
    if found.not_cine:
        report.skipped["series of single images"] = found.not_cine
    if found.derived:
        report.skipped["derived series"] = found.derived
    if options.dry_run:
        say(describe_dicom(found.report, found.series, found.refused, found.not_cine, found.derived))
        return report
    if not found.series and not report.problems:
        skipped = "".join(f"; skipped {count} {reason}" for reason, count in sorted(report.skipped.items()))
        raise NoCineFound(f"{source}: no MR cine series found ({found.report.files} files looked at{skipped})")
    fmt = options.output_format or "dicom"
    scale = upscaler.scale

    def work(series: CineSeries) -> Work:
        def read():
            slope, intercept = rescale(series)
            return read_series_pixels(found.archive, series).astype(np.float64) * slope + intercept, None, None

        def write(path: Path, sr: np.ndarray, ed: int, es: int, result: SeriesResult) -> None:
            if fmt == "nifti":
                write_nifti_from_dicom(path, sr, dicom_affine(series, scale), frame_ms(series))
                return
            slope, intercept = rescale(series)
            path.mkdir()
            write_series(series, (sr - intercept) / slope, path, scale, upscaler.card.weights_sha256,
                         pixel_settings(upscaler, options, ed, es, result.tile_core), trained_on(upscaler))  # fmt: skip

        name = series_name(series, scale) + (".nii.gz" if fmt == "nifti" else "")
        return Work(series.label, f"series {series.label}", series.shape, name, read, write)

    works = [work(series) for series in select_shard(found.series, options.shard)]
    return run_works(works, output, upscaler, options, report, fmt)


def frame_ms(series: CineSeries) -> float | None:
    """The frame interval: the median step of the first slice's trigger times, where it has them."""
    triggers = [f.trigger_time for f in series.slices[0].frames]
    if len(triggers) < 2 or any(t is None for t in triggers):
        return None
    return float(np.median(np.diff(triggers)))


def dicom_affine(series: CineSeries, scale: int) -> np.ndarray:
    first = series.first
    if len(series.slices) > 1:
        a, b = series.slices[0].frames[0], series.slices[1].frames[0]
        normal_step = np.asarray(b.position) - np.asarray(a.position)
    else:
        normal_step = slice_normal(first.orientation) * (first.slice_thickness or 1.0)
    spacing = (first.pixel_spacing[0] / scale, first.pixel_spacing[1] / scale)
    return affine_from_dicom(finer_grid_position(first, scale), first.orientation, spacing, normal_step)


def nifti_shape(path: Path) -> tuple[int, ...]:
    """The (Z, T, Y, X) shape of a NIfTI cine from its header alone (read_nifti_cine's checks of the shape)."""
    try:
        shape = nib.load(str(path)).shape
    except Exception as error:  # noqa: BLE001  (nibabel raises many types for broken files)
        raise DataError(f"{path}: cannot be read as NIfTI ({error})") from None
    check_nifti_dimensions(path, shape)
    x, y, z, t = shape
    return (z, t, y, x)


def run_nifti(
    source: Path, output: Path, upscaler: Upscaler, options: Options, say: Callable[[str], None], report: JobReport
) -> JobReport:
    if options.output_format == "dicom":
        raise InputRefused("NIfTI input cannot become DICOM: it carries no patient, study or series identity")
    paths = nifti_inputs(source)
    root = source if source.is_dir() else source.parent
    if options.dry_run:
        for path in paths:
            try:
                cine = read_nifti_cine(path)
                slices, frames, rows, columns = cine.stack.shape
                zooms = cine.image.header.get_zooms()
                say(f"{path.relative_to(root)}: {slices} slices, {frames} frames, {rows}×{columns}, "
                    f"{zooms[1]:.3g}×{zooms[0]:.3g} mm" + (f", ED {cine.ed} ES {cine.es} (Info.cfg)"
                                                           if cine.ed is not None else ""))  # fmt: skip
            except DataError as error:
                report.problems.append(str(error))
                say(f"refused {error}")
        return report
    scale = upscaler.scale

    def work(path: Path, shape: tuple[int, ...]) -> Work:
        relative = path.relative_to(root)

        def read():
            cine = read_nifti_cine(path)
            return cine.stack, cine.ed, cine.es

        def write(staged: Path, sr: np.ndarray, ed: int, es: int, result: SeriesResult) -> None:
            write_nifti_cine(staged, sr, nib.load(str(path)), scale)  # the source's header and affine (lazy)

        name = str(relative.parent / f"{nifti_stem(path)}_x{scale}.nii.gz")
        return Work(str(relative), str(relative), shape, name, read, write)

    works = []  # headers checked before any inference
    for path in select_shard(paths, options.shard):
        try:
            works.append(work(path, nifti_shape(path)))
        except DataError as error:
            if source.is_file():
                raise  # the only input: bad input, exit 2
            report.results.append(SeriesResult(str(path.relative_to(root)), (), "failed", str(error)))
    return run_works(works, output, upscaler, options, report, "nifti")


def write_job_report(path: Path, report: JobReport, code: int, message: str, args: object = None) -> None:
    """The job as JSON for automation: every series (label, shape, status, reason, output, seconds, QA figure),
    what was skipped, the problems, the exit code and its meaning. Written on every ending, also a refusal or a
    stop. Series are named by number and description, files by path: no patient data."""
    body = {
        "format": "cmrvsr_fast.upscale-report/1",
        "software": f"cmrvsr_fast {__version__}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exit_code": code,
        "meaning": EXIT_CODES.get(code, ""),
        "message": message,
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"}
        if args is not None
        else {},
        "series": [{"input": r.label, "input_shape": list(r.shape), "status": r.status, "reason": r.detail,
                    "output": r.output, "seconds": round(r.seconds, 3), "qa_db": r.qa} for r in report.results],
        "skipped": report.skipped,
        "problems": report.problems,
    }  # fmt: skip
    atomic_write_text(path, json.dumps(body, indent=2) + "\n")


def summary_table(report: JobReport, scale: int) -> str:
    lines = [f"{'series':<40} {'input S×T×H×W':>18} {'output H×W':>11} {'status':>8} {'s':>7} {'QA dB SR/bicubic':>17}"]
    for r in report.results:
        shape = "×".join(map(str, r.shape)) if r.shape else "?"
        size = f"{r.shape[2] * scale}×{r.shape[3] * scale}" if len(r.shape) == 4 else "?"
        qa = f"{r.qa['super_resolved_db']:.1f}/{r.qa['bicubic_db']:.1f}" if r.qa else ""
        lines.append(f"{r.label[:40]:<40} {shape:>18} {size:>11} {r.status:>8} {r.seconds:7.1f} {qa:>17}")
        if r.detail:
            lines.append(f"    {r.detail}")
    lines += [f"skipped {count} {reason}" for reason, count in sorted(report.skipped.items())]
    lines += [f"problem: {text}" for text in report.problems]
    return "\n".join(lines)


def run_upscale(
    source: Path,
    output: Path,
    upscaler: Upscaler | Callable[[], Upscaler],
    options: Options,
    report: JobReport | None = None,
) -> JobReport:
    """The whole job; `upscaler` may be a factory, so that nothing is loaded for a refused input or a dry run.
    `report`, when given, is filled as the job goes (what was done before an interruption stays in it)."""

    def say(text: str) -> None:
        print(text, flush=True)

    report = JobReport() if report is None else report
    check_paths(source, output, options)
    runner = run_dicom if input_kind(source) == "dicom" else run_nifti
    if options.dry_run:
        return runner(source, output, None, options, say, report)  # type: ignore[arg-type]
    model = upscaler() if callable(upscaler) and not isinstance(upscaler, Upscaler) else upscaler
    runner(source, output.resolve(), model, options, say, report)
    say(summary_table(report, model.scale))
    for text in report.problems:
        print(f"cmrvsr-fast upscale: {text}", file=sys.stderr)
    for r in report.results:
        if r.worse_than_bicubic:
            print(f"cmrvsr-fast upscale: warning: {r.label}: the output, degraded again, reproduces the input worse "
                  f"than bicubic interpolation does ({r.qa['super_resolved_db']:.1f} vs {r.qa['bicubic_db']:.1f} dB): "
                  "the model may have changed what was acquired; review it before use", file=sys.stderr)  # fmt: skip
    return report
