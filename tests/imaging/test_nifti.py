"""NIfTI against nibabel's shipped test data, with SimpleITK as the geometry reference."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medlabel.errors import InvalidInput, TooLarge, UnsupportedMedia
from medlabel.imaging import Limits, read_itk, read_nifti, read_series

from .phantom import make_ct_series

DATA = Path(nib.__file__).parent / "tests" / "data"


def _check_against_sitk(vol_path: Path, volume_index: int = 0) -> None:
    vol = read_nifti(vol_path, volume_index=volume_index)
    ref = sitk.ReadImage(str(vol_path))
    if ref.GetDimension() == 4:
        ref = ref[:, :, :, volume_index]
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.spacing[::-1], ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.direction_matrix.ravel(), ref.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(vol.array, sitk.GetArrayFromImage(ref), rtol=1e-5)


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "functional.nii"])
def test_matches_simpleitk(name: str) -> None:
    _check_against_sitk(DATA / name)


def test_4d_volume_selection_matches_simpleitk() -> None:
    _check_against_sitk(DATA / "example4d.nii.gz", volume_index=1)
    vol = read_nifti(DATA / "example4d.nii.gz")
    assert vol.shape == (24, 96, 128)
    assert any("2 volumes" in w for w in vol.warnings)
    with pytest.raises(InvalidInput, match="out of range"):
        read_nifti(DATA / "example4d.nii.gz", volume_index=2)


def test_nifti2_matches_nibabel() -> None:
    img = nib.load(DATA / "example_nifti2.nii.gz")
    vol = read_nifti(DATA / "example_nifti2.nii.gz")
    data = np.asanyarray(img.dataobj)
    data = data[..., 0] if data.ndim == 4 else data
    np.testing.assert_array_equal(vol.array, np.transpose(data, (2, 1, 0)))
    # LPS: flip x and y of nibabel's RAS affine
    np.testing.assert_allclose(vol.affine(), np.diag([-1, -1, 1, 1]) @ img.affine, atol=1e-5)


def test_bytes_gzip_and_plain_agree() -> None:
    raw = (DATA / "anatomical.nii").read_bytes()
    a = read_nifti(raw)
    b = read_nifti(gzip.compress(raw))
    c = read_nifti(DATA / "anatomical.nii")
    np.testing.assert_array_equal(a.array, c.array)
    np.testing.assert_array_equal(b.array, c.array)
    assert a.origin == c.origin


def test_dicom_and_nifti_of_the_same_volume_agree(tmp_path: Path) -> None:
    """Our DICOM volume written as NIfTI by SimpleITK reads back with the same LPS geometry."""
    ph = make_ct_series(tmp_path / "ct", shape=(6, 12, 10), tilt_deg=15.0)
    (dcm,) = read_series(ph.folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ph.folder)))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "ct.nii.gz"))
    nii = read_nifti(tmp_path / "ct.nii.gz")
    np.testing.assert_allclose(nii.origin, dcm.origin, atol=1e-3)
    np.testing.assert_allclose(nii.direction_matrix, dcm.direction_matrix, atol=1e-4)
    np.testing.assert_allclose(nii.spacing, dcm.spacing, atol=1e-4)
    np.testing.assert_array_equal(nii.array, dcm.array)


def test_nrrd_via_simpleitk(tmp_path: Path) -> None:
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.75, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "v.nrrd"))
    vol = read_itk(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.spacing == (2.0, 0.75, 0.5)
    assert vol.origin == (1.0, 2.0, 3.0)
    assert vol.source == "nrrd"


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(TooLarge):
        read_nifti(DATA / "anatomical.nii", limits=Limits(max_pixels=100))
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"\x00" * 400)
    with pytest.raises(UnsupportedMedia):
        read_nifti(bad)
    truncated = tmp_path / "trunc.nii"
    truncated.write_bytes((DATA / "anatomical.nii").read_bytes()[:2000])
    with pytest.raises(UnsupportedMedia, match="truncated|unreadable"):
        read_nifti(truncated)
    with pytest.raises(UnsupportedMedia):
        read_itk(bad)
