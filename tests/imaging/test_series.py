"""Series stacking against generated phantoms and SimpleITK/GDCM's ImageSeriesReader."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from medlabel.errors import InvalidInput, TooLarge
from medlabel.imaging import Limits, group_series, load_volume, read_dicomdir, read_series, scan_headers

from .phantom import make_ct_series


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_shuffled_series_is_sorted_and_matches_phantom(tmp_path: Path) -> None:
    ph = make_ct_series(tmp_path / "ct", shuffle=True)
    # file names are shuffled, so directory order is not slice order
    assert sorted(os.listdir(ph.folder)) != [p.name for p in ph.files]
    (vol,) = read_series(ph.folder)
    assert vol.shape == ph.hu.shape
    np.testing.assert_array_equal(vol.array, ph.hu)
    assert vol.array.dtype == np.int16
    np.testing.assert_allclose(vol.spacing, ph.spacing, atol=1e-5)
    np.testing.assert_allclose(vol.origin, ph.origin, atol=1e-5)
    np.testing.assert_allclose(vol.direction_matrix, np.eye(3), atol=1e-6)
    assert vol.uids.series_instance_uid == ph.series_uid
    assert vol.warnings == ()
    assert vol.windows[0].center == 40


@pytest.mark.parametrize("tilt", [0.0, 25.0])
def test_volume_matches_simpleitk_gdcm(tmp_path: Path, tilt: float) -> None:
    ph = make_ct_series(tmp_path / "ct", tilt_deg=tilt, slope=0.5, intercept=-1000.0)
    (vol,) = read_series(ph.folder)
    ref = _sitk_series(ph.folder)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.spacing[::-1], ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.direction_matrix.ravel(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(vol.array, sitk.GetArrayFromImage(ref), atol=1e-4)
    # the affine places voxel (z, y, x) where ITK does
    idx = (3, 7, 11)
    np.testing.assert_allclose(
        vol.index_to_lps(*idx), ref.TransformIndexToPhysicalPoint(idx[::-1]), atol=1e-4
    )


def test_missing_slice_gives_gap_warning_and_split(tmp_path: Path) -> None:
    ph = make_ct_series(tmp_path / "ct", shape=(12, 16, 16), shuffle=False)
    ph.files[5].unlink()
    vols = read_series(ph.folder)
    assert [v.shape[0] for v in vols] == [5, 6]
    for v in vols:
        assert any("gap of 5.000 mm" in w and "1 slice(s) missing" in w for w in v.warnings)
    np.testing.assert_array_equal(vols[0].array, ph.hu[:5])
    np.testing.assert_array_equal(vols[1].array, ph.hu[6:])
    np.testing.assert_allclose(vols[1].origin[2], ph.origin[2] + 6 * ph.spacing[0], atol=1e-5)


def test_duplicate_and_mixed_orientation(tmp_path: Path) -> None:
    ph = make_ct_series(tmp_path / "ct", shape=(6, 16, 16), shuffle=False)
    # a duplicate of slice 2 under another name and SOP Instance UID
    ds = pydicom.dcmread(ph.files[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(ph.folder / "dup")
    # one slice of the same series in another orientation (a localiser)
    ds = pydicom.dcmread(ph.files[0])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(ph.folder / "loc")
    headers, skipped = scan_headers(sorted(ph.folder.iterdir()))
    assert skipped == []
    stacks = group_series(headers)
    # the repeated slice is not dropped: it is a stack of its own ("repeat 2"), like the localiser
    assert sorted(len(s) for s in stacks) == [1, 1, 6]
    assert sorted(h.path for s in stacks for h in s.slices) == sorted(h.path for h in headers)
    main = next(s for s in stacks if len(s) == 6)
    assert main.label == "" and any("duplicate position" in w for w in main.warnings)
    assert any("2 different orientations" in w for w in main.warnings)
    np.testing.assert_allclose(np.diff(main.positions), 2.5, atol=1e-5)
    (repeat,) = [s for s in stacks if s.label == "repeat 2"]
    assert {os.path.basename(h.path) for h in repeat.slices} <= {"dup", os.path.basename(ph.files[2])}


def test_irregular_spacing_splits(tmp_path: Path) -> None:
    ph = make_ct_series(tmp_path / "ct", shape=(8, 16, 16), shuffle=False)
    ds = pydicom.dcmread(ph.files[7])
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 1.0]  # 3.5 mm step instead of 2.5
    ds.save_as(ph.files[7])
    stacks = group_series(scan_headers(ph.files)[0])
    assert [len(s) for s in stacks] == [7, 1]
    assert any("irregular spacing 3.500 mm" in w for w in stacks[0].warnings)


def test_non_dicom_files_are_skipped_with_warning(tmp_path: Path) -> None:
    ph = make_ct_series(tmp_path / "ct", shape=(4, 8, 8))
    (ph.folder / "notes.txt").write_text("hello")
    shutil.copy(get_testdata_file("rtplan.dcm"), ph.folder / "plan")
    (vol,) = read_series(ph.folder)
    assert vol.shape == (4, 8, 8)
    assert any("notes.txt: skipped" in w for w in vol.warnings)
    assert any("plan: skipped" in w and "RT Plan" in w for w in vol.warnings)


def test_volume_budget(tmp_path: Path) -> None:
    ph = make_ct_series(tmp_path / "ct", shape=(4, 8, 8))
    stacks = group_series(scan_headers(ph.files)[0])
    with pytest.raises(TooLarge):
        load_volume(stacks[0], limits=Limits(max_pixels=4 * 8 * 8 - 1))


def test_read_series_rejects_non_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a folder"):
        read_series(tmp_path / "missing")


def test_dicomdir_resolves_referenced_files() -> None:
    base = Path(str(get_testdata_file("CT_small.dcm"))).parent / "dicomdirtests"
    dicomdir = read_dicomdir(base / "DICOMDIR")
    entries = dicomdir.entries
    assert dicomdir.warnings == ()
    assert len(entries) == 31
    assert {e.patient_id for e in entries} == {"77654033", "98890234"}
    for e in entries:
        assert os.path.isfile(e.path)
        ds = pydicom.dcmread(e.path, stop_before_pixels=True)
        assert ds.SOPInstanceUID == e.sop_instance_uid
        assert ds.SeriesInstanceUID == e.series_instance_uid


def test_dicomdir_with_missing_file(tmp_path: Path) -> None:
    base = Path(str(get_testdata_file("CT_small.dcm"))).parent / "dicomdirtests"
    shutil.copytree(base, tmp_path / "media")
    entries = read_dicomdir(tmp_path / "media" / "DICOMDIR").entries
    Path(entries[0].path).unlink()
    again = read_dicomdir(tmp_path / "media" / "DICOMDIR")
    assert len(again.entries) == len(entries) - 1
    assert entries[0].sop_instance_uid not in {e.sop_instance_uid for e in again.entries}
    assert any("does not exist" in w for w in again.warnings)


def test_dicomdir_rejects_plain_image() -> None:
    from medlabel.errors import DicomError

    with pytest.raises(DicomError, match=r"\(0004,1220\)"):
        read_dicomdir(str(get_testdata_file("CT_small.dcm")))


def _legacy_converted(files: list[Path], out: Path) -> Path:
    """Convert single-frame CT files into one Legacy Converted Enhanced CT with highdicom."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    datasets = [pydicom.dcmread(f) for f in files]
    enhanced = LegacyConvertedEnhancedCTImage(
        datasets, pydicom.uid.generate_uid(), 99, pydicom.uid.generate_uid(), 1
    )
    enhanced.save_as(out)
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_enhanced_multiframe_equals_single_frame_series(tmp_path: Path) -> None:
    from medlabel.imaging.multiframe import read_multiframe_volumes

    ph = make_ct_series(tmp_path / "ct", shape=(7, 12, 10), tilt_deg=15.0, slope=0.5, intercept=-1000.0)
    (series,) = read_series(ph.folder)
    enh = _legacy_converted(ph.files, tmp_path / "enhanced.dcm")
    (vol,) = read_multiframe_volumes(enh)
    np.testing.assert_array_equal(vol.array, series.array)
    np.testing.assert_allclose(vol.origin, series.origin, atol=1e-5)
    np.testing.assert_allclose(vol.spacing, series.spacing, atol=1e-5)
    np.testing.assert_allclose(vol.direction_matrix, series.direction_matrix, atol=1e-6)
    # read_series picks the enhanced file up too
    (again,) = read_series([enh])
    np.testing.assert_array_equal(again.array, series.array)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_enhanced_multiframe_with_gap_is_split(tmp_path: Path) -> None:
    from medlabel.imaging.multiframe import read_multiframe_volumes

    ph = make_ct_series(tmp_path / "ct", shape=(8, 12, 10), shuffle=False)
    enh = _legacy_converted(ph.files[:3] + ph.files[4:], tmp_path / "gap.dcm")
    vols = read_multiframe_volumes(enh)
    assert [v.shape[0] for v in vols] == [3, 4]
    assert any("step of 5.000 mm" in w for w in vols[0].warnings)
    np.testing.assert_array_equal(vols[1].array, ph.hu[4:])


def test_multiframe_real_and_rejects() -> None:
    from medlabel.errors import UnsupportedMedia
    from medlabel.imaging.multiframe import read_multiframe_volumes

    (vol,) = read_multiframe_volumes(str(get_testdata_file("eCT_Supplemental.dcm")))
    ds = pydicom.dcmread(str(get_testdata_file("eCT_Supplemental.dcm")))
    assert vol.shape == (2, 512, 512)
    pm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert vol.spacing[1:] == (float(pm.PixelSpacing[0]), float(pm.PixelSpacing[1]))
    with pytest.raises(UnsupportedMedia, match=r"\(5200,9230\)"):
        read_multiframe_volumes(str(get_testdata_file("emri_small.dcm")))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_philips_enhanced_mr_geometry_matches_nibabel(tmp_path: Path) -> None:
    """nibabel's DICOM wrapper (not ours) places every voxel of the Philips 3D T1 at the same LPS point."""
    import gzip

    import nibabel as nib
    from nibabel.nicom import dicomwrappers

    from medlabel.imaging.multiframe import read_multiframe_volumes

    src = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"
    path = tmp_path / "philips.dcm"
    path.write_bytes(gzip.decompress(src.read_bytes()))
    (vol,) = read_multiframe_volumes(path)
    assert vol.shape == (176, 256, 256)
    wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(path))
    affine = wrapper.affine  # (row, column, slice) -> LPS
    rng = np.random.default_rng(0)
    for z, y, x in [(0, 0, 0), (175, 255, 255), *rng.integers(0, 176, (5, 3)).tolist()]:
        ours = np.asarray(vol.index_to_lps(z, y, x))
        rcs = np.linalg.solve(affine[:3, :3], ours - affine[:3, 3])
        # nibabel stacks the slices in the opposite direction along the normal
        np.testing.assert_allclose(rcs, [y, x, 175 - z], atol=1e-2)
    np.testing.assert_allclose(sorted(vol.spacing), sorted(wrapper.voxel_sizes), atol=1e-4)


def _cine(folder: Path, *, slices: int, phases: int, **per_phase: object) -> list[Path]:
    """A cine series: ``phases`` images at each of ``slices`` positions, one file each; the
    pixels of slice z, phase t are 100 t + z. ``per_phase`` sets attributes to ``value * t``
    (``None``: not set)."""
    ph = make_ct_series(folder / "src", shape=(slices, 8, 10), shuffle=False)
    out = []
    for z, f in enumerate(ph.files):
        for t in range(phases):
            ds = pydicom.dcmread(f)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
            for keyword, step in per_phase.items():
                if step is not None:
                    setattr(ds, keyword, step * t + (1 if keyword == "TemporalPositionIdentifier" else 0))
            ds.PixelData = np.full((8, 10), 100 * t + z, np.uint16).tobytes()
            ds.RescaleIntercept, ds.RescaleSlope = 0, 1
            p = folder / f"z{z}t{t}.dcm"
            ds.save_as(p)
            out.append(p)
    return out


@pytest.mark.parametrize(
    ("attrs", "label"),
    [
        ({"TemporalPositionIdentifier": 1, "TriggerTime": 40.0}, "temporal position"),
        ({"TriggerTime": 40.0}, "trigger time"),
        ({"EchoNumbers": 1}, "echo"),
    ],
)
def test_images_at_the_same_positions_are_one_stack_per_phase(tmp_path: Path, attrs: dict, label: str) -> None:
    files = _cine(tmp_path, slices=3, phases=4, **attrs)
    headers, _ = scan_headers(files)
    stacks = group_series(headers)
    assert [len(s) for s in stacks] == [3, 3, 3, 3]
    assert [s.label.split()[:-1] for s in stacks] == [label.split()] * 4
    assert sorted(h.path for s in stacks for h in s.slices) == sorted(map(str, files))
    for t, stack in enumerate(stacks):  # in phase order, each a volume of that phase
        vol = load_volume(stack)
        np.testing.assert_array_equal(vol.array[:, 0, 0], [100 * t + z for z in range(3)])
        assert any("one stack per" in w for w in stack.warnings)


def test_a_dimension_that_does_not_group_phases_is_not_used(tmp_path: Path) -> None:
    """A trigger time different for every image (not a phase) would make one-slice stacks: the
    images are layered by repeat instead, none lost."""
    files = _cine(tmp_path, slices=3, phases=2)
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.TriggerTime = 10.0 * i
        ds.save_as(f)
    stacks = group_series(scan_headers(files)[0])
    assert sorted((s.label, len(s)) for s in stacks) == [("", 3), ("repeat 2", 3)]
