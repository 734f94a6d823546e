"""Mask metrics checked against SimpleITK and a brute-force all-pairs distance computation."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from scipy.spatial.distance import cdist

from medlabel.errors import InvalidInput
from medlabel.quality.metrics import (
    average_surface_distance,
    dice,
    hausdorff_distance,
    iou,
    per_class,
    surface_dice,
    surface_distances,
    volume_difference,
)
from medlabel.quality.metrics import masks as masks_module

SETTINGS = settings(max_examples=50, deadline=None)


def ball(
    shape: tuple[int, ...], centre: tuple[float, ...], radius: float, spacing: tuple[float, ...]
) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum(((grid[i] - centre[i]) * spacing[i]) ** 2 for i in range(len(shape)))
    return np.asarray(d2 <= radius * radius)


def blob(seed: int, shape: tuple[int, ...], threshold: float = 0.55, sigma: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    field = (field - field.min()) / (field.max() - field.min())
    return np.asarray(field > threshold)


def to_sitk(mask: np.ndarray, spacing: tuple[float, ...]) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing([float(s) for s in spacing[::-1]])  # SimpleITK is x, y, z; numpy is z, y, x
    return image


def brute_boundary_points(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    border = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return np.argwhere(border) * np.asarray(spacing)


def brute_directed(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    pa, pb = brute_boundary_points(a, spacing), brute_boundary_points(b, spacing)
    d = cdist(pa, pb)
    return d.min(axis=1), d.min(axis=0)


# -------------------------------------------------------------------------------------- overlap


@pytest.mark.parametrize("seed", range(4))
def test_dice_iou_match_simpleitk(seed: int) -> None:
    a, b = blob(seed, (24, 40, 36)), blob(seed + 100, (24, 40, 36))
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(to_sitk(a, (1, 1, 1)), to_sitk(b, (1, 1, 1)))
    assert dice(a, b) == pytest.approx(f.GetDiceCoefficient(), abs=1e-9)
    assert iou(a, b) == pytest.approx(f.GetJaccardCoefficient(), abs=1e-9)


@SETTINGS
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 8), st.integers(1, 8))),
    st.randoms(use_true_random=False),
)
def test_dice_iou_properties(a: np.ndarray, rnd: object) -> None:
    b = np.roll(a, 1, axis=0) | (np.arange(a.size).reshape(a.shape) % 3 == 0)
    d, j = dice(a, b), iou(a, b)
    assert d == pytest.approx(dice(b, a))
    assert d == pytest.approx(2 * j / (1 + j))
    inter, total = np.sum(a & b), a.sum() + b.sum()
    assert d == pytest.approx(2 * inter / total if total else 1.0)
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0


def test_volume_difference_matches_simpleitk_physical_size() -> None:
    spacing = (2.5, 0.8, 0.6)
    a, b = blob(1, (20, 30, 30)), blob(2, (20, 30, 30), threshold=0.5)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(to_sitk(a, spacing))
    va = stats.GetPhysicalSize(1)
    stats.Execute(to_sitk(b, spacing))
    vb = stats.GetPhysicalSize(1)
    assert volume_difference(a, b, spacing=spacing) == pytest.approx(vb - va, rel=1e-9)
    assert volume_difference(a, b, spacing=spacing, relative=True) == pytest.approx((vb - va) / va, rel=1e-9)
    assert volume_difference(a, a) == 0.0


# ----------------------------------------------------------------------------------- distances


@pytest.mark.parametrize(
    ("spacing", "offset", "r1", "r2"),
    [((2.0, 0.7, 0.9), 5.0, 10.0, 14.0), ((1.0, 1.0, 1.0), 3.0, 8.0, 8.0), ((3.0, 0.5, 0.5), 6.0, 12.0, 9.0)],
)
def test_two_spheres_hausdorff_is_offset_plus_radius_difference(
    spacing: tuple[float, float, float], offset: float, r1: float, r2: float
) -> None:
    shape = tuple(int(60 / s) for s in spacing)
    centre = tuple(n / 2 for n in shape)
    moved = (centre[0], centre[1], centre[2] + offset / spacing[2])
    a, b = ball(shape, centre, r1, spacing), ball(shape, moved, r2, spacing)
    analytic = offset + abs(r2 - r1)
    hd = hausdorff_distance(a, b, spacing=spacing)
    assert hd == pytest.approx(analytic, abs=max(spacing) * 1.5)
    # SimpleITK (all voxels, x-y-z order) agrees exactly on solid objects.
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(to_sitk(a, spacing), to_sitk(b, spacing))
    assert hd == pytest.approx(f.GetHausdorffDistance(), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_hausdorff_matches_simpleitk_on_offset_ellipsoids(seed: int) -> None:
    rng = np.random.default_rng(seed)
    spacing = tuple(float(s) for s in rng.uniform(0.5, 2.5, 3))
    shape = (24, 32, 28)
    grid = np.indices(shape).astype(float)

    def ellipsoid(c: np.ndarray, r: np.ndarray) -> np.ndarray:
        return np.asarray(sum(((grid[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1)

    a = ellipsoid(np.array(shape) / 2, rng.uniform(4, 9, 3))
    b = ellipsoid(np.array(shape) / 2 + rng.uniform(-3, 3, 3), rng.uniform(4, 9, 3))
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(to_sitk(a, spacing), to_sitk(b, spacing))
    assert hausdorff_distance(a, b, spacing=spacing) == pytest.approx(f.GetHausdorffDistance(), abs=1e-9)


@pytest.mark.parametrize("method", ["edt", "kdtree", "auto"])
@pytest.mark.parametrize("seed", range(3))
def test_surface_metrics_match_brute_force(method: str, seed: int) -> None:
    spacing = (2.0, 0.75, 1.1)
    a, b = blob(seed, (14, 30, 26)), blob(seed + 50, (14, 30, 26))
    da_ref, db_ref = brute_directed(a, b, spacing)
    da, db = masks_module._surface_distances(a, b, spacing, method)
    np.testing.assert_allclose(da, da_ref, atol=1e-9)
    np.testing.assert_allclose(db, db_ref, atol=1e-9)
    both = np.concatenate([da_ref, db_ref])
    for p in (50, 95, 100):
        expected = max(np.percentile(da_ref, p), np.percentile(db_ref, p))
        assert hausdorff_distance(a, b, spacing=spacing, percentile=p) == pytest.approx(expected, abs=1e-9)
    assert average_surface_distance(a, b, spacing=spacing) == pytest.approx(both.mean(), abs=1e-9)
    for tol in (0.0, 1.0, 2.5):
        expected = np.count_nonzero(both <= tol) / both.size
        assert surface_dice(a, b, tolerance=tol, spacing=spacing) == pytest.approx(expected, abs=1e-12)


@SETTINGS
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7))),
    arrays(np.bool_, st.just((7, 7, 7))),
    st.tuples(*[st.floats(0.3, 3.0)] * 3),
)
def test_surface_distances_hypothesis_vs_brute_force(
    small: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float]
) -> None:
    a = np.zeros((7, 7, 7), dtype=bool)
    a[: small.shape[0], : small.shape[1], : small.shape[2]] = small
    da, db = surface_distances(a, b, spacing=spacing)
    if a.any() and b.any():
        da_ref, db_ref = brute_directed(a, b, spacing)
        np.testing.assert_allclose(da, da_ref, atol=1e-9)
        np.testing.assert_allclose(db, db_ref, atol=1e-9)
        for method in ("edt", "kdtree"):
            other = masks_module._surface_distances(a, b, spacing, method)
            np.testing.assert_allclose(other[0], da_ref, atol=1e-9)
    elif a.any() or b.any():
        assert hausdorff_distance(a, b, spacing=spacing) == math.inf
        assert dice(a, b) == 0.0
        assert surface_dice(a, b, tolerance=1.0) == 0.0
    else:
        assert da.size == db.size == 0


@SETTINGS
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_boundary_equals_face_connected_erosion(mask: np.ndarray) -> None:
    structure = ndimage.generate_binary_structure(2, 1)
    expected = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    np.testing.assert_array_equal(masks_module._boundary(mask), expected)


def test_boundary_3d_equals_face_connected_erosion() -> None:
    mask = blob(9, (12, 15, 18), threshold=0.45, sigma=1.5)
    mask[0, :4, :4] = True  # touches the array edge: edge voxels are boundary
    structure = ndimage.generate_binary_structure(3, 1)
    expected = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    np.testing.assert_array_equal(masks_module._boundary(mask), expected)


def test_identical_masks_have_zero_distance_and_full_surface_dice() -> None:
    a = blob(3, (20, 20, 20))
    assert hausdorff_distance(a, a, spacing=(1, 2, 3)) == 0.0
    assert average_surface_distance(a, a) == 0.0
    assert surface_dice(a, a, tolerance=0.0) == 1.0


def test_empty_masks_follow_the_documented_rule() -> None:
    empty = np.zeros((10, 10, 10), dtype=bool)
    full = empty.copy()
    full[3:6, 3:6, 3:6] = True
    assert dice(empty, empty) == iou(empty, empty) == 1.0
    assert hausdorff_distance(empty, empty) == average_surface_distance(empty, empty) == 0.0
    assert surface_dice(empty, empty, tolerance=1.0) == 1.0
    assert dice(empty, full) == iou(full, empty) == 0.0
    assert hausdorff_distance(full, empty) == hausdorff_distance(empty, full, percentile=95) == math.inf
    assert average_surface_distance(empty, full) == math.inf
    assert surface_dice(full, empty, tolerance=100.0) == 0.0
    da, db = surface_distances(full, empty)
    assert da.size == 26 and np.all(np.isinf(da)) and db.size == 0
    assert volume_difference(empty, full, relative=True) != volume_difference(empty, full, relative=True)
    assert volume_difference(empty, empty, relative=True) == 0.0


def test_mask_input_validation() -> None:
    a = np.zeros((4, 4), dtype=bool)
    with pytest.raises(InvalidInput, match=r"\(4, 4\) and b \(4, 5\)"):
        dice(a, np.zeros((4, 5), dtype=bool))
    with pytest.raises(InvalidInput, match="only 0 and 1; found 2"):
        dice(a, np.full((4, 4), 2))
    with pytest.raises(InvalidInput, match="2-D or 3-D"):
        dice(np.zeros(4, dtype=bool), np.zeros(4, dtype=bool))
    with pytest.raises(InvalidInput, match="one value per axis"):
        hausdorff_distance(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InvalidInput, match="> 0 mm"):
        hausdorff_distance(a, a, spacing=(1.0, 0.0))
    with pytest.raises(InvalidInput, match="percentile"):
        hausdorff_distance(a, a, percentile=101)
    with pytest.raises(InvalidInput, match="tolerance"):
        surface_dice(a, a, tolerance=-1.0)
    with pytest.raises(InvalidInput, match="as numbers"):
        hausdorff_distance(a, a, spacing="xy")  # type: ignore[arg-type]
    assert dice(np.ones((2, 2), dtype=np.uint8), np.ones((2, 2))) == 1.0


def test_scalar_spacing_means_isotropic() -> None:
    a, b = blob(1, (12, 14, 16)), blob(2, (12, 14, 16))
    iso = hausdorff_distance(a, b, spacing=(1.5, 1.5, 1.5), percentile=95)
    assert hausdorff_distance(a, b, spacing=1.5, percentile=95) == iso
    assert hausdorff_distance(a, b, spacing=np.float32(1.5), percentile=95) == pytest.approx(iso)
    assert hausdorff_distance(a, b, spacing=np.int64(1), percentile=95) == pytest.approx(iso / 1.5)


# --------------------------------------------------------------------------------- multi-class


def test_per_class_matches_simpleitk_label_overlap() -> None:
    rng = np.random.default_rng(0)
    a = np.zeros((20, 30, 30), dtype=np.int16)
    b = np.zeros_like(a)
    for label in (1, 2, 5):
        a[blob(label, a.shape, threshold=0.6) & (a == 0)] = label
        b[blob(label + 10, a.shape, threshold=0.6) & (b == 0)] = label
    b[rng.random(b.shape) < 0.01] = 7  # a class only the candidate has
    ours = per_class(dice, a, b)
    assert sorted(ours) == [1, 2, 5, 7]
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(sitk.GetImageFromArray(a), sitk.GetImageFromArray(b))
    for label, value in ours.items():
        assert value == pytest.approx(f.GetDiceCoefficient(label), abs=1e-9)
    hd = per_class(hausdorff_distance, a, b, labels=[1, 3], spacing=(2, 1, 1), percentile=95)
    assert hd[3] == 0.0  # absent from both: the both-empty rule
    assert hd[1] == pytest.approx(hausdorff_distance(a == 1, b == 1, spacing=(2, 1, 1), percentile=95))
    with pytest.raises(InvalidInput, match="integers"):
        per_class(dice, a.astype(float), b)


def test_overlap_on_volumes_larger_than_one_chunk_and_on_views() -> None:
    a, b = blob(5, (130, 90, 100), sigma=4.0), blob(6, (130, 90, 100), sigma=4.0)  # > 1 chunk
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(to_sitk(a, (1, 1, 1)), to_sitk(b, (1, 1, 1)))
    assert dice(a, b) == pytest.approx(f.GetDiceCoefficient(), abs=1e-12)
    assert iou(a, b) == pytest.approx(f.GetJaccardCoefficient(), abs=1e-12)
    assert dice(a.transpose(2, 0, 1), b.transpose(2, 0, 1)) == pytest.approx(
        f.GetDiceCoefficient(), abs=1e-12
    )
    # Dense masks: every voxel of every chunk matters, including chunk edges and the tail.
    full = np.ones((130, 90, 100), dtype=bool)
    holes = np.random.default_rng(0).random(full.shape) < 0.9
    n_and = int(np.sum(holes, dtype=np.int64))
    assert dice(full, holes) == 2 * n_and / (full.size + n_and)
    assert iou(holes, full) == n_and / full.size


def test_bench_quick_run_agrees_with_references() -> None:
    bench = runpy.run_path(str(Path(__file__).parents[2] / "bench" / "bench_metrics.py"))
    assert bench["main"](["--quick", "--repeat", "1"]) == 0
