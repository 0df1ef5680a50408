"""Dataset readers on small ACDC- and DSB-style fixtures written here, and the torch datasets."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from dataset_helpers import scanner_units, write_acdc_patient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cmrvsr_fast import CMRVSR, ModelConfig, deep_supervision_loss
from cmrvsr_fast.data import generate
from cmrvsr_fast.data.datasets import (
    ClipDataset,
    PhantomClipStream,
    SequenceDataset,
    make_sequences,
    phantom_records,
)
from cmrvsr_fast.data.readers import DataError, read_acdc, read_cine_file, read_dsb, read_folder


def test_acdc_reader(tmp_path: Path) -> None:
    stack = write_acdc_patient(tmp_path, 7)
    write_acdc_patient(tmp_path, 3, ed=1, es=5)
    records = read_acdc(tmp_path)
    assert [r.name for r in records] == ["patient003", "patient007"]
    record = records[1]
    assert record.cine.shape == (2, 10, 36, 36)  # 40×38 cropped to multiples of 12
    assert (record.ed, record.es) == (0, 3)  # 1-based in Info.cfg
    assert record.cine.min() == 0 and record.cine.max() == 255
    # Same anatomy as written: correlation with the centre-cropped original.
    original = stack[:, :, 2:38, 1:37]
    assert np.corrcoef(record.cine.ravel(), original.ravel())[0, 1] > 0.99


def test_acdc_reader_refuses_bad_info(tmp_path: Path) -> None:
    write_acdc_patient(tmp_path, 1, es=11)  # ES beyond the 10 frames
    with pytest.raises(DataError, match=r"ES frame 10 .* outside"):
        read_acdc(tmp_path)
    (tmp_path / "training" / "patient001" / "Info.cfg").write_text("Group: NOR\n")
    with pytest.raises(DataError, match=r"Info\.cfg: needs integer .ED:."):
        read_acdc(tmp_path)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    position_z: float,
    trigger: float,
    instance: int,
    cycle: int,
    series: dict | None = None,
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName = "Secret^Person"  # must never reach a record or a log line
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100.0, -90.0, position_z]
    ds.TriggerTime, ds.InstanceNumber, ds.CardiacNumberOfImages = trigger, instance, cycle
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in (series or {}).items():  # e.g. StudyInstanceUID, SeriesInstanceUID, SeriesNumber
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_sax(folder: Path, seed: int, position_z: float, frames: int = 10, size=(30, 28), order=None) -> np.ndarray:
    cine = scanner_units(generate(seed, size, frames).cine[0]).clip(0, 4095)
    for written, t in enumerate(order or range(frames)):
        write_dicom(folder / f"IM-0001-{written + 1:04d}.dcm", cine[t], position_z, 33.0 * t, t + 1, frames)
    return cine


def test_dsb_reader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    study = tmp_path / "train" / "12" / "study"
    cine = write_sax(study / "sax_5", 1, 10.0, order=[3, 0, 9, 1, 2, 8, 4, 6, 5, 7])  # files out of time order
    write_sax(study / "sax_9", 2, 20.0)
    rewrite = write_sax(study / "sax_11", 3, 20.0)  # re-acquires sax_9's position
    write_sax(study / "sax_12", 4, 30.0)
    write_dicom(study / "sax_12" / "IM-0001-0099.dcm", np.zeros((32, 32)), 30.0, 999.0, 99, 10)  # mixed size
    with caplog.at_level(logging.INFO):
        records = read_dsb(tmp_path)
    assert sorted(r.name for r in records) == ["12/sax_11", "12/sax_5"]
    by_name = {r.name: r for r in records}
    sax5 = by_name["12/sax_5"].cine[0]
    assert sax5.shape == (10, 24, 24)
    frame_means = [c[3:27, 2:26].mean() for c in cine]  # frames must come back in trigger-time order
    assert np.corrcoef([f.mean() for f in sax5], frame_means)[0, 1] > 0.99
    assert np.corrcoef(by_name["12/sax_11"].cine[0].ravel(), rewrite[:, 3:27, 2:26].ravel())[0, 1] > 0.99
    assert "re-acquires" in caplog.text and "mixed frame sizes" in caplog.text
    assert "Secret" not in caplog.text and all("Secret" not in r.name + r.source for r in records)


def test_dsb_reader_min_frames_and_corrupt_files(tmp_path: Path) -> None:
    write_sax(tmp_path / "1" / "study" / "sax_1", 1, 0.0, frames=9)
    assert read_dsb(tmp_path, min_frames=10) == []
    (tmp_path / "1" / "study" / "sax_1" / "IM-broken.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(DataError, match=r"IM-broken\.dcm: cannot be read as a DICOM image"):
        read_dsb(tmp_path)


def test_folder_reader(tmp_path: Path) -> None:
    cine = generate(4, (36, 48), 12).cine[0]
    np.save(tmp_path / "a.npy", cine)
    nib.save(nib.Nifti1Image(np.transpose(scanner_units(cine), (1, 2, 0)), np.eye(4)), tmp_path / "b.nii.gz")
    records = read_folder(tmp_path)
    assert [r.name for r in records] == ["a", "b"]
    assert records[0].cine.shape == records[1].cine.shape == (1, 12, 36, 48)
    np.testing.assert_array_equal(records[0].cine[0], cine)  # already on 0–255: kept as it is
    np.save(tmp_path / "bad.npy", np.zeros((4, 4)))
    with pytest.raises(DataError, match=r"bad\.npy: expected"):
        read_cine_file(tmp_path / "bad.npy")


def test_sequences_and_clips() -> None:
    records = phantom_records(range(2), size=(48, 48), frames=12)
    sequences = make_sequences(records, scale=4)
    assert len(sequences) == 2 and sequences[0].lr.shape == (12, 12, 12)
    assert sequences[0].phase[records[0].ed] == 1.0 and sequences[0].phase[records[0].es] == -1.0
    clips = ClipDataset(sequences, scale=4, clip_frames=7, warmup=3, crop=12, flips=False)
    assert len(clips) == 24
    item = clips[1]  # sequence 0, clip ending at frame 1: centre frames 7 … 11, 0, 1 (cyclic)
    assert item["lr"].shape == (13, 1, 12, 12) and item["hr"].shape == (7, 1, 48, 48) and item["phase"].shape == (13,)
    extended = [t % 12 for t in range(1 - 7 + 1 - 3, 1 + 1 + 3)]  # 3 warm-up, 7 centre, 3 warm-up
    mean, std = clips.normalisation
    np.testing.assert_allclose(item["lr"][:, 0].numpy() * std + mean, sequences[0].lr[extended], atol=1e-4)
    np.testing.assert_allclose(item["hr"][:, 0].numpy() * std + mean, sequences[0].hr[extended[3:10]], atol=1e-4)
    np.testing.assert_allclose(item["phase"].numpy(), sequences[0].phase[extended], atol=1e-6)


def test_random_crops_and_flips_stay_aligned() -> None:
    sequences = make_sequences(phantom_records(range(1), size=(96, 96), frames=10), scale=4)
    clips = ClipDataset(sequences, scale=4, clip_frames=3, warmup=2, crop=8)
    torch.manual_seed(0)
    for item in (clips[i] for i in range(10)):
        # The HR crop, degraded, is close to the LR crop wherever it came from and however it was flipped.
        lr, hr = item["lr"][2:5, 0].numpy(), item["hr"][:, 0].numpy()
        down = hr.reshape(3, 8, 4, 8, 4).mean(axis=(2, 4))
        assert np.corrcoef(down.ravel(), lr.ravel())[0, 1] > 0.8


def test_a_clip_trains_the_model() -> None:
    clips = ClipDataset(make_sequences(phantom_records(range(1), (48, 48), 10), 4), 4, clip_frames=3, warmup=2, crop=8)
    batch = torch.utils.data.default_collate([clips[0], clips[5]])
    model = CMRVSR(ModelConfig(scale=4, features=4, lstm_layers=1, warmup=2, stages=2)).train()
    outputs = model(batch["lr"], batch["phase"], warmup_included=True)
    assert outputs[0].shape == batch["hr"].shape
    deep_supervision_loss(outputs, batch["hr"]).backward()


def test_validation_sequences_and_phantom_stream() -> None:
    sequences = make_sequences(phantom_records(range(1), (48, 48), 10), 2)
    item = SequenceDataset(sequences)[0]
    assert item["lr"].shape == (10, 1, 24, 24) and item["hr"].shape == (10, 48, 48) and len(item["box"]) == 4
    stream = iter(PhantomClipStream(scale=4, size=(48, 48), frames=10, clips_per_phantom=2, warmup=2, crop=8))
    items = [next(stream) for _ in range(3)]
    assert all(i["lr"].shape == (11, 1, 8, 8) for i in items)


def test_clip_crop_larger_than_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="smaller than the 32×32 crop"):
        ClipDataset(make_sequences(phantom_records(range(1), (48, 48), 10), 4), 4)


def test_no_patient_attribute_reaches_pydicom_records(tmp_path: Path) -> None:
    write_sax(tmp_path / "5" / "study" / "sax_2", 1, 0.0)
    (record,) = read_dsb(tmp_path)
    assert not any(isinstance(v, pydicom.Dataset) for v in vars(record).values())


def test_a_position_acquired_twice_in_one_folder_keeps_the_later_series(tmp_path, caplog):
    """Two series at one position in one sax folder: the later SeriesNumber wins, whatever the UIDs' text order
    ("1.2.826.10" sorts before "1.2.826.9" as text)."""
    folder = tmp_path / "dsb" / "1" / "study" / "sax_5"
    alone = {}
    for number, uid, seed in ((9, "1.2.826.9", 3), (10, "1.2.826.10", 4)):
        cine = scanner_units(generate(seed, (30, 28), 10).cine[0]).clip(0, 4095)
        series = {"StudyInstanceUID": "1.2.826.1", "SeriesInstanceUID": uid, "SeriesNumber": number}
        for target in (folder, tmp_path / f"alone{number}" / "1" / "study" / "sax_5"):
            for t in range(10):
                write_dicom(target / f"IM-{number:04d}-{t + 1:04d}.dcm", cine[t], 10.0, 33.0 * t, t + 1, 10, series)
        (alone[number],) = read_dsb(tmp_path / f"alone{number}")
    with caplog.at_level("WARNING"):
        records = read_dsb(tmp_path / "dsb")
    assert len(records) == 1 and "keeping the later" in caplog.text
    assert np.array_equal(records[0].cine, alone[10].cine) and not np.array_equal(records[0].cine, alone[9].cine)
