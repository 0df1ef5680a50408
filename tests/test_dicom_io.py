"""Reading, grouping and writing DICOM cines (cmrvsr_fast.io), on fixtures written from a real MR header."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_fixtures import (
    SLICE_GAP,
    SPACING,
    assert_mr_image_iod,
    phantom_stored,
    write_cine_series,
    write_enhanced_series,
)

from cmrvsr_fast.io.dicom_pixels import read_series_pixels
from cmrvsr_fast.io.dicom_scan import InputArchive, scan
from cmrvsr_fast.io.dicom_write import derived_dataset, derived_uid, finer_grid_position
from cmrvsr_fast.io.series import NotACine, SeriesRefused, build_series, group_frames


def series_of(folder):
    report = scan(folder)
    groups = list(group_frames(report.frames).values())
    return report, [build_series(frames) for frames in groups]


def test_classic_series_grouped_by_position_and_time(tmp_path):
    write_cine_series(tmp_path / "in", slices=3, frames=9)
    report, (series,) = series_of(tmp_path / "in")
    assert report.files == 27 and series.shape == (3, 9, 36, 36)
    positions = [s.position for s in series.slices]
    assert np.allclose(np.diff(positions), SLICE_GAP)  # on the normal, not SliceLocation (0 everywhere)
    for cine in series.slices:
        assert [f.trigger_time for f in cine.frames] == sorted(f.trigger_time for f in cine.frames)
    pixels = read_series_pixels(InputArchive(tmp_path / "in"), series)
    assert pixels.dtype == np.int16 and np.array_equal(pixels, phantom_stored(3, 9, 36))


def test_enhanced_multiframe_series(tmp_path):
    write_enhanced_series(tmp_path / "in" / "enhanced.dcm", slices=2, frames=8)
    _, (series,) = series_of(tmp_path / "in")
    assert series.shape == (2, 8, 36, 36)
    pixels = read_series_pixels(InputArchive(tmp_path / "in"), series)
    assert np.array_equal(pixels, phantom_stored(2, 8, 36, seed=4))


def test_zip_input(tmp_path):
    import shutil

    write_cine_series(tmp_path / "in", slices=1, frames=8)
    archive = shutil.make_archive(str(tmp_path / "cine"), "zip", tmp_path / "in")
    _, (series,) = series_of(archive)
    assert series.shape == (1, 8, 36, 36)
    assert read_series_pixels(InputArchive(archive), series).shape == (1, 8, 36, 36)


def test_missing_trigger_time_everywhere_falls_back_to_instance_number(tmp_path):
    write_cine_series(tmp_path / "in", slices=1, frames=8, with_trigger=False)
    _, (series,) = series_of(tmp_path / "in")
    assert "InstanceNumber" in series.notes[0]
    assert [f.instance for f in series.slices[0].frames] == list(range(1, 9))


def test_missing_trigger_time_on_some_frames_is_refused(tmp_path):
    paths = write_cine_series(tmp_path / "in", slices=1, frames=8)
    ds = pydicom.dcmread(paths[3])
    del ds.TriggerTime
    ds.save_as(paths[3])
    with pytest.raises(SeriesRefused, match=f"{paths[3].name}: no TriggerTime"):
        series_of(tmp_path / "in")


def test_missing_orientation_is_refused(tmp_path):
    paths = write_cine_series(tmp_path / "in", slices=1, frames=8)
    ds = pydicom.dcmread(paths[0])
    del ds.ImageOrientationPatient
    ds.save_as(paths[0])
    with pytest.raises(SeriesRefused, match="ImageOrientationPatient"):
        series_of(tmp_path / "in")


def test_inconsistent_sizes_are_refused(tmp_path):
    paths = write_cine_series(tmp_path / "in", slices=1, frames=8)
    ds = pydicom.dcmread(paths[0])
    ds.Rows = ds.Columns = 18
    ds.PixelData = np.zeros((18, 18), "<i2").tobytes()
    ds.save_as(paths[0])
    with pytest.raises(SeriesRefused, match="inconsistent frame sizes"):
        series_of(tmp_path / "in")


def test_reacquired_slice_keeps_the_last_run(tmp_path):
    paths = write_cine_series(tmp_path / "in", slices=2, frames=8)
    for path in paths[:8]:  # slice 0 acquired again: new instances, later numbers
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = derived_uid(ds.SOPInstanceUID, "again")
        ds.InstanceNumber = int(ds.InstanceNumber) + 100
        ds.save_as(tmp_path / "in" / f"again_{path.name}")
    _, (series,) = series_of(tmp_path / "in")
    assert series.shape == (2, 8, 36, 36)
    assert any("2 acquisitions of 8 frames; kept the last" in note for note in series.notes)
    assert all(f.instance > 100 for f in series.slices[0].frames)


def test_short_slice_is_dropped_and_duplicates_ignored(tmp_path):
    paths = write_cine_series(tmp_path / "in", slices=2, frames=8)
    for path in paths[8:11]:
        path.unlink()
    (tmp_path / "in" / "copy.dcm").write_bytes(paths[0].read_bytes())
    _, (series,) = series_of(tmp_path / "in")
    assert series.shape == (1, 8, 36, 36)
    assert any("short (5 of 8 frames); dropped" in n for n in series.notes)
    assert any("duplicate" in n for n in series.notes)


def test_slices_alone_keeps_what_a_dataset_reader_can_use(tmp_path):
    """A dataset reader (one record per slice) groups with slices_alone: a short slice is kept as acquired and a
    slice of mixed frame sizes is dropped, where the scanner input would drop the one and refuse the series."""
    paths = write_cine_series(tmp_path / "in", slices=3, frames=8)
    for path in paths[8:11]:
        path.unlink()
    odd = pydicom.dcmread(paths[16])
    odd.Rows = odd.Columns = 18
    odd.PixelData = np.zeros((18, 18), "<i2").tobytes()
    odd.save_as(paths[16])
    frames = scan(tmp_path / "in").frames
    with pytest.raises(SeriesRefused, match="inconsistent frame sizes"):
        build_series(frames)
    series = build_series(frames, slices_alone=True)
    assert [len(s.frames) for s in series.slices] == [8, 5]
    assert any("5 frames, not a whole number of 8-frame cycles; kept" in n for n in series.notes)
    assert any("mixed frame sizes [(18, 18), (36, 36)]; dropped" in n for n in series.notes)


def test_single_images_are_not_a_cine(tmp_path):
    write_cine_series(tmp_path / "in", slices=3, frames=1)
    report = scan(tmp_path / "in")
    with pytest.raises(NotACine):
        build_series(report.frames)


def test_derived_image_geometry_and_references(tmp_path):
    write_cine_series(tmp_path / "in", slices=1, frames=8)
    _, (series,) = series_of(tmp_path / "in")
    ref = series.slices[0].frames[0]
    import datetime as dt

    ds = derived_dataset(ref, np.full((144, 144), 100.0), scale=4, weights_sha256="ab" * 32,
                         series_uid="2.25.1", instance_number=1, now=dt.datetime(2026, 1, 2, 3, 4, 5))  # fmt: skip
    assert_mr_image_iod(ds)
    assert (ds.Rows, ds.Columns) == (144, 144)
    assert np.allclose([float(v) for v in ds.PixelSpacing], SPACING / 4)
    # The first fine pixel's centre is 3/8 of a source pixel back along both in-plane directions.
    row_dir, col_dir = np.array([1, 0, 0]), np.array([0, 0.8, -0.6])
    expected = np.asarray(ref.position) - 0.375 * SPACING * (row_dir + col_dir)
    assert np.allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-4)
    assert np.allclose(finer_grid_position(ref, 1), ref.position)
    assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    code = ds.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("113085", "DCM", "Spatial resampling")
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == ref.sop_uid
    assert ds.StudyInstanceUID == ref.study_uid and ds.FrameOfReferenceUID == ref.header.FrameOfReferenceUID
    assert float(ds.TriggerTime) == ref.trigger_time and ds.SeriesNumber == 1005
    assert not any(0x6000 <= e.tag.group <= 0x60FF for e in ds), "overlays must not be carried"
    assert not any(e.tag.is_private for e in ds)
    assert ds.PixelRepresentation == 1 and ds.BitsAllocated == 16 and ds.pixel_array.dtype == np.int16


def test_enhanced_source_becomes_classic_images_with_frame_references(tmp_path):
    import datetime as dt

    write_enhanced_series(tmp_path / "in" / "enhanced.dcm", slices=2, frames=8)
    _, (series,) = series_of(tmp_path / "in")
    ref = series.slices[1].frames[3]
    ds = derived_dataset(ref, np.zeros((72, 72)), scale=2, weights_sha256="cd" * 32, series_uid="2.25.2",
                         instance_number=12, now=dt.datetime(2026, 1, 2))  # fmt: skip
    assert_mr_image_iod(ds)
    assert "PerFrameFunctionalGroupsSequence" not in ds and "NumberOfFrames" not in ds
    assert ds.SourceImageSequence[0].ReferencedFrameNumber == ref.frame + 1
    assert float(ds.TriggerTime) == ref.trigger_time


def test_derived_uids_are_deterministic_and_model_specific():
    assert derived_uid("1.2.3", 4, "aa") == derived_uid("1.2.3", 4, "aa")
    assert derived_uid("1.2.3", 4, "aa") != derived_uid("1.2.3", 4, "bb")
    assert derived_uid("1.2.3", 4, "aa").startswith("2.25.") and len(derived_uid("x")) <= 64
