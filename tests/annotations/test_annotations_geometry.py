"""Geometry: areas and rasterisation against shapely and pycocotools, validity and repair."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from medlabel.annotations.geometry import (
    BBox,
    Point,
    Polygon,
    Polyline,
    bbox_iou,
    mask_dice,
    mask_iou,
    polygon_iou,
    polygon_validity,
    rasterize_polygon,
    repair_polygon,
)
from medlabel.errors import InvalidInput

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")
SETTINGS = settings(max_examples=60, deadline=None)

coords = st.integers(0, 48)
point_lists = st.lists(st.tuples(coords, coords), min_size=3, max_size=9)


@st.composite
def convex_polygons(draw: st.DrawFn) -> Polygon:
    pts = draw(point_lists)
    hull = shapely.MultiPoint(pts).convex_hull
    assume(hull.geom_type == "Polygon" and hull.area >= 4)
    return Polygon.from_shapely(hull)


@st.composite
def boxes(draw: st.DrawFn) -> BBox:
    x = draw(st.floats(0, 40, allow_nan=False))
    y = draw(st.floats(0, 40, allow_nan=False))
    return BBox(x, y, draw(st.floats(0.5, 20)), draw(st.floats(0.5, 20)))


@SETTINGS
@given(convex_polygons())
def test_raster_area_tracks_shapely_area(poly: Polygon) -> None:
    g = poly.to_shapely()
    count = int(rasterize_polygon(poly, 50, 50).sum())
    assert abs(count - g.area) <= 0.5 * g.length + 4


@SETTINGS
@given(convex_polygons())
def test_raster_agrees_with_pycocotools_frpyobjects(poly: Polygon) -> None:
    g = poly.to_shapely()
    flat = [v for p in poly.exterior for v in p]
    ref = coco.decode(coco.frPyObjects([flat], 50, 50)[0])
    ours = rasterize_polygon(poly, 50, 50)
    # the two conventions differ only on pixels the boundary passes through
    assert int((ref != ours).sum()) <= 0.5 * g.length + 4


@SETTINGS
@given(
    st.integers(0, 30),
    st.integers(0, 30),
    st.integers(1, 15),
    st.integers(1, 15),
    st.sampled_from([0, 0.5, 0.25]),
)
def test_box_with_integer_sides_covers_exactly_its_area(x: int, y: int, w: int, h: int, off: float) -> None:
    poly = Polygon(
        ((x + off, y + off), (x + w + off, y + off), (x + w + off, y + h + off), (x + off, y + h + off))
    )
    m = rasterize_polygon(poly, 64, 64)
    assert int(m.sum()) == w * h


def test_raster_orientation_is_x_column_y_row() -> None:
    tall = Polygon(((1, 2), (3, 2), (3, 9), (1, 9)))  # 2 columns wide, 7 rows tall
    m = rasterize_polygon(tall, 12, 6)
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 8, 1, 2)


def test_neighbours_sharing_an_edge_never_both_claim_a_pixel() -> None:
    left = Polygon(((0, 0), (5.5, 0), (5.5, 8), (0, 8)))
    right = Polygon(((5.5, 0), (10, 0), (10, 8), (5.5, 8)))
    a, b = rasterize_polygon(left, 8, 10), rasterize_polygon(right, 8, 10)
    assert not (a & b).any() and (a | b).all()


def test_holes_are_excluded() -> None:
    poly = Polygon(((0, 0), (10, 0), (10, 10), (0, 10)), holes=(((3, 3), (7, 3), (7, 7), (3, 7)),))
    assert poly.area == 84.0
    m = rasterize_polygon(poly, 12, 12)
    assert int(m.sum()) == 84 and m[5, 5] == 0


@SETTINGS
@given(boxes(), boxes())
def test_bbox_iou_equals_shapely_iou(a: BBox, b: BBox) -> None:
    assert bbox_iou(a, b) == pytest.approx(polygon_iou(a, b), abs=1e-9)
    assert 0.0 <= bbox_iou(a, b) <= 1.0
    assert bbox_iou(a, a) == pytest.approx(1.0)


def _polygons(g: shapely.Geometry) -> list[shapely.Polygon]:
    """Every areal polygon inside a (possibly nested) collection."""
    if isinstance(g, shapely.Polygon):
        return [g] if g.area > 0 else []
    if hasattr(g, "geoms"):
        return [p for part in g.geoms for p in _polygons(part)]
    return []


@SETTINGS
@given(point_lists)
def test_repair_yields_valid_polygon_or_refuses(pts: list[tuple[int, int]]) -> None:
    assume(len(set(pts)) >= 3)
    poly = Polygon(tuple(pts))
    reason = polygon_validity(poly)
    assert (reason is None) == poly.to_shapely().is_valid
    try:
        fixed, warning = repair_polygon(poly)
    except InvalidInput as exc:
        assert reason is not None and "no area" in exc.message
        return
    assert fixed.to_shapely().is_valid
    if reason is None:
        assert fixed is poly and warning is None
    else:
        assert warning is not None and reason in warning
        pieces = _polygons(shapely.make_valid(poly.to_shapely()))
        assert fixed.area == pytest.approx(max(g.area for g in pieces))


def test_bow_tie_is_explained_and_repaired_to_its_larger_lobe() -> None:
    bow = Polygon(((0, 0), (10, 10), (10, 0), (0, 8)))  # edges cross
    reason = polygon_validity(bow)
    assert reason is not None and "Self-intersection" in reason
    fixed, warning = repair_polygon(bow)
    assert warning is not None and "kept the largest" in warning
    assert fixed.to_shapely().is_valid
    pieces = _polygons(shapely.make_valid(bow.to_shapely()))
    assert len(pieces) == 2
    assert fixed.area == pytest.approx(max(p.area for p in pieces))
    assert "2 pieces" in warning
    assert fixed.area > min(p.area for p in pieces)  # the lobes differ, and the larger is kept


def test_collinear_polygon_cannot_be_repaired() -> None:
    with pytest.raises(InvalidInput, match="no area"):
        repair_polygon(Polygon(((0, 0), (1, 1), (2, 2))))


def test_shape_constructors_check_their_input() -> None:
    with pytest.raises(InvalidInput, match="> 0"):
        BBox(0, 0, 0, 5)
    with pytest.raises(InvalidInput, match="finite"):
        Point(float("nan"), 1)
    with pytest.raises(InvalidInput, match="at least 3"):
        Polygon(((0, 0), (1, 1), (0, 0)))
    with pytest.raises(InvalidInput, match="at least 2"):
        Polyline(((0, 0),))
    closed = Polygon(((0, 0), (4, 0), (4, 4), (0, 0)))
    assert len(closed.exterior) == 3  # explicit closing point dropped


def test_round_trips_through_dicts() -> None:
    shapes: list[BBox | Point | Polygon | Polyline] = [
        BBox(1, 2, 3, 4),
        Point(1.5, 2.5),
        Polygon(((0, 0), (4, 0), (4, 4)), holes=(((1, 1), (2, 1), (2, 2)),)),
        Polyline(((0, 0), (3, 4))),
    ]
    for s in shapes:
        assert type(s).from_dict(s.to_dict()) == s
    assert Polyline(((0, 0), (3, 4))).length == 5.0


def test_mask_overlap_measures() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_dice(a, b) == pytest.approx(8 / 16)
    assert mask_dice(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(InvalidInput, match="shapes differ"):
        mask_iou(a, np.zeros((2, 2)))


def test_edges_through_pixel_centres_follow_the_top_left_rule() -> None:
    box = Polygon(((2.5, 1.5), (8.5, 1.5), (8.5, 4.5), (2.5, 4.5)))
    rows, cols = np.nonzero(rasterize_polygon(box, 8, 12))
    # left edge x=2.5 passes through centres of column 2 (included), right edge x=8.5 through column 8 (excluded)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (2, 7, 1, 3)
