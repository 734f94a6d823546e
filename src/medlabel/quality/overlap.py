"""Agreement between annotators on overlap items: classification, shapes and masks.

Turns report records into per-item data once, then evaluates a metric on any subset (or
bootstrap resample) of items given as an index array. The same functions serve the period-wide
figures (with bootstrap CIs) and the rolling windows (no CI).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import combinations
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from medlabel.quality.metrics import (
    Box,
    Polygon,
    bootstrap_ci,
    cohen_kappa,
    dice,
    fleiss_kappa,
    hausdorff_distance,
    krippendorff_alpha,
    match_shapes,
    plurality_label,
    surface_dice,
)
from medlabel.quality.records import ClassificationRating, MaskRecord, ShapeRecord, WorkRecord
from medlabel.quality.results import ConfusionMatrix, Figure, PairMatrix

__all__ = [
    "IndexMetric",
    "Question",
    "UnitTable",
    "ci",
    "classification_figures",
    "confusion_matrices",
    "consensus_agreement",
    "mask_units",
    "overall_kappa",
    "pair_matrices",
    "pooled_kappa",
    "questions",
    "shape_units",
    "sort_labels",
    "unit_figures",
    "unit_metric",
    "window_rows",
]

IndexMetric = Callable[[NDArray[np.intp]], float]
NAN = math.nan


def ci(metric: IndexMetric, n_items: int, bootstrap_n: int, seed: int) -> tuple[float, float, float]:
    """(estimate, low, high) of ``metric`` over items ``0..n_items-1``, bootstrapping items."""
    idx = np.arange(n_items, dtype=np.intp)
    if n_items == 0:
        return NAN, NAN, NAN
    if bootstrap_n <= 0:
        return float(metric(idx)), NAN, NAN
    res = bootstrap_ci(metric, idx, n=bootstrap_n, seed=seed)
    return res.estimate, res.low, res.high


def sort_labels(values: Iterable[Hashable]) -> list[Hashable]:
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct)  # type: ignore[type-var]
    except TypeError:
        return sorted(distinct, key=repr)


# ------------------------------------------------------------------------------------ classification


@dataclass
class Question:
    """The overlap items of one question as integer codes (``-1``: not answered)."""

    name: str
    items: list[str]
    annotators: list[str]
    labels: list[Hashable]
    codes: NDArray[np.intp]  # items x annotators
    times: NDArray[np.float64]  # per item: latest answer, POSIX seconds
    method: str = field(init=False)
    _cache: dict[tuple[str, int | None], IndexMetric] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        per_item = (self.codes >= 0).sum(axis=1)
        if len(self.annotators) == 2:
            self.method = "cohen_kappa"
        elif per_item.size and np.all(per_item == per_item[0]):
            self.method = "fleiss_kappa"
        else:
            self.method = "krippendorff_alpha"

    @property
    def n_items(self) -> int:
        return len(self.items)

    def methods(self) -> list[str]:
        """Metrics that apply: the headline method, then alpha and percent agreement."""
        out = [self.method]
        if self.method == "cohen_kappa" and len(self.annotators) == 2:
            out.append("fleiss_kappa")
        return [*out, *(m for m in ("krippendorff_alpha", "percent_agreement") if m not in out)]

    def metric(self, name: str, positive: int | None = None) -> IndexMetric:
        """``name`` on a subset of items; with ``positive``, class ``positive`` vs the rest."""
        key = (name, positive)
        if key not in self._cache:
            self._cache[key] = self._metric(name, positive)
        return self._cache[key]

    def _metric(self, name: str, positive: int | None) -> IndexMetric:
        codes = self.codes
        k = len(self.labels)
        if positive is not None:
            codes = np.where(codes < 0, -1, (codes == positive).astype(np.intp))
            k = 2
        present = codes >= 0
        table = np.zeros((codes.shape[0], k), dtype=np.int64)
        rows, cols = np.nonzero(present)
        np.add.at(table, (rows, codes[rows, cols]), 1)
        values = np.where(present, codes, np.nan).astype(np.float64)

        def cohen(idx: NDArray[np.intp]) -> float:
            return cohen_kappa(codes[idx, 0], codes[idx, 1], labels=list(range(k)))

        def fleiss(idx: NDArray[np.intp]) -> float:
            return fleiss_kappa(table[idx]) if idx.size else NAN

        def alpha(idx: NDArray[np.intp]) -> float:
            return krippendorff_alpha(values[idx].T, level="nominal")

        def percent(idx: NDArray[np.intp]) -> float:
            t = table[idx].astype(np.float64)
            m = t.sum(axis=1)
            if t.shape[0] == 0:
                return NAN
            return float(np.mean((np.sum(t * t, axis=1) - m) / (m * (m - 1.0))))

        chosen: dict[str, IndexMetric] = {
            "cohen_kappa": cohen,
            "fleiss_kappa": fleiss,
            "krippendorff_alpha": alpha,
            "percent_agreement": percent,
        }
        return chosen[name]


def questions(ratings: Sequence[ClassificationRating]) -> list[Question]:
    """Group ratings by question; keep each annotator's latest answer and items with ≥ 2 answers."""
    latest: dict[str, dict[str, dict[str, ClassificationRating]]] = defaultdict(lambda: defaultdict(dict))
    for r in sorted(ratings, key=lambda r: r.at):
        latest[r.question][r.item_id][r.annotator] = r
    out = []
    for name in sorted(latest):
        items = {i: a for i, a in latest[name].items() if len(a) >= 2}
        if not items:
            continue
        item_ids = sorted(items)
        annotators = sorted({a for answers in items.values() for a in answers})
        labels = sort_labels(r.value for answers in items.values() for r in answers.values())
        li = {v: j for j, v in enumerate(labels)}
        ai = {a: j for j, a in enumerate(annotators)}
        codes = np.full((len(item_ids), len(annotators)), -1, dtype=np.intp)
        times = np.zeros(len(item_ids))
        for row, item in enumerate(item_ids):
            for a, r in items[item].items():
                codes[row, ai[a]] = li[r.value]
            times[row] = max(r.at for r in items[item].values()).timestamp()
        out.append(Question(name, item_ids, annotators, labels, codes, times))
    return out


def classification_figures(qs: Sequence[Question], bootstrap_n: int, seed: int) -> list[Figure]:
    """Per question every applicable metric, per class (one-vs-rest) the headline method, and
    the overall item-weighted kappa."""
    figs: list[Figure] = []
    for q in qs:
        for name in q.methods():
            est, lo, hi = ci(q.metric(name), q.n_items, bootstrap_n, seed)
            figs.append(Figure("classification", q.name, name, est, lo, hi, q.n_items))
        if len(q.labels) > 2:
            for j, label in enumerate(q.labels):
                est, lo, hi = ci(q.metric(q.method, positive=j), q.n_items, bootstrap_n, seed)
                figs.append(Figure("classification", f"{q.name}: {label}", q.method, est, lo, hi, q.n_items))
    if qs:
        est, lo, hi, n = overall_kappa(qs, bootstrap_n, seed)
        figs.append(Figure("classification", "overall", "kappa", est, lo, hi, n))
    return figs


def pooled_kappa(qs: Sequence[Question], rows: Sequence[NDArray[np.intp]]) -> float:
    """Mean of each question's headline kappa on ``rows[q]``, weighted by its item count."""
    total, weight = 0.0, 0
    for q, r in zip(qs, rows, strict=True):
        if r.size == 0:
            continue
        v = q.metric(q.method)(r)
        if math.isfinite(v):
            total += v * r.size
            weight += r.size
    return total / weight if weight else NAN


def overall_kappa(qs: Sequence[Question], bootstrap_n: int, seed: int) -> tuple[float, float, float, int]:
    """Pooled kappa with a CI from resampling items (an item keeps all its questions)."""
    union = sorted({i for q in qs for i in q.items})
    pos = {i: u for u, i in enumerate(union)}
    maps = []
    for q in qs:
        m = np.full(len(union), -1, dtype=np.intp)
        m[[pos[i] for i in q.items]] = np.arange(q.n_items)
        maps.append(m)

    def metric(idx: NDArray[np.intp]) -> float:
        rows = [m[idx][m[idx] >= 0] for m in maps]
        return pooled_kappa(qs, rows)

    est, lo, hi = ci(metric, len(union), bootstrap_n, seed)
    return est, lo, hi, len(union)


def _loo_consensus(q: Question) -> list[tuple[int, int, int]]:
    """(annotator index, their code, consensus code of the others) wherever the others have a
    unique plurality."""
    out = []
    for row in q.codes:
        for a in np.flatnonzero(row >= 0).tolist():
            others = [int(c) for j, c in enumerate(row.tolist()) if j != a and c >= 0]
            p = plurality_label(others)
            if p.label is not None:
                out.append((a, int(row[a]), cast(int, p.label)))
    return out


def confusion_matrices(qs: Sequence[Question]) -> list[ConfusionMatrix]:
    out = []
    for q in qs:
        k = len(q.labels)
        m = np.zeros((k, k), dtype=np.int64)
        for _, mine, cons in _loo_consensus(q):
            m[mine, cons] += 1
        out.append(
            ConfusionMatrix(
                q.name, tuple(str(v) for v in q.labels), tuple(tuple(int(c) for c in r) for r in m)
            )
        )
    return out


def consensus_agreement(qs: Sequence[Question]) -> dict[str, tuple[int, int]]:
    """Per annotator: (answers compared with the others' plurality, answers agreeing with it)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for q in qs:
        for a, mine, cons in _loo_consensus(q):
            out[q.annotators[a]][0] += 1
            out[q.annotators[a]][1] += int(mine == cons)
    return {a: (v[0], v[1]) for a, v in out.items()}


def pair_matrices(qs: Sequence[Question]) -> list[PairMatrix]:
    out = []
    for q in qs:
        n_a = len(q.annotators)
        kap = [[NAN] * n_a for _ in range(n_a)]
        cnt = [[0] * n_a for _ in range(n_a)]
        for a in range(n_a):
            cnt[a][a] = int(np.count_nonzero(q.codes[:, a] >= 0))
        for a, b in combinations(range(n_a), 2):
            both = (q.codes[:, a] >= 0) & (q.codes[:, b] >= 0)
            n = int(np.count_nonzero(both))
            v = NAN
            if n >= 2:
                v = cohen_kappa(q.codes[both, a], q.codes[both, b], labels=list(range(len(q.labels))))
            kap[a][b] = kap[b][a] = v
            cnt[a][b] = cnt[b][a] = n
        out.append(
            PairMatrix(
                q.name,
                tuple(q.annotators),
                tuple(tuple(r) for r in kap),
                tuple(tuple(r) for r in cnt),
            )
        )
    return out


# -------------------------------------------------------------------------------- shapes and masks


@dataclass
class UnitTable:
    """Per (item, label) pairwise values; ``label == ""`` rows are the whole item (all labels).

    ``values[metric]`` is an array aligned with ``items``/``labels``/``times``/``annotators``.
    """

    section: str
    items: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    annotators: list[tuple[str, ...]] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, item: str, label: str, time: float, who: Iterable[str], **vals: float) -> None:
        self.items.append(item)
        self.labels.append(label)
        self.times.append(time)
        self.annotators.append(tuple(sorted(who)))
        for k, v in vals.items():
            self.values.setdefault(k, []).append(v)

    def rows(self, label: str) -> NDArray[np.intp]:
        return np.array([i for i, lab in enumerate(self.labels) if lab == label], dtype=np.intp)


def _aggregate(metric: str) -> Callable[[NDArray[np.float64]], float]:
    if metric == "hd95":
        return lambda v: float(np.median(v)) if v.size else NAN

    def mean(v: NDArray[np.float64]) -> float:
        f = v[~np.isnan(v)]
        return float(np.mean(f)) if f.size else NAN

    return mean


def unit_metric(table: UnitTable, metric: str, rows: NDArray[np.intp]) -> IndexMetric:
    """Aggregate of ``metric`` over the units ``rows[idx]`` (mean; median for HD95)."""
    vals = np.asarray(table.values.get(metric, []), dtype=np.float64)
    agg = _aggregate(metric)
    return lambda idx: agg(vals[rows[idx]])


def unit_figures(table: UnitTable, metrics: Sequence[str], bootstrap_n: int, seed: int) -> list[Figure]:
    figs: list[Figure] = []
    if not table.items:
        return figs
    labels = sorted({lab for lab in table.labels if lab})
    for subject, key in [("overall", ""), *((lab, lab) for lab in labels)]:
        rows = table.rows(key)
        for m in metrics:
            est, lo, hi = ci(unit_metric(table, m, rows), rows.size, bootstrap_n, seed)
            figs.append(Figure(table.section, subject, m, est, lo, hi, int(rows.size)))
    return figs


def _participants(
    by_item: dict[str, dict[str, list[Any]]], work: Sequence[WorkRecord]
) -> dict[str, list[str]]:
    """Annotators of each item: those with records, plus annotate-stage workers who drew nothing."""
    who = {item: set(per) for item, per in by_item.items()}
    for w in work:
        if w.stage == "annotate" and w.item_id in who:
            who[w.item_id].add(w.annotator)
    return {item: sorted(a) for item, a in who.items()}


def shape_units(shapes: Sequence[ShapeRecord], work: Sequence[WorkRecord]) -> UnitTable:
    """Pairwise ``match_shapes`` (labels must match) F1 and mean IoU per item and per label."""
    by_item: dict[str, dict[str, list[ShapeRecord]]] = defaultdict(lambda: defaultdict(list))
    for s in shapes:
        by_item[s.item_id][s.annotator].append(s)
    table = UnitTable("shapes")
    for item, who in sorted(_participants(by_item, work).items()):
        if len(who) < 2:
            continue
        recs = by_item[item]
        time = max(s.at for per in recs.values() for s in per).timestamp()
        labels = sorted({s.label for per in recs.values() for s in per})
        for label in ["", *labels]:
            f1s, ious = [], []
            for a, b in combinations(who, 2):
                sa = [_labelled(s) for s in recs.get(a, []) if label in ("", s.label)]
                sb = [_labelled(s) for s in recs.get(b, []) if label in ("", s.label)]
                if not sa and not sb:
                    continue
                res = match_shapes(sa, sb, match_labels=True)
                f1s.append(res.f1)
                ious.append(res.mean_iou)
            if f1s:
                finite = [v for v in ious if not math.isnan(v)]
                table.add(item, label, time, who, f1=float(np.mean(f1s)), mean_iou=_mean(finite))
    return table


def _labelled(s: ShapeRecord) -> Box | Polygon:
    return replace(s.shape, label=s.label)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else NAN


def mask_units(masks: Sequence[MaskRecord], work: Sequence[WorkRecord], tolerance: float) -> UnitTable:
    """Pairwise Dice, HD95 and surface Dice per (item, label); an annotator of the item without a
    mask of that label counts as an empty mask. The whole-item row averages the labels."""
    by_item: dict[str, dict[str, list[MaskRecord]]] = defaultdict(lambda: defaultdict(list))
    for m in sorted(masks, key=lambda m: m.at):
        by_item[m.item_id][m.annotator].append(m)
    table = UnitTable("masks")
    for item, who in sorted(_participants(by_item, work).items()):
        if len(who) < 2:
            continue
        recs = by_item[item]
        latest: dict[tuple[str, str], MaskRecord] = {}
        for a, per in recs.items():
            for m in per:
                latest[(a, m.label)] = m  # sorted by time: the last save wins
        labels = sorted({lab for _, lab in latest})
        per_label: dict[str, dict[str, float]] = {}
        time = max(m.at for m in latest.values()).timestamp()
        for label in labels:
            ref = next(m for (_, lab), m in sorted(latest.items()) if lab == label)
            empty = np.zeros(ref.mask.shape, dtype=bool)
            d, h, s = [], [], []
            for a, b in combinations(who, 2):
                ma = latest[(a, label)].mask if (a, label) in latest else empty
                mb = latest[(b, label)].mask if (b, label) in latest else empty
                d.append(dice(ma, mb))
                h.append(hausdorff_distance(ma, mb, spacing=ref.spacing, percentile=95))
                s.append(surface_dice(ma, mb, tolerance=tolerance, spacing=ref.spacing))
            vals = {"dice": _mean(d), "hd95": _mean(h), "surface_dice": _mean(s)}
            per_label[label] = vals
            t = max(m.at for (_, lab), m in latest.items() if lab == label).timestamp()
            table.add(item, label, t, who, **vals)
        if per_label:
            table.add(
                item,
                "",
                time,
                who,
                **{k: _mean([v[k] for v in per_label.values()]) for k in ("dice", "hd95", "surface_dice")},
            )
    return table


def window_rows(
    times: Sequence[float] | NDArray[np.float64], start: datetime, end: datetime
) -> NDArray[np.intp]:
    t = np.asarray(times, dtype=np.float64)
    return np.flatnonzero((t >= start.timestamp()) & (t < end.timestamp())).astype(np.intp)
