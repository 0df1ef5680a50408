"""`cmrvsr-fast upscale` on the paths people really use: mounts, read-only and unwritable outputs, stops by
signal, exit codes as documented, edge-case cines, NIfTI against DICOM orientation, resumable jobs, the JSON
report, a single DICOM file, tiles for cines too large for memory, and a standard-conformance validator."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_fixtures import phantom_stored, write_cine_series, write_enhanced_series
from upscale_helpers import run

from cmrvsr_fast import cli
from cmrvsr_fast.inference import upscaler
from cmrvsr_fast.io import read_cines
from cmrvsr_fast.io.nifti import read_nifti_cine, write_nifti_from_dicom
from cmrvsr_fast.jobs import upscale
from cmrvsr_fast.jobs.upscale import EXIT_BAD_INPUT, EXIT_CODES, EXIT_OK, EXIT_SIGTERM, EXIT_SOME_FAILED

REPO = Path(__file__).resolve().parents[1]


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _no_inference(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("inference ran although the job should have been refused before it")

    monkeypatch.setattr(upscaler.Upscaler, "upscale", refuse)


# --- where results go -------------------------------------------------------------------------------------------


def test_staging_lies_inside_output_so_a_mount_point_works(tmp_path, capsys, monkeypatch):
    """OUTPUT as a mount point: any rename from outside OUTPUT fails with EXDEV, as across filesystems."""
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    real_replace = os.replace

    def replace_within_mount(src, dst):
        mount = (tmp_path / "mnt").resolve()
        inside = [mount / fmt in Path(p).resolve().parents for p in (src, dst) for fmt in ("dicom", "nifti")]
        if sum(inside) != 2 or inside[0] != inside[2]:  # both in one of the two mounts
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(upscale.os, "replace", replace_within_mount)
    for fmt in ("dicom", "nifti"):
        code, text = run(capsys, tmp_path / "scanner", tmp_path / "mnt" / fmt, "--format", fmt)
        assert code == EXIT_OK, text
        names = sorted(p.name for p in (tmp_path / "mnt" / fmt).iterdir())
        assert len(names) == 2 and not any(n.startswith(".") for n in names), names  # the output and its record


def test_unwritable_output_is_refused_before_inference(tmp_path, capsys, monkeypatch):
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    _no_inference(monkeypatch)
    (tmp_path / "readonly").mkdir()
    real_mkdir = Path.mkdir

    def read_only_mount(self, *args, **kwargs):  # as a read-only filesystem answers (root ignores chmod)
        if (tmp_path / "readonly") in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mount)
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "readonly" / "out")
    assert code == EXIT_BAD_INPUT and "Traceback" not in text
    assert text.strip() == f"cmrvsr-fast upscale: OUTPUT {tmp_path / 'readonly' / 'out'}: cannot be written " \
                           "(Read-only file system)"  # fmt: skip
    assert list((tmp_path / "readonly").iterdir()) == []
    (tmp_path / "a_file").write_text("x")  # a parent that is a file: the system's reason, one line
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "a_file" / "out")
    assert code == EXIT_BAD_INPUT and "cannot be written (Not a directory)" in text


def test_output_without_room_is_refused_with_the_numbers(tmp_path, capsys, monkeypatch):
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    _no_inference(monkeypatch)
    monkeypatch.setattr(upscale.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out")
    assert code == EXIT_BAD_INPUT and "GiB free, the results need about" in text
    assert not (tmp_path / "out").exists()


# --- exit codes and messages ------------------------------------------------------------------------------------


def test_usage_errors_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    _no_inference(monkeypatch)
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--es", "99")
    assert code == EXIT_BAD_INPUT and "--es 99: series #5 cine sax has 8 frames (0-based: 0-7)" in text
    with pytest.raises(SystemExit) as stop:
        cli.main(["upscale", str(tmp_path / "scanner"), str(tmp_path / "out"), "--ed", "-1"])
    assert stop.value.code == EXIT_BAD_INPUT and "-1 is negative" in capsys.readouterr().err
    code = cli.main(["upscale", str(tmp_path / "scanner"), str(tmp_path / "out"), "--device", "banana"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and err == "cmrvsr-fast upscale: device 'banana': not a device (expected auto, " \
                                             "cpu, cuda or cuda:N)\n"  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        cli.main(["export", "--format", "onnx", "--frames", "8", "--height", "0", "--width", "16", "--out", "x.onnx"])
    assert stop.value.code == EXIT_BAD_INPUT and "--height: 0: must be 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ((24, 24, 8), "a 3-D file is ambiguous"),
        ((24, 24), "a 2-D file is one image, not a cine"),
        ((24, 24, 1, 8, 2), "a 5-D file holds more than one cine"),
    ],
)
def test_a_nifti_that_is_not_a_cine_given_alone_exits_2(tmp_path, capsys, monkeypatch, shape, reason):
    _no_inference(monkeypatch)
    path = _nifti(tmp_path / "in" / "x.nii.gz", np.ones(shape, np.float32))
    code, text = run(capsys, path, tmp_path / "out")
    assert code == EXIT_BAD_INPUT and f"x.nii.gz: expected a 4-D (X, Y, Z, T) cine, got shape {shape}; {reason}" in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("size", "value", "reason"),
    [(1, None, "1×1 pixels: smaller than 16×16"), (36, 0, "every pixel has the value 0: a blank cine")],
)
def test_tiny_and_blank_cines_are_refused(tmp_path, capsys, size, value, reason):
    paths = write_cine_series(tmp_path / "scanner", slices=1, frames=8, size=36, overlay=False)
    for path in paths:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array[:size, :size].copy()
        if value is not None:
            pixels[:] = value
        ds.Rows, ds.Columns, ds.PixelData = size, size, pixels.astype("<i2").tobytes()
        ds.save_as(path)
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out")
    assert code == EXIT_SOME_FAILED and reason in text
    assert not (tmp_path / "out").exists(), "a run that wrote nothing leaves no empty OUTPUT"


def test_sigterm_stops_in_order(tmp_path):
    """What `docker stop` and systemd send: one line on stderr, exit 143, no staging folder, every published
    series complete with its record."""
    for number in range(4):
        write_cine_series(tmp_path / "scanner" / str(number), slices=2, frames=20, size=96, series_number=number + 1,
                          seed=number + 3, overlay=False)  # fmt: skip
    output = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cmrvsr_fast", "upscale", str(tmp_path / "scanner"), str(output), "--device", "cpu",
         "--quiet", "--precision", "fp32"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(output.glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # until the first series is published: it must survive the stop
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_SIGTERM, (out, err)
    assert err.strip().splitlines() == [
        "cmrvsr-fast upscale: stopped by SIGTERM; finished series kept, the one in progress discarded"
    ]
    left = sorted(p.name for p in output.iterdir()) if output.exists() else []
    assert not [name for name in left if name.startswith(".")], left
    finished = [output / name for name in left if not name.endswith(".json")]
    assert 1 <= len(finished) < 4, left
    for folder in finished:
        assert len(list(folder.glob("*.dcm"))) == 40 and folder.with_suffix(".json").is_file()


@pytest.mark.parametrize("page", ["README.md", "docs/scanner-io.md"])
def test_documented_exit_codes_match_the_code(page):
    """The exit-code tables of the README and the scanner I/O page list exactly the codes `upscale` uses, each
    with its meaning; the behaviour behind each code is tested above (0, 2, 3, 143) and in test_upscale_cli (130)."""
    text = (REPO / page).read_text()
    table = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", text, flags=re.MULTILINE))
    assert {int(code) for code in table} == set(EXIT_CODES), table
    for code, meaning in EXIT_CODES.items():
        documented = table[str(code)].replace("`", "")
        assert documented.startswith(meaning.split(";")[0].split(":")[0]), (code, documented)


# --- inputs -----------------------------------------------------------------------------------------------------


def test_single_dicom_file_input(tmp_path, capsys):
    path = write_enhanced_series(tmp_path / "scanner" / "enhanced.dcm", slices=2, frames=8)
    code, text = run(capsys, path, tmp_path / "out")
    assert code == EXIT_OK, text
    (folder,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert len(list(folder.glob("*.dcm"))) == 16


def test_nifti_and_dicom_of_one_cine_reach_the_network_the_same_way(tmp_path, capsys):
    """A NIfTI converted from a DICOM series (voxel i along a DICOM row, as dcm2niix and this package write) is
    read as the same (rows, columns) images, and upscaled to the same pixels."""
    write_cine_series(tmp_path / "scanner", slices=1, frames=8, size=40)
    ((_, stack),) = read_cines(tmp_path / "scanner")
    stack = stack[:, :, :, 4:]  # not square: a transposition would show in the shape
    converted = tmp_path / "nifti" / "cine.nii.gz"
    converted.parent.mkdir()
    write_nifti_from_dicom(converted, stack, np.eye(4), 33.0)
    assert np.array_equal(read_nifti_cine(converted).stack, stack.astype(np.float32))
    upscale = upscaler.load(device="cpu", precision="fp32")
    from_dicom = upscale.upscale(stack, es=3)
    code, text = run(capsys, converted, tmp_path / "out", "--es", "3", "--precision", "fp32")
    assert code == EXIT_OK, text
    from_nifti = read_nifti_cine(tmp_path / "out" / "cine_x4.nii.gz").stack
    assert from_nifti.shape == (1, 8, 160, 144)
    assert np.abs(from_nifti - from_dicom).max() < 1e-3 * np.abs(from_dicom).max()


# --- a job that goes on: --resume and the report ----------------------------------------------------------------


def test_resume_keeps_what_was_done_with_the_same_settings(tmp_path, capsys):
    for number, seed in ((5, 3), (6, 5)):
        write_cine_series(tmp_path / "scanner" / str(number), slices=1, frames=8, series_number=number, seed=seed)
    out = tmp_path / "out"
    code, _ = run(capsys, tmp_path / "scanner", out)
    assert code == EXIT_OK
    first, second = sorted(p for p in out.iterdir() if p.is_dir())
    shutil.rmtree(second)  # as if the job had stopped before the second series was published
    second.with_suffix(".json").unlink()
    before = {p: p.stat().st_mtime_ns for p in first.glob("*.dcm")}
    code, text = run(capsys, tmp_path / "scanner", out, "--resume", "--json", tmp_path / "report.json")
    assert code == EXIT_OK and second.is_dir() and "kept" in text
    assert {p: p.stat().st_mtime_ns for p in first.glob("*.dcm")} == before, "a kept series is not rewritten"
    report = json.loads((tmp_path / "report.json").read_text())
    assert [s["status"] for s in report["series"]] == ["kept", "written"] and report["exit_code"] == 0
    # Other options make other pixels: nothing is kept, and nothing is replaced without --overwrite.
    code, text = run(capsys, tmp_path / "scanner", out, "--resume", "--consistency", "0.2")
    assert code == EXIT_SOME_FAILED and text.count("exists (pass --overwrite to replace it)") == 2
    code, text = run(capsys, tmp_path / "scanner", out, "--resume", "--overwrite")
    assert code == EXIT_BAD_INPUT and "choose one" in text
    code, text = run(capsys, tmp_path / "scanner", out)
    assert code == EXIT_BAD_INPUT and "--resume" in text


def test_json_report_on_success_and_on_refusal(tmp_path, capsys):
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    code, _ = run(capsys, tmp_path / "scanner", tmp_path / "out", "--json", tmp_path / "r.json")
    body = json.loads((tmp_path / "r.json").read_text())
    assert code == body["exit_code"] == EXIT_OK and body["meaning"] == EXIT_CODES[EXIT_OK]
    (series,) = body["series"]
    assert series["status"] == "written" and series["input_shape"] == [1, 8, 36, 36]
    assert set(series["qa_db"]) == {"super_resolved_db", "bicubic_db"} and Path(series["output"]).is_dir()
    code, _ = run(capsys, tmp_path / "scanner", tmp_path / "out2", "--es", "50", "--json", tmp_path / "r2.json")
    body = json.loads((tmp_path / "r2.json").read_text())
    assert code == body["exit_code"] == EXIT_BAD_INPUT and "--es 50" in body["message"] and body["series"] == []
    for report in (tmp_path / "scanner" / "r.json", tmp_path / "out3" / "r.json"):
        code, text = run(capsys, tmp_path / "scanner", tmp_path / "out3", "--json", report)
        assert code == EXIT_BAD_INPUT and ("inside it" in text or "inside OUTPUT" in text) and not report.exists()
    nifti = _nifti(tmp_path / "cine.nii.gz", np.ones((24, 24, 1, 8), np.float32))
    code, text = run(capsys, nifti, tmp_path / "out4", "--json", nifti)
    assert code == EXIT_BAD_INPUT and nib.load(nifti).shape == (24, 24, 1, 8), "the input is never overwritten"


# --- memory: tiles, or a refusal with the numbers ---------------------------------------------------------------


def test_a_cine_too_large_for_one_pass_runs_in_tiles(tmp_path, monkeypatch):
    cine = phantom_stored(1, 8, 96, seed=9)[0].astype(np.float64)
    up = upscaler.load(device="cpu", precision="fp32")
    whole = up.upscale(cine, es=3)
    assert up.check_memory(cine.shape) is None
    limit = up.engine.working_set_bytes(8, 80, 80)  # a 96² pass does not fit, a tile of core 48 does
    monkeypatch.setattr(upscaler, "available_memory_bytes", lambda device: 2 * limit)
    monkeypatch.setattr(up.engine, "memory_budget_mb", 0)
    core = up.check_memory(cine.shape)
    assert core == 80 - 2 * upscaler.TILE_MARGIN
    calls = []
    real_engine = up.engine.__class__.__call__
    monkeypatch.setattr(up.engine.__class__, "__call__", lambda self, x, *a, **k: calls.append(x.shape) or
                        real_engine(self, x, *a, **k))  # fmt: skip
    tiled = up.upscale(cine, es=3)
    assert len(calls) > 1 and max(shape[-1] for shape in calls) <= core + 2 * upscaler.TILE_MARGIN
    assert np.abs(tiled - whole).max() < 0.01 * (cine.max() - cine.min())  # float rounding only, far below 1 %
    monkeypatch.setattr(upscaler, "available_memory_bytes", lambda device: 10**6)
    with pytest.raises(upscaler.TooLarge, match="needs about"):
        up.upscale(cine, es=3)


# --- standard conformance ---------------------------------------------------------------------------------------


def _validator_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace")
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("source", ["classic", "enhanced"])
def test_derived_series_pass_dciodvfy(tmp_path, capsys, source):
    """dicom3tools' validator finds no error in the derived images, from a classic and from an enhanced source
    (CI installs it; elsewhere the test says it was not run)."""
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CMRVSR_REQUIRE_VALIDATORS"):
            pytest.fail("dciodvfy (dicom3tools) is required here and not installed")
        pytest.skip("dciodvfy (apt-get install dicom3tools) is not installed")
    if source == "classic":
        write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    else:
        write_enhanced_series(tmp_path / "scanner" / "e.dcm", slices=1, frames=8)
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--scale", "2")
    assert code == EXIT_OK, text
    (folder,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    for path in sorted(folder.glob("*.dcm"))[:2]:
        assert _validator_errors(path) == [], path


def test_a_tiled_series_says_so_and_gets_its_own_uids(tmp_path, capsys, monkeypatch):
    """Tiles change pixels by rounding (fp32: within a stored unit; bf16 more, docs/scanner-io.md): the tiled
    series records its tiles and never shares UIDs with the untiled one."""
    write_cine_series(tmp_path / "scanner", slices=1, frames=8, size=48)
    code, _ = run(capsys, tmp_path / "scanner", tmp_path / "whole", "--precision", "fp32")
    assert code == EXIT_OK
    monkeypatch.setattr(upscaler.Upscaler, "check_memory", lambda self, shape: 16)
    code, _ = run(capsys, tmp_path / "scanner", tmp_path / "tiled", "--precision", "fp32")
    assert code == EXIT_OK
    (whole,), (tiled,) = ([p for p in (tmp_path / o).iterdir() if p.is_dir()] for o in ("whole", "tiled"))
    record = json.loads(tiled.with_suffix(".json").read_text())
    assert record["pixel_settings"]["tiles"] == 16 and "tiles" not in json.loads(whole.with_suffix(".json").read_text())
    a, b = (pydicom.dcmread(sorted(f.glob("*.dcm"))[0]) for f in (whole, tiled))
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and "tiles 16" in b.DerivationDescription
    assert np.abs(a.pixel_array.astype(int) - b.pixel_array.astype(int)).max() <= 1


def test_a_stop_at_any_point_can_be_resumed(tmp_path, capsys):
    """What a killed run (SIGKILL, the OOM killer) can leave: a staging folder (containers reuse PID 1, so
    staging names are unique per run) and an output published without its record. --resume redoes that one."""
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    out = tmp_path / "out"
    code, _ = run(capsys, tmp_path / "scanner", out)
    assert code == EXIT_OK
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    folder.with_suffix(".json").unlink()  # stopped between the output's rename and its record's
    (out / ".cmrvsr-partial-1").mkdir()  # left by a killed run
    (out / ".cmrvsr-partial-1" / "IM00001.dcm").write_bytes(b"half")
    code, text = run(capsys, tmp_path / "scanner", out, "--resume")
    assert code == EXIT_OK and "written" in text and folder.with_suffix(".json").is_file()
    shutil.rmtree(out / ".cmrvsr-partial-1")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".cmrvsr-partial-1").mkdir()  # only a leftover staging folder: OUTPUT counts as empty
    code, _ = run(capsys, tmp_path / "scanner", fresh)
    assert code == EXIT_OK
