"""`cmrvsr-fast upscale` end to end on fixtures: round trips, every bad input, privacy, interruption, shards."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from dicom_fixtures import assert_mr_image_iod, phantom_stored, write_cine_series, write_enhanced_series
from pydicom.data import get_testdata_file
from upscale_helpers import assert_private, run

from cmrvsr_fast.inference.consistency import DEFAULT_STRENGTH
from cmrvsr_fast.inference.upscaler import default_weights_path
from cmrvsr_fast.io.nifti import upscaled_affine
from cmrvsr_fast.jobs import upscale
from cmrvsr_fast.model.checkpoint import sha256_file


@pytest.fixture(autouse=True)
def no_identifier_in_logs(caplog):
    """Whatever a test does, no patient identifier of the fixtures reaches a log record."""
    yield
    assert_private(caplog.text)


def series_folders(output: Path) -> list[Path]:
    """The DICOM series written into OUTPUT (beside each, its .json record)."""
    return sorted(p for p in output.iterdir() if p.is_dir())


def read_series(folder: Path) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: int(d.InstanceNumber))


def test_dicom_round_trip(tmp_path, capsys):
    sources = write_cine_series(tmp_path / "scanner", slices=2, frames=10)
    (tmp_path / "scanner" / "notes.txt").write_text("not DICOM")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "scanner" / "DICOMDIR")
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out")
    assert code == 0, text
    assert "skipped 1 DICOMDIR" in text and "skipped 1 not DICOM" in text
    (folder,) = series_folders(tmp_path / "out")
    derived = read_series(folder)
    assert len(derived) == 20 and folder.name.startswith("series0005_x4_")
    source = {d.SOPInstanceUID: d for d in map(pydicom.dcmread, sources)}
    stored = phantom_stored(2, 10, 36)
    for ds in derived:
        assert_mr_image_iod(ds)
        src = source[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
        assert ds.TriggerTime == src.TriggerTime and ds.CardiacNumberOfImages == src.CardiacNumberOfImages
        assert (ds.Rows, ds.Columns) == (144, 144) and ds.pixel_array.dtype == np.int16
        assert ds.pixel_array.min() >= stored.min() and ds.pixel_array.max() <= stored.max()
        # The ×4 image, averaged back over 4×4 blocks, is the source image it came from.
        s, t = (int(src.InstanceNumber) - 1) // 10, (int(src.InstanceNumber) - 1) % 10
        blocks = ds.pixel_array.reshape(36, 4, 36, 4).mean(axis=(1, 3))
        assert np.corrcoef(blocks.ravel(), stored[s, t].ravel())[0, 1] > 0.95
    assert len({d.SeriesInstanceUID for d in derived}) == 1
    # Beside the series, its record: what made it and the QA figure (no patient data).
    record_text = (tmp_path / "out" / f"{folder.name}.json").read_text()
    assert_private(record_text)
    record = json.loads(record_text)
    assert record["scale"] == 4 and record["weights_sha256"] == sha256_file(default_weights_path(4))
    assert record["consistency"] == DEFAULT_STRENGTH and record["input_shape"] == [2, 10, 36, 36]
    qa = record["qa"]["input_reproduction_db"]
    assert qa["super_resolved_db"] > qa["bicubic_db"] > 20 and not record["qa"]["worse_than_bicubic"]
    assert "warning" not in text and f"{qa['super_resolved_db']:.1f}/{qa['bicubic_db']:.1f}" in text

    # A rerun gives the same UIDs (deterministic), into a fresh output.
    code, _ = run(capsys, tmp_path / "scanner", tmp_path / "again")
    (again_folder,) = series_folders(tmp_path / "again")
    again = read_series(again_folder)
    assert code == 0 and [d.SOPInstanceUID for d in again] == [d.SOPInstanceUID for d in derived]
    # Anything that changes the pixels changes the UIDs, and the derivation says what made them.
    uids = {d.SOPInstanceUID for d in derived} | {derived[0].SeriesInstanceUID}
    for options in (["--consistency", "0"], ["--es", "5"], ["--precision", "fp32"]):
        out = tmp_path / f"other{len(uids)}"
        code, _ = run(capsys, tmp_path / "scanner", out, *options)
        (other_folder,) = series_folders(out)
        other = read_series(other_folder)
        assert code == 0 and not uids & ({d.SOPInstanceUID for d in other} | {other[0].SeriesInstanceUID}), options
        uids |= {d.SOPInstanceUID for d in other} | {other[0].SeriesInstanceUID}
    description = derived[0].DerivationDescription
    assert f"consistency {DEFAULT_STRENGTH}" in description and "ES " in description
    assert "not for diagnostic use" in description and "not for diagnosis" in derived[0].ImageComments
    assert "trained on synth/" in derived[0].ImageComments


def test_dry_run_lists_and_counts_without_writing(tmp_path, capsys):
    write_cine_series(tmp_path / "scanner", slices=2, frames=10)
    write_enhanced_series(tmp_path / "scanner" / "enh" / "e.dcm")
    (tmp_path / "scanner" / "readme.txt").write_text("hello")
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--dry-run")
    assert code == 0 and not (tmp_path / "out").exists()
    assert "#5 cine sax" in text and "#7 enhanced cine" in text and "not DICOM" in text
    assert "36×36" in text and "1.5×1.5" in text
    assert_private(text)


def test_zip_and_enhanced_input(tmp_path, capsys):
    write_enhanced_series(tmp_path / "scanner" / "e.dcm", slices=2, frames=8)
    archive = shutil.make_archive(str(tmp_path / "study"), "zip", tmp_path / "scanner")
    code, text = run(capsys, archive, tmp_path / "out")
    assert code == 0, text
    (folder,) = series_folders(tmp_path / "out")
    derived = read_series(folder)
    assert len(derived) == 16 and all(d.SourceImageSequence[0].ReferencedFrameNumber >= 1 for d in derived)


def test_several_series_and_a_failing_one(tmp_path, capsys):
    write_cine_series(tmp_path / "scanner" / "a", series_number=5, seed=3)
    write_cine_series(tmp_path / "scanner" / "b", series_number=6, seed=5, slices=1)
    bad = write_cine_series(tmp_path / "scanner" / "c", series_number=9, seed=7, slices=1)
    ds = pydicom.dcmread(bad[2])
    del ds.PixelData
    ds.save_as(bad[2])
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out")
    assert code == upscale.EXIT_SOME_FAILED
    assert f"{bad[2].name}: no PixelData" in text and "series #9: " in text
    names = sorted(p.name[:10] for p in series_folders(tmp_path / "out"))
    assert names == ["series0005", "series0006"]
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.json")) == [
        p.name for p in series_folders(tmp_path / "out")
    ]
    assert_private(text)


def test_truncated_files(tmp_path, capsys):
    paths = write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 500])  # pixel data cut short
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out")
    assert code == 3 and f"{paths[1].name}: truncated: PixelData lacks " in text
    assert not (tmp_path / "out").exists(), "a failed run leaves no empty OUTPUT behind"
    paths[1].write_bytes(data[:400])  # cut inside the header
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out2")
    assert code == 3 and f"{paths[1].name}: no PixelData (truncated" in text


def _compressed_cine(folder: Path, name: str) -> None:
    """A 2-frame cine whose pixel data use the transfer syntax of pydicom's `name` sample."""
    folder.mkdir()
    for t in range(2):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.{t + 1}"
        ds.SeriesInstanceUID, ds.TriggerTime, ds.InstanceNumber, ds.CardiacNumberOfImages = "1.2.3.9", t * 40, t + 1, 2
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]  # the sample is marked derived; a scanner's cine is not
        ds.save_as(folder / f"{t}.dcm")


def test_compressed_transfer_syntaxes(tmp_path, capsys):
    _compressed_cine(tmp_path / "rle", "MR_small_RLE.dcm")  # RLE: decoded by pydicom itself
    code, text = run(capsys, tmp_path / "rle", tmp_path / "out_rle")
    assert code == 0, text


@pytest.mark.parametrize(("sample", "syntax"), [("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS"),
                                                ("MR_small_jp2klossless.dcm", "JPEG 2000")])  # fmt: skip
def test_compressed_without_decoder_names_syntax_and_extra(tmp_path, capsys, sample, syntax):
    try:  # JPEG 2000 decodes through Pillow where Pillow has OpenJPEG; JPEG-LS needs the `dicom` extra
        pydicom.dcmread(get_testdata_file(sample)).pixel_array  # noqa: B018
        decodable = True
    except Exception:  # noqa: BLE001
        decodable = False
    _compressed_cine(tmp_path / "in", sample)
    code, text = run(capsys, tmp_path / "in", tmp_path / "out")
    if decodable:
        assert code == 0, text
    else:
        assert code == 3 and syntax in text and "cmrvsr_fast[dicom]" in text, text


def test_inconsistent_sizes_and_missing_orientation_fail_the_series(tmp_path, capsys):
    paths = write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    ds = pydicom.dcmread(paths[0])
    ds.Rows = ds.Columns = 18
    ds.PixelData = np.zeros((18, 18), "<i2").tobytes()
    ds.save_as(paths[0])
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out")
    assert code == 3 and "inconsistent frame sizes" in text
    other = write_cine_series(tmp_path / "scanner2", slices=1, frames=8)
    ds = pydicom.dcmread(other[0])
    del ds.ImageOrientationPatient
    ds.save_as(other[0])
    code, text = run(capsys, tmp_path / "scanner2", tmp_path / "out2")
    assert code == 3 and "ImageOrientationPatient" in text


@pytest.mark.parametrize("case", ["empty", "inside", "same", "exists", "missing", "not_a_cine_input"])
def test_refused_before_any_work(tmp_path, capsys, case):
    source = tmp_path / "scanner"
    source.mkdir()
    output = tmp_path / "out"
    if case != "empty":
        write_cine_series(source, slices=1, frames=8)
    if case == "inside":
        output = source / "results"
    elif case == "same":
        output = source
    elif case == "exists":
        output.mkdir()
        (output / "keep.txt").write_text("mine")
    elif case == "missing":
        source = tmp_path / "nowhere"
    elif case == "not_a_cine_input":
        source = tmp_path / "file.txt"
        source.write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, text = run(capsys, source, output)
    assert code == 2 and text.startswith("cmrvsr-fast upscale: ") and "Traceback" not in text
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "nothing may be written"
    if case == "exists":
        code, text = run(capsys, source, output, "--overwrite")
        assert code == 0 and (output / "keep.txt").read_text() == "mine"


def test_scale_picks_the_default_and_checks_given_weights(tmp_path, capsys, monkeypatch):
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "x2", "--scale", "2")
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "x2").iterdir())
    assert written and all("_x2_" in name for name in written)
    weights = str(default_weights_path(4))
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--scale", "2", "--weights", weights)
    assert code == 2 and "×4 model" in text
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--shard", "2/2")
    assert code == 2 and "--shard" in text
    # A kernel backend that cannot run on this device: one line, exit 2, nothing written.
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--backend", "cuda")
    assert code == 2 and "--backend cuda: convlstm_layer: backend 'cuda' was asked for" in text
    assert not (tmp_path / "out").exists()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--backend", "triton-step")
    assert code == 2 and "backend 'triton' was asked for" in text and not (tmp_path / "out").exists()
    if not torch.cuda.is_available():  # CUDA graphs or cuDNN's benchmark mode on a CPU: refused the same way
        for flag in ("--cuda-graph", "--cudnn-benchmark"):
            code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", flag)
            assert code == 2 and f"{flag} needs a CUDA device" in text and not (tmp_path / "out").exists()


@pytest.mark.parametrize("created", [True, False])
def test_interrupted_run_leaves_no_half_written_series(tmp_path, capsys, monkeypatch, created):
    """Ctrl-C after the first series' files are written, before it is published: one line, exit 130, the
    staging folder removed, and OUTPUT removed too when this run created it and it stayed empty."""
    write_cine_series(tmp_path / "scanner", slices=2, frames=8)
    real_write = upscale.write_series

    def write_then_interrupt(series, stored, folder, *args):
        real_write(series, stored, folder, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(upscale, "write_series", write_then_interrupt)
    if not created:
        (tmp_path / "out").mkdir()
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out")
    assert code == upscale.EXIT_CTRL_C and "Traceback" not in text
    assert text.strip().splitlines()[-1].startswith("cmrvsr-fast upscale: stopped by Ctrl-C")
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if created else ["out"]) + ["scanner"]
    assert created or list((tmp_path / "out").iterdir()) == [], "the staging folder is removed"


def test_shards_share_output_and_cover_every_series_once(tmp_path, capsys):
    for number, seed in ((5, 3), (6, 5), (7, 7)):
        write_cine_series(tmp_path / "scanner" / str(number), slices=1, frames=8, series_number=number, seed=seed)
    written = []
    for shard in ("0/2", "1/2"):
        before = set((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else set()
        code, _ = run(capsys, tmp_path / "scanner", tmp_path / "out", "--shard", shard)
        assert code == 0
        written.append(set((tmp_path / "out").glob("*")) - before)
    assert len(written[0]) == 4 and len(written[1]) == 2 and not written[0] & written[1]  # series and records
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--shard", "0/2")
    assert code == 3 and "pass --overwrite" in text


def test_dicom_to_nifti(tmp_path, capsys):
    write_cine_series(tmp_path / "scanner", slices=2, frames=8)
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--format", "nifti")
    assert code == 0, text
    (path,) = (tmp_path / "out").glob("*.nii.gz")
    image = nib.load(path)
    assert image.shape == (144, 144, 2, 8)
    assert np.allclose(image.header.get_zooms(), (1.5 / 4, 1.5 / 4, 8.0, 33.0), atol=1e-5)
    # Fine voxel (1.5, 1.5) of slice 0 is the centre of the first source pixel: ImagePositionPatient, LPS -> RAS.
    assert np.allclose((image.affine @ [1.5, 1.5, 0, 1])[:3], [20.0, 30.0, 10.0], atol=1e-4)
    second = np.array([-20.0, -30.0, 10.0]) + 8.0 * np.cross([1, 0, 0], [0, 0.8, -0.6])
    assert np.allclose((image.affine @ [1.5, 1.5, 1, 1])[:3], second * [-1, -1, 1], atol=1e-4)


def _nifti_cine(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


def test_nifti_round_trip_with_acdc_info(tmp_path, capsys):
    stored = phantom_stored(2, 10, 36)  # (S, T, H, W)
    affine = np.array([[0, -1.4, 0, 50], [-1.4, 0, 0, 60], [0, 0, 9, -20], [0, 0, 0, 1]], dtype=float)
    patient = tmp_path / "acdc" / "patient001"
    _nifti_cine(patient / "patient001_4d.nii.gz", np.transpose(stored, (2, 3, 0, 1)), affine)
    _nifti_cine(patient / "patient001_frame01.nii.gz", stored[:, 0].transpose(1, 2, 0), affine)  # 3-D: ignored
    (patient / "Info.cfg").write_text("ED: 1\nES: 4\nNbFrame: 10\n")
    code, text = run(capsys, tmp_path / "acdc", tmp_path / "out", "--dry-run")
    assert code == 0 and "ED 0 ES 3 (Info.cfg)" in text
    code, text = run(capsys, tmp_path / "acdc", tmp_path / "out")
    assert code == 0, text
    out = nib.load(tmp_path / "out" / "patient001" / "patient001_4d_x4.nii.gz")
    record = json.loads((tmp_path / "out" / "patient001" / "patient001_4d_x4.json").read_text())
    assert record["ed"] == 0 and record["es"] == 3 and record["output"] == "patient001/patient001_4d_x4.nii.gz"
    assert out.shape == (144, 144, 2, 10) and out.get_data_dtype() == np.int16
    assert np.allclose(out.affine, upscaled_affine(affine, 4))
    # The centre of the fine grid's block of 4×4 voxels is the source voxel's centre.
    assert np.allclose(out.affine @ [1.5, 1.5, 0, 1], affine @ [0, 0, 0, 1])


def test_bad_nifti_inputs(tmp_path, capsys):
    data = np.ones((24, 24, 1, 8), dtype=np.float32)
    data[3, 4, 0, 2] = np.nan
    _nifti_cine(tmp_path / "in" / "nan.nii.gz", data, np.eye(4))
    _nifti_cine(tmp_path / "in" / "three_d.nii", np.ones((24, 24, 8), np.float32), np.eye(4))
    code, text = run(capsys, tmp_path / "in", tmp_path / "out")
    assert code == 3 and "nan.nii.gz: contains 1 NaN" in text and "three_d.nii: expected a 4-D" in text
    code, text = run(capsys, tmp_path / "in" / "nan.nii.gz", tmp_path / "out2", "--format", "dicom")
    assert code == 2 and "NIfTI input cannot become DICOM" in text


def test_mixed_dicom_and_nifti_folder_is_ambiguous(tmp_path, capsys):
    write_cine_series(tmp_path / "in", slices=1, frames=8)
    _nifti_cine(tmp_path / "in" / "x.nii.gz", np.ones((24, 24, 1, 8), np.float32), np.eye(4))
    code, text = run(capsys, tmp_path / "in", tmp_path / "out")
    assert code == 2 and "both NIfTI" in text


def test_zip_with_non_dicom_members(tmp_path, capsys):
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    with zipfile.ZipFile(tmp_path / "s.zip", "a") as archive:
        for path in (tmp_path / "scanner").iterdir():
            archive.write(path, f"dicom/{path.name}")
        archive.writestr("report.pdf", b"%PDF-1.4")
    code, text = run(capsys, tmp_path / "s.zip", tmp_path / "out")
    assert code == 0 and "skipped 1 not DICOM" in text


def test_python_api_reads_cines(tmp_path):
    from cmrvsr_fast.io import read_cines

    write_cine_series(tmp_path / "scanner", slices=2, frames=8)
    ((series, stack),) = read_cines(tmp_path / "scanner")
    assert series.label == "#5 cine sax" and stack.shape == (2, 8, 36, 36)
    assert np.array_equal(stack, phantom_stored(2, 8, 36).astype(np.float64))


def test_output_that_changed_what_was_acquired_is_flagged(tmp_path, capsys, monkeypatch):
    """When the output, degraded again, reproduces the input worse than bicubic does (here: noise added to
    it), `upscale` still writes it, warns on stderr and records it in the series' record."""
    write_cine_series(tmp_path / "scanner", slices=1, frames=8)
    real_upscale = upscale._upscale

    def noisy(*args, **kwargs):
        sr = real_upscale(*args, **kwargs)
        return sr + np.random.default_rng(0).normal(0, 0.3 * sr.std(), sr.shape)

    monkeypatch.setattr(upscale, "_upscale", noisy)
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out", "--consistency", "0")
    assert code == 0 and "warning: #5 cine sax: the output, degraded again, reproduces the input worse" in text
    (record,) = (tmp_path / "out").glob("*.json")
    body = json.loads(record.read_text())
    assert body["qa"]["worse_than_bicubic"] and body["consistency"] == 0.0
    code, text = run(capsys, tmp_path / "scanner", tmp_path / "out2", "--consistency", "1.5")
    assert code == 2 and "--consistency 1.5: must lie in [0, 1]" in text


def test_whole_exam_export_skips_localisers_and_derived_series(tmp_path, capsys):
    """A 3-plane localiser and derived series (a MIP, and this package's own output routed back) are skipped and
    counted, not failures: rc 0 when every cine succeeded."""
    exam = tmp_path / "exam"
    write_cine_series(exam / "cine", slices=1, frames=8, series_number=5)
    localiser = write_cine_series(exam / "loc", slices=3, frames=1, series_number=1, seed=11)
    planes = ([1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1])
    for path, orientation in zip(localiser, planes, strict=True):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = orientation
        ds.save_as(path)
    for path in write_cine_series(exam / "mip", slices=1, frames=8, series_number=9, seed=13):
        ds = pydicom.dcmread(path)
        ds.ImageType = ["DERIVED", "SECONDARY", "MIP"]
        ds.save_as(path)
    code, text = run(capsys, exam, tmp_path / "out")
    assert code == 0, text
    assert "skipped 1 series of single images" in text and "skipped 1 derived series" in text
    assert [p.name[:10] for p in series_folders(tmp_path / "out")] == ["series0005"]
    # The output, routed back beside its source, is not upscaled again.
    shutil.copytree(tmp_path / "out", exam / "returned")
    code, text = run(capsys, exam, tmp_path / "again")
    assert code == 0 and "skipped 2 derived series" in text and len(series_folders(tmp_path / "again")) == 1
    code, text = run(capsys, tmp_path / "out", tmp_path / "third")
    assert code == 2 and "no MR cine series found" in text and "skipped 1 derived series" in text
