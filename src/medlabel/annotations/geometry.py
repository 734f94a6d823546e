"""2D annotation geometry in an image's pixel space, and the operations on it.

Coordinates: ``x`` is the column, ``y`` the row, both floats. Pixel ``(row r, column c)`` covers
the unit square ``[c, c+1) × [r, r+1)``, so its centre is ``(c + 0.5, r + 0.5)`` and an image of
``width × height`` pixels spans ``[0, width] × [0, height]``. (This is the COCO convention.)

Rasterising a polygon marks every pixel whose **centre** lies inside the polygon (holes excluded),
with a top-left rule for centres exactly on an edge (see :func:`rasterize_polygon`), so the pixel
count of an axis-aligned ``w × h`` box with integer sides equals its area wherever it sits.

Polygon validity follows OGC Simple Features as implemented by shapely/GEOS (``is_valid``).
An invalid ring (a self-intersecting "bow tie", say) can be repaired with :func:`repair_polygon`:
``shapely.make_valid`` splits it into valid pieces and we keep **the piece of largest area**,
returning a warning that says how much area was dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import LineString as _ShLine
from shapely.geometry import Polygon as _ShPolygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from medlabel.errors import InvalidInput

__all__ = [
    "Point",
    "BBox",
    "Polygon",
    "Polyline",
    "Ring",
    "bbox_iou",
    "polygon_iou",
    "mask_iou",
    "mask_dice",
    "rasterize_polygon",
    "polygon_validity",
    "repair_polygon",
]

Ring = tuple[tuple[float, float], ...]


def _finite(name: str, *values: float) -> None:
    for v in values:
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise InvalidInput(f"{name} has coordinate {v!r}; expected a finite number (pixel units)")


def _ring(name: str, raw: Any, minimum: int, *, drop_closing: bool = True) -> Ring:
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise InvalidInput(f"{name} is {raw!r:.80}; expected a list of [x, y] pairs")
    pts: list[tuple[float, float]] = []
    for p in raw:
        if isinstance(p, str | bytes) or not isinstance(p, Sequence) or len(p) != 2:
            raise InvalidInput(f"{name} has point {p!r:.80}; expected an [x, y] pair of numbers")
        _finite(name, p[0], p[1])
        pts.append((float(p[0]), float(p[1])))
    if drop_closing and len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]  # accept explicitly closed rings; we store them open
    if len(pts) < minimum:
        raise InvalidInput(f"{name} has {len(pts)} distinct points; expected at least {minimum}")
    return tuple(pts)


def _obj(d: Any, what: str, *keys: str) -> Mapping[str, Any]:
    """``d`` as a mapping holding ``keys``, else InvalidInput naming what is wrong."""
    if not isinstance(d, Mapping):
        raise InvalidInput(f"{what} is {d!r:.80}; expected a JSON object with keys {list(keys)}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise InvalidInput(f"{what} lacks {missing}; expected keys {list(keys)}")
    return d


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float

    def __post_init__(self) -> None:
        _finite("point", self.x, self.y)

    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Point:
        d = _obj(d, "point", "x", "y")
        return cls(d["x"], d["y"])


@dataclass(frozen=True, slots=True)
class BBox:
    """Axis-aligned box: top-left corner ``(x, y)`` and size ``(width, height)``, COCO ``[x, y, w, h]``."""

    x: float
    y: float
    width: float
    height: float

    def __post_init__(self) -> None:
        _finite("bbox", self.x, self.y, self.width, self.height)
        if self.width <= 0 or self.height <= 0:
            raise InvalidInput(
                f"bbox has width {self.width} and height {self.height}; expected both > 0 pixels"
            )

    @property
    def area(self) -> float:
        return self.width * self.height

    def bounds(self) -> tuple[float, float, float, float]:
        """``(min_x, min_y, max_x, max_y)``."""
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    def to_shapely(self) -> BaseGeometry:
        return shapely.box(*self.bounds())

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BBox:
        d = _obj(d, "bbox", "x", "y", "width", "height")
        return cls(d["x"], d["y"], d["width"], d["height"])


@dataclass(frozen=True, slots=True)
class Polygon:
    """A polygon with an outer ring and optional holes; rings are stored open (first != last).

    Construction checks shape (≥ 3 points per ring, finite numbers) but not validity: an invalid
    polygon can exist so that validation can report it; see :func:`polygon_validity`.
    """

    exterior: Ring
    holes: tuple[Ring, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "exterior", _ring("polygon exterior", self.exterior, 3))
        object.__setattr__(
            self, "holes", tuple(_ring(f"polygon hole {i}", h, 3) for i, h in enumerate(self.holes))
        )

    def to_shapely(self) -> _ShPolygon:
        return _ShPolygon(self.exterior, list(self.holes))

    @property
    def area(self) -> float:
        """Area in square pixels (exterior minus holes, shapely's definition)."""
        return float(self.to_shapely().area)

    def bounds(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.exterior]
        ys = [p[1] for p in self.exterior]
        return (min(xs), min(ys), max(xs), max(ys))

    def bbox(self) -> BBox | None:
        x0, y0, x1, y1 = self.bounds()
        return BBox(x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "exterior": [list(p) for p in self.exterior],
            "holes": [[list(p) for p in h] for h in self.holes],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Polygon:
        d = _obj(d, "polygon", "exterior")
        holes = d.get("holes") or ()
        if isinstance(holes, str | bytes) or not isinstance(holes, Sequence):
            raise InvalidInput(f"polygon holes are {holes!r:.80}; expected a list of rings")
        return cls(d["exterior"], tuple(holes))

    @classmethod
    def from_shapely(cls, geom: _ShPolygon) -> Polygon:
        ext = tuple((float(x), float(y)) for x, y in geom.exterior.coords)
        holes = tuple(tuple((float(x), float(y)) for x, y in r.coords) for r in geom.interiors)
        return cls(ext, holes)


@dataclass(frozen=True, slots=True)
class Polyline:
    """An open line through ≥ 2 points (a vessel centreline, a measurement)."""

    points: Ring

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", _ring("polyline", self.points, 2, drop_closing=False))

    @property
    def length(self) -> float:
        return float(_ShLine(self.points).length)

    def bounds(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return (min(xs), min(ys), max(xs), max(ys))

    def to_dict(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Polyline:
        return cls(_obj(d, "polyline", "points")["points"])


# --------------------------------------------------------------------------- overlap measures


def bbox_iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two boxes (0 when disjoint)."""
    ax0, ay0, ax1, ay1 = a.bounds()
    bx0, by0, bx1, by1 = b.bounds()
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    # areas from the same bounds as the intersection, so identical boxes give exactly 1.0
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return min(1.0, inter / union) if union > 0 else 0.0


def _as_shapely(g: BBox | Polygon | BaseGeometry) -> BaseGeometry:
    if isinstance(g, BBox | Polygon):
        return g.to_shapely()
    return g


def polygon_iou(a: BBox | Polygon | BaseGeometry, b: BBox | Polygon | BaseGeometry) -> float:
    """IoU of two areal shapes via shapely; invalid polygons are made valid first."""
    ga = shapely.make_valid(_as_shapely(a))
    gb = shapely.make_valid(_as_shapely(b))
    union = float(ga.union(gb).area)
    return float(ga.intersection(gb).area) / union if union > 0 else 0.0


def mask_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """IoU of two same-shaped binary masks; two empty masks give 1.0 (they agree)."""
    ma, mb = _pair(a, b)
    union = int(np.count_nonzero(ma | mb))
    return int(np.count_nonzero(ma & mb)) / union if union else 1.0


def mask_dice(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Dice ``2|A∩B| / (|A|+|B|)`` of two same-shaped binary masks; two empty masks give 1.0."""
    ma, mb = _pair(a, b)
    total = int(np.count_nonzero(ma)) + int(np.count_nonzero(mb))
    return 2.0 * int(np.count_nonzero(ma & mb)) / total if total else 1.0


def _pair(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    ma = np.asarray(a) != 0
    mb = np.asarray(b) != 0
    if ma.shape != mb.shape:
        raise InvalidInput(f"mask shapes differ: {ma.shape} vs {mb.shape}; expected equal shapes")
    return ma, mb


# --------------------------------------------------------------------------- rasterising


_NUDGE = 1e-7  # px; moves sample points off edges that pass exactly through pixel centres


def rasterize_polygon(polygon: Polygon | BaseGeometry, height: int, width: int) -> npt.NDArray[np.uint8]:
    """Rasterise to a ``(height, width)`` uint8 mask: a pixel is set when its centre is inside the
    polygon (holes excluded). Centres lying exactly on an edge are decided by a top-left rule: the
    sample point is nudged by 1e-7 px right and down, so a left/top edge through a centre includes
    it and a right/bottom edge excludes it. Polygons sharing an edge thus never both claim a pixel,
    and a ``w × h`` box at any offset covers exactly ``w × h`` pixels for integer ``w, h``.
    Works for shapely (multi)polygons too."""
    geom = _as_shapely(polygon)
    out = np.zeros((height, width), dtype=np.uint8)
    if geom.is_empty or height <= 0 or width <= 0:
        return out
    x0, y0, x1, y1 = geom.bounds
    c0 = max(0, math.floor(x0 - 0.5))
    c1 = min(width - 1, math.ceil(x1 - 0.5))
    r0 = max(0, math.floor(y0 - 0.5))
    r1 = min(height - 1, math.ceil(y1 - 0.5))
    if c1 < c0 or r1 < r0:
        return out
    cols = np.arange(c0, c1 + 1, dtype=np.float64) + (0.5 + _NUDGE)
    rows = np.arange(r0, r1 + 1, dtype=np.float64) + (0.5 + _NUDGE)
    xx, yy = np.meshgrid(cols, rows)
    shapely.prepare(geom)
    inside = shapely.contains_xy(geom, xx, yy)
    out[r0 : r1 + 1, c0 : c1 + 1] = inside
    return out


# --------------------------------------------------------------------------- validity


def polygon_validity(polygon: Polygon) -> str | None:
    """``None`` when valid, else GEOS's explanation (e.g. ``'Self-intersection[2 2]'``)."""
    geom = polygon.to_shapely()
    if geom.is_valid:
        return None
    return str(explain_validity(geom))


def repair_polygon(polygon: Polygon) -> tuple[Polygon, str | None]:
    """Return ``(polygon, None)`` if valid, else ``(repaired, warning)``.

    The repair is ``shapely.make_valid``; when that yields several pieces (a bow tie becomes two
    triangles) we keep the polygon of largest area and say in the warning how much was dropped.
    Raises InvalidInput when nothing areal survives (e.g. all points collinear).
    """
    reason = polygon_validity(polygon)
    if reason is None:
        return polygon, None
    fixed = shapely.make_valid(polygon.to_shapely())
    parts = [g for g in shapely.get_parts(fixed) if isinstance(g, _ShPolygon) and g.area > 0]
    # make_valid may return a GeometryCollection holding a MultiPolygon; flatten one more level
    more: list[_ShPolygon] = []
    for g in shapely.get_parts(fixed):
        if g.geom_type in ("MultiPolygon", "GeometryCollection"):
            more.extend(p for p in shapely.get_parts(g) if isinstance(p, _ShPolygon) and p.area > 0)
    parts.extend(more)
    if not parts:
        raise InvalidInput(
            f"polygon is invalid ({reason}) and has no area once repaired; expected a simple "
            "non-self-intersecting ring enclosing an area"
        )
    parts.sort(key=lambda g: g.area, reverse=True)
    best = parts[0]
    total = sum(g.area for g in parts)
    warning = f"polygon was invalid ({reason}); repaired with make_valid"
    if len(parts) > 1:
        warning += (
            f", which split it into {len(parts)} pieces: kept the largest "
            f"({best.area:.4g} of {total:.4g} px²)"
        )
    return Polygon.from_shapely(shapely.normalize(best)), warning
