"""Overlap and surface-distance metrics for binary masks and multi-class label maps.

Conventions (the MONAI / DeepMind ``surface-distance`` ones):

* ``a`` is the reference, ``b`` the candidate; both are 2-D or 3-D arrays of the same shape,
  boolean or 0/1. Numpy axis order (z, y, x); ``spacing`` gives mm per axis in the same order
  (default 1 for every axis, i.e. distances in voxels).
* The *boundary* of a mask is its voxels with at least one face-connected (4-connected in 2-D,
  6-connected in 3-D) neighbour outside the mask; outside the array counts as outside the mask.
* Surface distances are Euclidean distances in mm between boundary voxel centres. The directed
  distances from A's boundary to the nearest voxel of B's boundary, and back, form two sets.
  Hausdorff at percentile p is the larger of the two sets' p-th percentiles (linear
  interpolation, ``numpy.percentile``); p = 100 is the classic Hausdorff distance.
* Empty masks: both empty -> Dice/IoU/surface Dice 1 and distances 0 (perfect agreement on
  "nothing there"); exactly one empty -> Dice/IoU/surface Dice 0 and distances ``inf``.

Speed: overlap metrics count bits (``np.count_nonzero``) without allocating float arrays;
distance metrics crop both masks to their joint bounding box (no margin is needed: a voxel on
the crop's edge is on its mask's boundary either way, and every boundary voxel lies inside the
crop), find boundaries by a face-connected binary erosion and run one ``scipy.ndimage.distance_transform_edt``
per direction on the crop with ``sampling=spacing``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from medlabel.errors import InvalidInput

__all__ = [
    "Spacing",
    "average_surface_distance",
    "dice",
    "hausdorff_distance",
    "iou",
    "per_class",
    "surface_dice",
    "surface_distances",
    "volume_difference",
]

BoolArray = NDArray[np.bool_]
Spacing: TypeAlias = Sequence[float] | float | np.number[Any] | None
"""mm per axis in numpy order (z, y, x), or one number for every axis; None means 1."""


def _as_mask(x: ArrayLike, name: str) -> BoolArray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidInput(f"mask {name} must be boolean or 0/1 numbers; got dtype {arr.dtype}")
    out = arr != 0
    if np.count_nonzero(arr[out] != 1):
        bad = arr[out][arr[out] != 1][0].item()
        raise InvalidInput(
            f"mask {name} must hold only 0 and 1; found {bad!r}. For label maps use per_class()",
            detail={"value": float(bad)},
        )
    return out


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[BoolArray, BoolArray]:
    ma, mb = _as_mask(a, "a"), _as_mask(b, "b")
    if ma.shape != mb.shape:
        raise InvalidInput(
            f"masks must have the same shape; got a {ma.shape} and b {mb.shape}",
            detail={"shape_a": list(ma.shape), "shape_b": list(mb.shape)},
        )
    if ma.ndim not in (2, 3):
        raise InvalidInput(f"masks must be 2-D or 3-D; got {ma.ndim}-D with shape {ma.shape}")
    return ma, mb


def _spacing(spacing: Spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, numbers.Real):
        values: tuple[float, ...] = (float(spacing),) * ndim
    else:
        try:
            values = tuple(float(s) for s in cast(Sequence[float], spacing))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"spacing must be mm per axis as numbers; got {spacing!r}") from exc
    if len(values) != ndim:
        raise InvalidInput(
            f"spacing must give one value per axis ({ndim}); got {len(values)}: {values}",
            detail={"spacing": list(values)},
        )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise InvalidInput(f"spacing values must be finite and > 0 mm; got {values}")
    return values


# ------------------------------------------------------------------------------------------ overlap

_CHUNK = 1 << 20  # voxels per chunk: the AND result stays in cache instead of a full-size temporary


def _count_and(ma: BoolArray, mb: BoolArray) -> int:
    """|A n B| without allocating a full-size boolean array (about twice as fast on big volumes)."""
    if ma.size <= _CHUNK or not (ma.flags.c_contiguous and mb.flags.c_contiguous):
        return int(np.count_nonzero(np.logical_and(ma, mb)))
    fa, fb = ma.reshape(-1), mb.reshape(-1)
    buf = np.empty(_CHUNK, dtype=np.bool_)
    total = 0
    for start in range(0, fa.size, _CHUNK):
        stop = min(start + _CHUNK, fa.size)
        out = buf[: stop - start]
        np.logical_and(fa[start:stop], fb[start:stop], out=out)
        total += int(np.count_nonzero(out))
    return total


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice coefficient 2|A n B| / (|A| + |B|); 1.0 when both masks are empty."""
    ma, mb = _pair(a, b)
    na, nb = np.count_nonzero(ma), np.count_nonzero(mb)
    if na + nb == 0:
        return 1.0
    return 2.0 * _count_and(ma, mb) / (na + nb)


def iou(a: ArrayLike, b: ArrayLike) -> float:
    """Intersection over union (Jaccard) |A n B| / |A u B|; 1.0 when both masks are empty."""
    ma, mb = _pair(a, b)
    inter = _count_and(ma, mb)
    union = np.count_nonzero(ma) + np.count_nonzero(mb) - inter
    if union == 0:
        return 1.0
    return inter / union


def volume_difference(
    a: ArrayLike,
    b: ArrayLike,
    *,
    spacing: Spacing = None,
    relative: bool = False,
) -> float:
    """Signed volume difference vol(B) - vol(A) in mm^3 (voxels when ``spacing`` is None).

    With ``relative=True``: (vol(B) - vol(A)) / vol(A), a fraction; ``nan`` if A is empty and B
    is not, 0.0 if both are empty.
    """
    ma, mb = _pair(a, b)
    voxel = float(np.prod(_spacing(spacing, ma.ndim)))
    va, vb = np.count_nonzero(ma) * voxel, np.count_nonzero(mb) * voxel
    if not relative:
        return vb - va
    if va == 0.0:
        return 0.0 if vb == 0.0 else math.nan
    return (vb - va) / va


# ----------------------------------------------------------------------------------------- surfaces


def _bbox(mask: BoolArray) -> list[tuple[int, int]] | None:
    """Inclusive-exclusive extent per axis, from one projection per axis (no np.nonzero)."""
    extents: list[tuple[int, int]] = []
    for axis in range(mask.ndim):
        others = tuple(i for i in range(mask.ndim) if i != axis)
        proj = np.any(mask, axis=others)
        idx = np.flatnonzero(proj)
        if idx.size == 0:
            return None
        extents.append((int(idx[0]), int(idx[-1]) + 1))
    return extents


def _boundary(mask: BoolArray) -> BoolArray:
    """Voxels of ``mask`` with a face neighbour outside it (outside the array counts as outside).

    This is ``mask & ~binary_erosion(mask, face-connected structure, border_value=0)``, computed
    with one shifted AND per face instead of ``scipy.ndimage.binary_erosion`` (several times
    faster on large crops; the tests check both agree).
    """
    interior = mask.copy()
    for axis in range(mask.ndim):
        lead = [slice(None)] * mask.ndim
        trail = [slice(None)] * mask.ndim
        lead[axis], trail[axis] = slice(1, None), slice(None, -1)
        interior[tuple(lead)] &= mask[tuple(trail)]
        interior[tuple(trail)] &= mask[tuple(lead)]
        edge = [slice(None)] * mask.ndim
        for index in (0, -1):
            edge[axis] = slice(index, index + 1 if index != -1 else None)
            interior[tuple(edge)] = False
    return np.logical_and(mask, np.logical_not(interior))


def _crop_pair(ma: BoolArray, mb: BoolArray) -> tuple[BoolArray, BoolArray]:
    box_a, box_b = _bbox(ma), _bbox(mb)
    assert box_a is not None and box_b is not None
    slices = tuple(
        slice(min(lo_a, lo_b), max(hi_a, hi_b))
        for (lo_a, hi_a), (lo_b, hi_b) in zip(box_a, box_b, strict=True)
    )
    return ma[slices], mb[slices]


def surface_distances(
    a: ArrayLike,
    b: ArrayLike,
    *,
    spacing: Spacing = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Directed boundary-to-boundary distances in mm: (from each A boundary voxel to B's
    boundary, from each B boundary voxel to A's boundary).

    Both empty -> two empty arrays. Exactly one empty -> the non-empty side's distances are
    ``inf`` and the other side is empty.
    """
    ma, mb = _pair(a, b)
    sp = _spacing(spacing, ma.ndim)
    return _surface_distances(ma, mb, sp)


def _surface_distances(
    ma: BoolArray, mb: BoolArray, sp: tuple[float, ...], method: str = "auto"
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    empty_a, empty_b = not ma.any(), not mb.any()
    if empty_a or empty_b:
        da = np.full(0 if empty_a else np.count_nonzero(_boundary(_crop_one(ma))), np.inf)
        db = np.full(0 if empty_b else np.count_nonzero(_boundary(_crop_one(mb))), np.inf)
        return da, db
    ca, cb = _crop_pair(ma, mb)
    border_a, border_b = _boundary(ca), _boundary(cb)
    if method == "auto":
        # Both methods are exact. A distance transform costs ~0.2 us per crop voxel and
        # direction; a k-d tree query ~2 us per boundary voxel: pick the cheaper.
        n_border = np.count_nonzero(border_a) + np.count_nonzero(border_b)
        method = "kdtree" if ca.size > _KDTREE_FACTOR * n_border else "edt"
    if method == "edt":
        dist_to_b = ndimage.distance_transform_edt(np.logical_not(border_b), sampling=sp)
        dist_to_a = ndimage.distance_transform_edt(np.logical_not(border_a), sampling=sp)
        return (
            np.asarray(dist_to_b[border_a], dtype=np.float64),
            np.asarray(dist_to_a[border_b], dtype=np.float64),
        )
    if method != "kdtree":
        raise InvalidInput(f"method must be 'auto', 'edt' or 'kdtree'; got {method!r}")
    return _directed_kdtree(border_a, border_b, sp), _directed_kdtree(border_b, border_a, sp)


_KDTREE_FACTOR = 8


def _directed_kdtree(src: BoolArray, dst: BoolArray, sp: tuple[float, ...]) -> NDArray[np.float64]:
    """Distance from each ``src`` voxel (C order) to the nearest ``dst`` voxel, in mm."""
    scale = np.asarray(sp, dtype=np.float64)
    shared = np.logical_and(src, dst)  # on both boundaries: distance 0, no query needed
    out = np.zeros(np.count_nonzero(src), dtype=np.float64)
    only = np.logical_and(src, np.logical_not(dst))
    if np.any(only):
        tree = cKDTree(np.argwhere(dst) * scale)
        dist, _ = tree.query(np.argwhere(only) * scale, k=1, workers=-1)
        # Place the queried distances at the positions of the non-shared voxels of src.
        out[~shared[src]] = dist
    return out


def _crop_one(m: BoolArray) -> BoolArray:
    box = _bbox(m)
    assert box is not None
    return m[tuple(slice(lo, hi) for lo, hi in box)]


def hausdorff_distance(
    a: ArrayLike,
    b: ArrayLike,
    *,
    spacing: Spacing = None,
    percentile: float = 100,
) -> float:
    """Symmetric (percentile) Hausdorff distance in mm between the masks' boundaries.

    ``percentile=95`` gives HD95: the larger of the two directed sets' 95th percentiles.
    Both empty -> 0.0; one empty -> ``inf``.
    """
    if not 0 <= percentile <= 100:
        raise InvalidInput(f"percentile must be in [0, 100]; got {percentile!r}")
    da, db = surface_distances(a, b, spacing=spacing)
    if da.size == 0 and db.size == 0:
        return 0.0
    if da.size == 0 or db.size == 0:
        return math.inf
    if percentile == 100:
        return float(max(da.max(), db.max()))
    return float(max(np.percentile(da, percentile), np.percentile(db, percentile)))


def average_surface_distance(
    a: ArrayLike,
    b: ArrayLike,
    *,
    spacing: Spacing = None,
) -> float:
    """Average symmetric surface distance (ASSD) in mm: the mean over both directed sets
    together (MONAI ``compute_average_surface_distance(symmetric=True)``).

    Both empty -> 0.0; one empty -> ``inf``.
    """
    da, db = surface_distances(a, b, spacing=spacing)
    if da.size == 0 and db.size == 0:
        return 0.0
    if da.size == 0 or db.size == 0:
        return math.inf
    return float((da.sum() + db.sum()) / (da.size + db.size))


def surface_dice(
    a: ArrayLike,
    b: ArrayLike,
    *,
    tolerance: float,
    spacing: Spacing = None,
) -> float:
    """Surface Dice (normalised surface distance, Nikolov et al. 2021) at ``tolerance`` mm.

    The fraction of boundary voxels of both masks lying within ``tolerance`` of the other mask's
    boundary: (|{a: d(a) <= tol}| + |{b: d(b) <= tol}|) / (|dA| + |dB|). Boundary voxels are
    counted, not weighted by surface-element area (MONAI ``compute_surface_dice``; DeepMind's
    library weights by area, which differs slightly). Both empty -> 1.0; one empty -> 0.0.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise InvalidInput(f"tolerance must be a finite distance >= 0 mm; got {tolerance!r}")
    da, db = surface_distances(a, b, spacing=spacing)
    total = da.size + db.size
    if total == 0:
        return 1.0
    return float((np.count_nonzero(da <= tolerance) + np.count_nonzero(db <= tolerance)) / total)


# -------------------------------------------------------------------------------------- multi-class


def per_class(
    metric: Callable[..., float],
    a: ArrayLike,
    b: ArrayLike,
    *,
    labels: Iterable[int] | None = None,
    **kwargs: Any,
) -> dict[int, float]:
    """Apply a binary mask metric to each class of two integer label maps.

    Args:
        metric: any mask metric of this module, e.g. :func:`dice` or :func:`hausdorff_distance`.
        a, b: integer label maps of the same shape (0 is background).
        labels: the classes to evaluate; default: every non-zero label present in ``a`` or ``b``.
        **kwargs: passed to ``metric`` (``spacing=``, ``percentile=``, ``tolerance=``...).

    Returns:
        ``{label: metric(a == label, b == label)}``; a label absent from both maps follows the
        both-empty rule (Dice 1, distance 0).
    """
    la, lb = np.asarray(a), np.asarray(b)
    if la.shape != lb.shape:
        raise InvalidInput(f"label maps must have the same shape; got a {la.shape} and b {lb.shape}")
    for name, arr in (("a", la), ("b", lb)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise InvalidInput(f"label map {name} must hold integers; got dtype {arr.dtype}")
    if labels is None:
        present = np.union1d(np.unique(la), np.unique(lb))
        chosen = [int(v) for v in present if v != 0]
    else:
        chosen = [int(v) for v in labels]
    return {lab: float(metric(la == lab, lb == lab, **kwargs)) for lab in chosen}
