"""Shape matching checked against pycocotools IoU and brute-force assignment."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from medlabel.errors import InvalidInput
from medlabel.quality.metrics import Box, Polygon, ShapeLike, match_shapes, shape_iou

SETTINGS = settings(max_examples=50, deadline=None)

coords = st.floats(0, 90, allow_nan=False)
sizes = st.floats(1, 40, allow_nan=False)
boxes = st.builds(lambda x, y, w, h: Box(x, y, x + w, y + h), coords, coords, sizes, sizes)


@SETTINGS
@given(st.lists(boxes, min_size=1, max_size=6), st.lists(boxes, min_size=1, max_size=6))
def test_box_iou_matches_pycocotools(ref: list[Box], cand: list[Box]) -> None:
    to_xywh = (
        [[b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0] for b in ref],
        [[b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0] for b in cand],
    )
    expected = coco_mask.iou(to_xywh[1], to_xywh[0], [0] * len(ref))  # cand x ref
    ours = np.array([[shape_iou(r, c) for r in ref] for c in cand])
    np.testing.assert_allclose(ours, expected, atol=1e-9)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_polygon_iou_matches_pycocotools_rasterisation() -> None:
    scale = 20.0
    tri = Polygon(((1, 1), (9, 2), (4, 8)))
    quad = Polygon(((3, 0), (10, 3), (8, 9), (2, 6)), holes=(((5, 3), (7, 4), (6, 6)),))
    h = w = int(12 * scale)

    def raster(p: Polygon) -> np.ndarray:
        rings = [np.asarray(p.points) * scale, *[np.asarray(r) * scale for r in p.holes]]
        rles = coco_mask.frPyObjects([r.ravel().tolist() for r in rings], h, w)
        masks = coco_mask.decode(rles).astype(bool)
        out = masks[..., 0].copy()
        for k in range(1, masks.shape[-1]):
            out &= ~masks[..., k]
        return np.asarray(out)

    ra, rb = raster(tri), raster(quad)
    raster_iou = np.sum(ra & rb) / np.sum(ra | rb)
    assert shape_iou(tri, quad) == pytest.approx(raster_iou, abs=0.01)
    assert shape_iou(tri, quad) == pytest.approx(shape_iou(quad, tri))


def brute_best(ious: np.ndarray, threshold: float) -> float:
    """Largest total IoU over all one-to-one assignments of eligible pairs."""
    n_r, n_c = ious.shape
    best = 0.0
    for perm in itertools.permutations(range(n_c), min(n_r, n_c)):
        for rows in itertools.permutations(range(n_r), len(perm)):
            total = sum(ious[r, c] for r, c in zip(rows, perm, strict=True) if ious[r, c] >= threshold)
            best = max(best, total)
    return best


@SETTINGS
@given(
    st.lists(boxes, min_size=0, max_size=4),
    st.lists(boxes, min_size=0, max_size=4),
    st.sampled_from([0.1, 0.3, 0.5]),
)
def test_hungarian_is_optimal_and_counts_add_up(ref: list[Box], cand: list[Box], threshold: float) -> None:
    result = match_shapes(ref, cand, iou_threshold=threshold)
    ious = np.array([[shape_iou(r, c) for c in cand] for r in ref]).reshape(len(ref), len(cand))
    assert sum(m.iou for m in result.matches) == pytest.approx(brute_best(ious, threshold), abs=1e-9)
    assert all(m.iou >= threshold for m in result.matches)
    assert len(result.matches) + len(result.misses) == len(ref)
    assert len(result.matches) + len(result.extras) == len(cand)
    assert len({m.reference for m in result.matches}) == len(result.matches)
    tp = len(result.matches)
    assert result.f1 == pytest.approx(2 * tp / (len(ref) + len(cand)) if ref or cand else 1.0)


def test_match_shapes_report() -> None:
    ref = [Box(0, 0, 10, 10, "nodule"), Box(20, 20, 30, 30, "nodule"), Box(50, 50, 60, 60, "mass")]
    cand: list[ShapeLike] = [
        (1, 1, 11, 11, "nodule"),  # tuple input, good match of ref 0
        Box(50, 51, 60, 61, "nodule"),  # matches ref 2 with the wrong label
        [(80, 80), (90, 80), (90, 90)],  # a polygon nobody drew: an extra
    ]
    result = match_shapes(ref, cand)
    assert [(m.reference, m.candidate) for m in result.matches] == [(0, 0), (2, 1)]
    assert result.matches[0].iou == pytest.approx(81 / 119)
    assert result.misses == (1,) and result.extras == (2,)
    assert [(m.reference, m.candidate) for m in result.label_mismatches] == [(2, 1)]
    assert result.precision == pytest.approx(2 / 3) and result.recall == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(2 / 3)
    assert result.mean_iou == pytest.approx((81 / 119 + 90 / 110) / 2)
    strict = match_shapes(ref, cand, match_labels=True)
    assert [(m.reference, m.candidate) for m in strict.matches] == [(0, 0)]
    assert strict.label_mismatches == ()


def test_match_shapes_empty_sets() -> None:
    both = match_shapes([], [])
    assert (both.precision, both.recall, both.f1) == (1.0, 1.0, 1.0) and math.isnan(both.mean_iou)
    missed = match_shapes([Box(0, 0, 1, 1)], [])
    assert (missed.precision, missed.recall, missed.f1) == (1.0, 0.0, 0.0)


def test_shape_validation() -> None:
    with pytest.raises(InvalidInput, match="x0 < x1"):
        Box(5, 0, 1, 1)
    with pytest.raises(InvalidInput, match="not valid"):
        Polygon(((0, 0), (10, 10), (10, 0), (0, 10)))  # a bow tie
    with pytest.raises(InvalidInput, match="at least 3 points"):
        Polygon(((0, 0), (1, 1)))
    with pytest.raises(InvalidInput, match="must be numbers"):
        Box("0", 0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"\(x, y\) numbers"):
        Polygon((("a", 0), (1, 1), (2, 0)))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="iou_threshold"):
        match_shapes([], [], iou_threshold=0)
    with pytest.raises(InvalidInput, match="candidate\\[0\\]"):
        match_shapes([], ["not a shape"])
