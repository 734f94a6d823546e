"""Inter-rater agreement for categorical and numeric labels.

All functions are pure: they take array-likes and return floats (or a frozen dataclass). When a
statistic is *undefined* because its chance term is degenerate (0 / 0, e.g. every rating is the
same single category) the result is ``nan``, as scikit-learn's ``cohen_kappa_score`` does; a
malformed input (wrong shape, unknown label, negative counts, ...) raises
:class:`medlabel.errors.InvalidInput`.

References:
    Cohen J. (1960), Educ Psychol Meas 20:37-46; Cohen J. (1968) weighted kappa, Psychol Bull 70:213.
    Fleiss J.L. (1971), Psychol Bull 76:378-382.
    Krippendorff K. (2011), "Computing Krippendorff's Alpha-Reliability" (coincidence matrices).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from medlabel.errors import InvalidInput

__all__ = [
    "BootstrapResult",
    "bootstrap_ci",
    "cohen_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
    "percent_agreement",
    "ratings_to_table",
]

KappaWeights = Literal["linear", "quadratic"]
AlphaLevel = Literal["nominal", "ordinal", "interval", "ratio"]
_LEVELS = ("nominal", "ordinal", "interval", "ratio")


def _is_missing(value: Any) -> bool:
    """``None`` and float NaN (including numpy floats) mean "not rated"."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(math.isnan(value))
    return False


def _sorted_categories(values: Sequence[Any]) -> list[Any]:
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct)
    except TypeError:
        # Mixed, unorderable labels: keep first-seen order (only matters for weighted kappa).
        return distinct


def _ratings_matrix(ratings: Any, name: str) -> list[list[Any]]:
    """Items x raters as nested Python lists; accepts numpy arrays and sequences of sequences."""
    if isinstance(ratings, np.ndarray):
        if ratings.ndim != 2:
            raise InvalidInput(
                f"{name} must be 2-D (items x raters); got an array of shape {ratings.shape}",
                detail={"shape": list(ratings.shape)},
            )
        rows: list[list[Any]] = ratings.tolist()
    else:
        try:
            rows = [list(row) for row in ratings]
        except TypeError as exc:
            raise InvalidInput(
                f"{name} must be a 2-D sequence (items x raters); got {ratings!r:.80}"
            ) from exc
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise InvalidInput(
            f"{name} rows must all have the same number of raters; found row lengths {sorted(widths)}",
            detail={"row_lengths": sorted(widths)},
        )
    return rows


# --------------------------------------------------------------------------------------------- Cohen


def cohen_kappa(
    a: Sequence[Hashable] | NDArray[Any],
    b: Sequence[Hashable] | NDArray[Any],
    *,
    labels: Sequence[Hashable] | None = None,
    weights: KappaWeights | None = None,
) -> float:
    """Cohen's kappa between two raters who labelled the same items.

    Args:
        a, b: one label per item, same length, no missing values.
        labels: the category order (matters for weighted kappa). Defaults to the sorted distinct
            labels seen in ``a`` and ``b``. A label outside ``labels`` raises ``InvalidInput``
            (scikit-learn silently drops such items instead).
        weights: ``None`` (unweighted), ``"linear"`` (|i - j|) or ``"quadratic"`` ((i - j)^2),
            where i, j are positions in ``labels``.

    Returns:
        kappa in [-1, 1]; ``nan`` when the expected disagreement is 0 (e.g. both raters gave the
        same single label to every item), matching ``sklearn.metrics.cohen_kappa_score``.
    """
    list_a = list(np.asarray(a, dtype=object).ravel()) if isinstance(a, np.ndarray) else list(a)
    list_b = list(np.asarray(b, dtype=object).ravel()) if isinstance(b, np.ndarray) else list(b)
    if len(list_a) != len(list_b):
        raise InvalidInput(
            f"cohen_kappa needs one label per item from each rater; got {len(list_a)} and {len(list_b)}",
            detail={"len_a": len(list_a), "len_b": len(list_b)},
        )
    if not list_a:
        raise InvalidInput("cohen_kappa needs at least one item; got 0")
    if weights not in (None, "linear", "quadratic"):
        raise InvalidInput(f"weights must be None, 'linear' or 'quadratic'; got {weights!r}")
    missing = [i for i, v in enumerate(list_a + list_b) if _is_missing(v)]
    if missing:
        raise InvalidInput(
            f"cohen_kappa does not accept missing ratings; found {len(missing)} (None/NaN)",
            detail={"positions": missing[:20]},
        )
    cats = _sorted_categories(list_a + list_b) if labels is None else list(labels)
    if len(set(cats)) != len(cats):
        raise InvalidInput(f"labels must be distinct; got {cats!r}")
    index = {c: i for i, c in enumerate(cats)}
    unknown = sorted({repr(v) for v in list_a + list_b if v not in index})
    if unknown:
        raise InvalidInput(
            f"found labels {', '.join(unknown[:10])} that are not in labels={cats!r}",
            detail={"unknown": unknown[:50]},
        )
    k = len(cats)
    ia = np.fromiter((index[v] for v in list_a), dtype=np.intp, count=len(list_a))
    ib = np.fromiter((index[v] for v in list_b), dtype=np.intp, count=len(list_b))
    observed = np.bincount(ia * k + ib, minlength=k * k).reshape(k, k).astype(np.float64)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    pos = np.arange(k)
    if weights is None:
        w = 1.0 - np.eye(k)
    elif weights == "linear":
        w = np.abs(pos[:, None] - pos[None, :]).astype(np.float64)
    else:
        w = ((pos[:, None] - pos[None, :]) ** 2).astype(np.float64)
    dis_expected = float(np.sum(w * expected))
    if dis_expected == 0.0:
        return math.nan
    return 1.0 - float(np.sum(w * observed)) / dis_expected


# --------------------------------------------------------------------------------------------- Fleiss


def ratings_to_table(
    ratings: Sequence[Sequence[Hashable]] | NDArray[Any],
    categories: Sequence[Hashable] | None = None,
) -> NDArray[np.int64]:
    """Turn items x raters labels into the items x categories count table Fleiss' kappa uses.

    Columns follow ``categories`` when given, otherwise the sorted distinct labels. ``None`` and
    NaN are "not rated" and are not counted (so such rows sum to fewer raters, which
    :func:`fleiss_kappa` then rejects). A label outside ``categories`` raises ``InvalidInput``.
    """
    rows = _ratings_matrix(ratings, "ratings")
    seen = [v for row in rows for v in row if not _is_missing(v)]
    cats = _sorted_categories(seen) if categories is None else list(categories)
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(rows), len(cats)), dtype=np.int64)
    for r, row in enumerate(rows):
        for v in row:
            if _is_missing(v):
                continue
            j = index.get(v)
            if j is None:
                raise InvalidInput(
                    f"item {r} has label {v!r}, which is not in categories={cats!r}",
                    detail={"item": r, "label": repr(v)},
                )
            table[r, j] += 1
    return table


def fleiss_kappa(table: Sequence[Sequence[float]] | NDArray[Any]) -> float:
    """Fleiss' kappa from an items x categories table of counts.

    Every row must sum to the same number of raters n >= 2 (each item rated by n raters, not
    necessarily the same people). Returns ``nan`` when chance agreement is 1 (all ratings in one
    category), where statsmodels divides by zero.
    """
    arr = np.asarray(table)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInput(
            f"table must be a non-empty 2-D items x categories array; got shape {arr.shape}",
            detail={"shape": list(arr.shape)},
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InvalidInput(f"table must hold counts; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.round(arr)):
        bad = np.argwhere(~np.isfinite(arr) | (arr < 0) | (arr != np.round(arr)))[0]
        raise InvalidInput(
            f"table must hold non-negative whole counts; found {arr[tuple(bad)].item()!r} at item {bad[0]}, "
            f"category {bad[1]}",
            detail={"item": int(bad[0]), "category": int(bad[1])},
        )
    sums = arr.sum(axis=1)
    n_raters = sums[0]
    if np.any(sums != n_raters):
        bad_row = int(np.argmax(sums != n_raters))
        raise InvalidInput(
            f"every row of the table must sum to the same number of raters; item 0 sums to "
            f"{n_raters:g} but item {bad_row} sums to {sums[bad_row]:g}",
            detail={"row_sums": sums.tolist()[:100]},
        )
    if n_raters < 2:
        raise InvalidInput(f"fleiss_kappa needs at least 2 ratings per item; rows sum to {n_raters:g}")
    n_items = arr.shape[0]
    p_cat = arr.sum(axis=0) / (n_items * n_raters)
    p_item = (np.sum(arr * arr, axis=1) - n_raters) / (n_raters * (n_raters - 1.0))
    p_bar = float(np.mean(p_item))
    p_e = float(np.sum(p_cat * p_cat))
    if p_e >= 1.0:
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


# ------------------------------------------------------------------------------------- Krippendorff


def _alpha_values(data: Any) -> tuple[NDArray[np.float64] | None, NDArray[Any]]:
    """Return (numeric raters x items array with NaN missing, or None) and the object array."""
    arr = np.asarray(data, dtype=object) if not isinstance(data, np.ndarray) else data
    if arr.ndim != 2:
        raise InvalidInput(
            f"data must be 2-D (raters x items); got shape {np.shape(arr)}",
            detail={"shape": list(np.shape(arr))},
        )
    if arr.dtype != object and np.issubdtype(arr.dtype, np.number) and arr.dtype.kind != "c":
        return arr.astype(np.float64), arr
    if arr.dtype == object:
        try:
            numeric = np.array([[math.nan if _is_missing(v) else float(v) for v in row] for row in arr])
        except (TypeError, ValueError):
            return None, arr
        if all(isinstance(v, int | float | np.number) or _is_missing(v) for v in arr.ravel()):
            return numeric.reshape(arr.shape), arr
    return None, arr


def krippendorff_alpha(
    data: Sequence[Sequence[Any]] | NDArray[Any],
    *,
    level: AlphaLevel = "nominal",
) -> float:
    """Krippendorff's alpha for raters x items data with missing values.

    Args:
        data: raters x items; ``np.nan`` (or ``None`` in object arrays) marks a missing rating.
            Nominal and ordinal data may be any sortable labels; interval and ratio data must be
            numbers, and ratio data must be >= 0.
        level: ``"nominal"``, ``"ordinal"``, ``"interval"`` or ``"ratio"``.

    Items with fewer than two ratings are not pairable and are ignored. Returns ``nan`` when
    alpha is undefined: no pairable item, or a single value in all pairable ratings (expected
    disagreement 0; the ``krippendorff`` package raises ``ValueError`` there).
    """
    if level not in _LEVELS:
        raise InvalidInput(f"level must be one of {_LEVELS}; got {level!r}")
    numeric, raw = _alpha_values(data)
    if numeric is not None:
        present = ~np.isnan(numeric)
        if np.any(np.isinf(numeric)):
            raise InvalidInput("data contains an infinite value; use NaN for missing ratings")
        values = np.unique(numeric[present])
        codes = np.searchsorted(values, numeric)
    else:
        if level in ("interval", "ratio"):
            example = next(
                (v for v in raw.ravel() if not _is_missing(v) and not isinstance(v, int | float)), raw
            )
            raise InvalidInput(f"{level} data must be numeric; found {example!r}")
        present = np.vectorize(lambda v: not _is_missing(v), otypes=[bool])(raw)
        cats = _sorted_categories([v for v in raw[present]])
        index = {c: i for i, c in enumerate(cats)}
        codes = np.zeros(raw.shape, dtype=np.intp)
        codes[present] = [index[v] for v in raw[present]]
        values = np.arange(len(cats), dtype=np.float64)
    if level == "ratio" and values.size and values[0] < 0:
        raise InvalidInput(f"ratio data must be non-negative; found {values[0].item()!r}")

    n_values = values.size
    per_item = present.sum(axis=0)
    pairable = per_item >= 2
    if n_values == 0 or not np.any(pairable):
        return math.nan
    # counts[u, c]: how many raters gave value c to item u (pairable items only).
    codes_p = codes[:, pairable]
    present_p = present[:, pairable]
    n_items = codes_p.shape[1]
    item_idx = np.broadcast_to(np.arange(n_items), codes_p.shape)[present_p]
    flat = item_idx * n_values + codes_p[present_p]
    counts = np.bincount(flat, minlength=n_items * n_values).reshape(n_items, n_values).astype(np.float64)
    m_u = per_item[pairable].astype(np.float64)
    weight = 1.0 / (m_u - 1.0)
    # Coincidence matrix: o_ck = sum_u n_uc * (n_uk - [c == k]) / (m_u - 1).
    coincidence = (counts * weight[:, None]).T @ counts
    coincidence[np.diag_indices(n_values)] -= (counts * weight[:, None]).sum(axis=0)
    n_c = coincidence.sum(axis=1)
    n_total = float(n_c.sum())
    delta = _delta_squared(level, values, n_c)
    d_observed = float(np.sum(coincidence * delta))
    d_expected = float(n_c @ delta @ n_c) / (n_total - 1.0)
    if d_expected == 0.0:
        return math.nan
    return 1.0 - d_observed / d_expected


def _delta_squared(level: str, values: NDArray[np.float64], n_c: NDArray[np.float64]) -> NDArray[np.float64]:
    """Krippendorff's difference function delta^2(c, k) over the sorted distinct values."""
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ratio":
        total = values[:, None] + values[None, :]
        diff = values[:, None] - values[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(total == 0.0, 0.0, diff / np.where(total == 0.0, 1.0, total))
        return np.asarray(out**2, dtype=np.float64)
    # ordinal: (sum_{g between c and k} n_g - (n_c + n_k) / 2)^2 over ranks.
    cum = np.cumsum(n_c)
    lo = np.minimum.outer(np.arange(values.size), np.arange(values.size))
    hi = np.maximum.outer(np.arange(values.size), np.arange(values.size))
    between = cum[hi] - np.where(lo > 0, cum[lo - 1], 0.0)
    return np.asarray((between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2, dtype=np.float64)


# ------------------------------------------------------------------------------------ percent / CI


def percent_agreement(ratings: Sequence[Sequence[Hashable]] | NDArray[Any]) -> float:
    """Observed pairwise agreement for items x raters labels, as a fraction in [0, 1].

    For each item with at least two ratings (``None``/NaN are missing), the fraction of rater
    pairs that agree; then the mean over those items. With two raters and no missing values this
    is the plain fraction of items on which they agree; with complete data it is Fleiss' P-bar.
    Returns ``nan`` when no item has two ratings.
    """
    table = ratings_to_table(ratings).astype(np.float64)
    m = table.sum(axis=1)
    ok = m >= 2
    if not np.any(ok):
        return math.nan
    t, mm = table[ok], m[ok]
    per_item = (np.sum(t * t, axis=1) - mm) / (mm * (mm - 1.0))
    return float(np.mean(per_item))


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """A percentile bootstrap confidence interval.

    Attributes:
        estimate: the metric on the original data.
        low, high: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the replicates.
        level: the confidence level, e.g. 0.95.
        n: how many replicates were finite and used (resamples where the metric is undefined,
            i.e. ``nan``, are dropped).
    """

    estimate: float
    low: float
    high: float
    level: float
    n: int


def bootstrap_ci(
    metric: Callable[..., float],
    data: Any,
    n: int = 1000,
    *,
    seed: int | None = 0,
    level: float = 0.95,
    axis: int = 0,
) -> BootstrapResult:
    """Percentile bootstrap CI of ``metric`` by resampling items with replacement.

    Args:
        metric: called as ``metric(data)`` for one array, or ``metric(*data)`` when ``data`` is a
            tuple of arrays (e.g. ``(a, b)`` for :func:`cohen_kappa`).
        data: an array whose items lie along ``axis`` (items x raters: ``axis=0``; Krippendorff's
            raters x items: ``axis=1``), or a tuple of such arrays resampled with the same indices.
        n: number of bootstrap replicates.
        seed: seed for ``numpy.random.default_rng``; the same seed gives the same interval.
        level: confidence level in (0, 1).
        axis: the item axis.
    """
    if not 0.0 < level < 1.0:
        raise InvalidInput(f"level must be in (0, 1); got {level!r}")
    if n < 1:
        raise InvalidInput(f"n must be a positive number of replicates; got {n!r}")
    parts = [np.asarray(d) for d in (list(data) if isinstance(data, tuple) else [data])]
    sizes = {p.shape[axis] if p.ndim > axis else -1 for p in parts}
    if len(sizes) != 1 or -1 in sizes:
        raise InvalidInput(
            f"every array in data must have the same number of items along axis {axis}; got "
            f"shapes {[p.shape for p in parts]}",
        )
    n_items = sizes.pop()
    if n_items < 1:
        raise InvalidInput("bootstrap_ci needs at least one item; got 0")
    is_tuple = isinstance(data, tuple)

    def call(ps: list[NDArray[Any]]) -> float:
        return float(metric(*ps) if is_tuple else metric(ps[0]))

    estimate = call(parts)
    rng = np.random.default_rng(seed)
    reps = np.empty(n, dtype=np.float64)
    for r in range(n):
        idx = rng.integers(0, n_items, size=n_items)
        reps[r] = call([np.take(p, idx, axis=axis) for p in parts])
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        return BootstrapResult(estimate, math.nan, math.nan, level, 0)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return BootstrapResult(estimate, float(low), float(high), level, int(finite.size))
