"""MPR planes against direct slicing and SimpleITK's Resample."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medlabel.errors import InvalidInput
from medlabel.imaging import Volume, extract_plane
from medlabel.imaging.mpr import plane_count, resample_isotropic

EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _volume(spacing: tuple[float, float, float], shape: tuple[int, int, int] = (20, 30, 40)) -> Volume:
    rng = np.random.default_rng(7)
    arr = rng.normal(0, 100, shape).astype(np.float32)
    return Volume(array=arr, spacing=spacing, origin=(0.0, 0.0, 0.0), direction=EYE)


def test_isotropic_volume_planes_equal_slices() -> None:
    vol = _volume((1.0, 1.0, 1.0))
    arr = vol.array
    ax = extract_plane(vol, "axial", 5)
    np.testing.assert_array_equal(ax.pixels, arr[5])
    cor = extract_plane(vol, "coronal", 11, display=False)
    np.testing.assert_array_equal(cor.pixels, arr[:, 11, :])
    sag = extract_plane(vol, "sagittal", 3)
    assert sag.flipped  # slice axis points superior: flipped so the head is up
    np.testing.assert_array_equal(sag.pixels, arr[::-1, :, 3])
    assert ax.spacing == (1.0, 1.0)


def test_default_index_is_middle_and_bounds_checked() -> None:
    vol = _volume((1.0, 1.0, 1.0))
    assert extract_plane(vol, "coronal").index == 15
    assert plane_count(vol, "sagittal") == 40
    with pytest.raises(InvalidInput, match="out of range"):
        extract_plane(vol, "sagittal", 40)
    with pytest.raises(InvalidInput, match="axial, coronal or sagittal"):
        extract_plane(vol, "oblique", 0)


def _sitk_resample(plane: np.ndarray, spacing: tuple[float, float], target: float) -> np.ndarray:
    img = sitk.GetImageFromArray(plane.astype(np.float32))
    img.SetSpacing((spacing[1], spacing[0]))  # ITK order: (column, row)
    size = [
        int(np.floor((n - 1) * s / target + 1e-6)) + 1
        for n, s in zip(plane.shape[::-1], img.GetSpacing(), strict=True)
    ]
    out = sitk.Resample(
        img,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        img.GetOrigin(),
        (target, target),
        img.GetDirection(),
        0.0,
    )
    return sitk.GetArrayFromImage(out)


@pytest.mark.parametrize("name", ["axial", "coronal", "sagittal"])
def test_anisotropic_planes_match_simpleitk_resample(name: str) -> None:
    vol = _volume((2.5, 0.8, 0.7))
    plane = extract_plane(vol, name, 6, display=False)
    src = {"axial": vol.array[6], "coronal": vol.array[:, 6, :], "sagittal": vol.array[:, :, 6]}[name]
    sp = {"axial": (0.8, 0.7), "coronal": (2.5, 0.7), "sagittal": (2.5, 0.8)}[name]
    ref = _sitk_resample(src, sp, min(sp))
    assert plane.spacing == (min(sp), min(sp))
    assert plane.pixels.shape == ref.shape
    np.testing.assert_allclose(plane.pixels, ref, atol=1e-3)
    # sanity: resampling really changed the grid
    assert plane.pixels.shape != src.shape


def test_integer_planes_keep_dtype() -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    out, spacing = resample_isotropic(arr[:, 0, :], (3.0, 1.0))
    assert out.dtype == np.int16 and spacing == (1.0, 1.0)
    assert out.shape == (4, 4)
    # rows at 0, 1/3, 2/3, 1 of the way between the two slices
    np.testing.assert_array_equal(out[:, 0], np.round([0, 4, 8, 12]).astype(np.int16))
