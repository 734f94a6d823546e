"""Matching of boxes and polygons between a reference and a candidate annotation set.

IoU is computed from exact geometry (shapely areas), pairs are matched one-to-one by the
Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) maximising the total IoU over
pairs whose IoU reaches the threshold. Coordinates are image pixels (x to the right, y down);
only areas matter, so the orientation of polygon rings does not.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import shapely
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry import box as shapely_box

from medlabel.errors import InvalidInput

__all__ = [
    "Box",
    "Match",
    "MatchResult",
    "Polygon",
    "ShapeLike",
    "match_shapes",
    "shape_iou",
]

Point: TypeAlias = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box from (x0, y0) to (x1, y1), with x0 < x1 and y0 < y1."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: Hashable | None = None

    def __post_init__(self) -> None:
        coords = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(c, numbers.Real) for c in coords):
            raise InvalidInput(f"box coordinates must be numbers; got {coords!r}")
        if not all(math.isfinite(c) for c in coords):
            raise InvalidInput(f"box coordinates must be finite; got {coords}")
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise InvalidInput(
                f"box must have x0 < x1 and y0 < y1; got (x0, y0, x1, y1) = {coords}",
                detail={"box": list(coords)},
            )


@dataclass(frozen=True, slots=True)
class Polygon:
    """A simple polygon: an exterior ring of >= 3 (x, y) points and optional holes."""

    points: tuple[Point, ...]
    holes: tuple[tuple[Point, ...], ...] = field(default=())
    label: Hashable | None = None

    def __post_init__(self) -> None:
        try:
            pts = tuple((float(x), float(y)) for x, y in self.points)
            holes = tuple(tuple((float(x), float(y)) for x, y in ring) for ring in self.holes)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"polygon rings must be sequences of (x, y) numbers; got {self.points!r:.120}"
            ) from exc
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "holes", holes)
        for ring in (pts, *holes):
            if len(ring) < 3:
                raise InvalidInput(f"a polygon ring needs at least 3 points; got {len(ring)}: {ring!r:.120}")
            if not all(math.isfinite(c) for p in ring for c in p):
                raise InvalidInput(f"polygon coordinates must be finite; got {ring!r:.120}")
        geom = ShapelyPolygon(pts, holes)
        if not geom.is_valid:
            raise InvalidInput(
                f"polygon is not valid ({shapely.is_valid_reason(geom)}); expected a simple ring "
                f"without self-intersections, holes inside the exterior",
                detail={"reason": shapely.is_valid_reason(geom)},
            )


ShapeLike: TypeAlias = Box | Polygon | Sequence[Any]


def _to_shape(obj: ShapeLike, where: str) -> Box | Polygon:
    """Accept Box, Polygon, an (x0, y0, x1, y1[, label]) tuple or a sequence of (x, y) points."""
    if isinstance(obj, Box | Polygon):
        return obj
    try:
        items = list(obj)
    except TypeError as exc:
        raise InvalidInput(f"{where}: expected a Box, Polygon or tuple; got {obj!r:.80}") from exc
    if len(items) in (4, 5) and all(isinstance(v, int | float | np.number) for v in items[:4]):
        x0, y0, x1, y1 = (float(v) for v in items[:4])
        return Box(x0, y0, x1, y1, label=items[4] if len(items) == 5 else None)
    if items and all(isinstance(p, Sequence | np.ndarray) and len(p) == 2 for p in items):
        return Polygon(tuple((float(p[0]), float(p[1])) for p in items))
    raise InvalidInput(
        f"{where}: expected (x0, y0, x1, y1[, label]) or a sequence of (x, y) points; got {obj!r:.80}"
    )


def _geometry(shape: Box | Polygon) -> Any:
    if isinstance(shape, Box):
        return shapely_box(shape.x0, shape.y0, shape.x1, shape.y1)
    return ShapelyPolygon(shape.points, shape.holes)


def _iou_matrix(ref: Sequence[Box | Polygon], cand: Sequence[Box | Polygon]) -> NDArray[np.float64]:
    out = np.zeros((len(ref), len(cand)), dtype=np.float64)
    if not ref or not cand:
        return out
    gr = np.array([_geometry(s) for s in ref], dtype=object)
    gc = np.array([_geometry(s) for s in cand], dtype=object)
    # Vectorised shapely 2 ops over all pairs; skip pairs whose bounds do not overlap.
    br, bc = shapely.bounds(gr), shapely.bounds(gc)
    overlap = (
        (br[:, None, 0] < bc[None, :, 2])
        & (bc[None, :, 0] < br[:, None, 2])
        & (br[:, None, 1] < bc[None, :, 3])
        & (bc[None, :, 1] < br[:, None, 3])
    )
    ri, ci = np.nonzero(overlap)
    if ri.size:
        inter = shapely.area(shapely.intersection(gr[ri], gc[ci]))
        union = shapely.area(gr[ri]) + shapely.area(gc[ci]) - inter
        out[ri, ci] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def shape_iou(a: ShapeLike, b: ShapeLike) -> float:
    """Exact IoU of two boxes/polygons (area of intersection over area of union)."""
    return float(_iou_matrix([_to_shape(a, "a")], [_to_shape(b, "b")])[0, 0])


@dataclass(frozen=True, slots=True)
class Match:
    """One matched pair: indices into the reference and candidate lists."""

    reference: int
    candidate: int
    iou: float
    label_match: bool


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Outcome of :func:`match_shapes`.

    ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``f1 = 2 TP / (2 TP + FP + FN)``
    with TP = len(matches), FP = len(extras), FN = len(misses); each is 1.0 when its denominator
    is 0 (nothing to get wrong). ``mean_iou`` is over matches, ``nan`` when there are none.
    With ``match_labels=False`` a geometric match with different labels is still a TP and is
    listed in ``label_mismatches``.
    """

    matches: tuple[Match, ...]
    misses: tuple[int, ...]
    extras: tuple[int, ...]
    label_mismatches: tuple[Match, ...]
    precision: float
    recall: float
    f1: float
    mean_iou: float


def match_shapes(
    reference: Sequence[ShapeLike],
    candidate: Sequence[ShapeLike],
    *,
    iou_threshold: float = 0.5,
    match_labels: bool = False,
) -> MatchResult:
    """Match candidate shapes to reference shapes one-to-one.

    Args:
        reference, candidate: lists of :class:`Box`, :class:`Polygon`, ``(x0, y0, x1, y1[, label])``
            tuples or sequences of (x, y) points; boxes and polygons may be mixed.
        iou_threshold: the least IoU for a pair to count as a match, in (0, 1].
        match_labels: if True, only pairs with equal labels may match.

    Returns:
        A :class:`MatchResult`. Among all one-to-one assignments of pairs with IoU >= threshold,
        the one with the largest total IoU is chosen (Hungarian algorithm).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InvalidInput(f"iou_threshold must be in (0, 1]; got {iou_threshold!r}")
    ref = [_to_shape(s, f"reference[{i}]") for i, s in enumerate(reference)]
    cand = [_to_shape(s, f"candidate[{i}]") for i, s in enumerate(candidate)]
    ious = _iou_matrix(ref, cand)
    if match_labels and ref and cand:
        same = np.array([[r.label == c.label for c in cand] for r in ref], dtype=bool)
        ious = np.where(same, ious, 0.0)
    eligible = ious >= iou_threshold
    matches: list[Match] = []
    if np.any(eligible):
        # Maximise total IoU over eligible pairs; ineligible pairs weigh 0 and are dropped after.
        gain = np.where(eligible, ious, 0.0)
        rows, cols = linear_sum_assignment(gain, maximize=True)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if eligible[r, c]:
                matches.append(Match(r, c, float(ious[r, c]), ref[r].label == cand[c].label))
    matched_r = {m.reference for m in matches}
    matched_c = {m.candidate for m in matches}
    misses = tuple(i for i in range(len(ref)) if i not in matched_r)
    extras = tuple(j for j in range(len(cand)) if j not in matched_c)
    tp, fp, fn = len(matches), len(extras), len(misses)
    return MatchResult(
        matches=tuple(matches),
        misses=misses,
        extras=extras,
        label_mismatches=tuple(m for m in matches if not m.label_match),
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / (tp + fn) if tp + fn else 1.0,
        f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        mean_iou=float(np.mean([m.iou for m in matches])) if matches else math.nan,
    )
