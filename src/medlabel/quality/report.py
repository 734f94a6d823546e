"""The quality report of a project over a period: agreement, per-annotator and per-reviewer
figures, rolling windows against targets, alerts and error trends.

Pure: the quality service loads :mod:`medlabel.quality.records` from the database, calls
:func:`build_report`, and stores or serves :meth:`QualityReport.to_dict` (JSON),
:meth:`QualityReport.to_csv` or :func:`medlabel.quality.html.render_html`. Every definition is in
``docs/quality-reports.md``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from medlabel.errors import InvalidInput
from medlabel.quality.overlap import (
    Question,
    UnitTable,
    classification_figures,
    confusion_matrices,
    consensus_agreement,
    mask_units,
    pair_matrices,
    pooled_kappa,
    questions,
    shape_units,
    unit_figures,
    unit_metric,
    window_rows,
)
from medlabel.quality.people import annotator_stats, error_categories, error_weeks, reviewer_stats
from medlabel.quality.records import ReportInput, Targets, utc
from medlabel.quality.results import (
    Alert,
    AnnotatorStats,
    ConfusionMatrix,
    ErrorWeek,
    Figure,
    Headline,
    PairMatrix,
    ReviewerStats,
    TrendPoint,
)

__all__ = [
    "CSV_COLUMNS",
    "QualityReport",
    "build_report",
    "iso_week_period",
    "rolling_windows",
]

CSV_COLUMNS = ("section", "subject", "metric", "value", "ci_low", "ci_high", "n")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
NAN = math.nan


def iso_week_period(week: str) -> tuple[datetime, datetime]:
    """``"2026-W48"`` → (Monday 00:00 UTC of that ISO week, the next Monday 00:00 UTC)."""
    m = _WEEK.match(week) if isinstance(week, str) else None
    if m is None:
        raise InvalidInput(f"ISO week must look like '2026-W48'; got {week!r}", detail={"week": repr(week)})
    try:
        monday = datetime.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
    except ValueError as exc:
        raise InvalidInput(f"{week!r} is not a week of ISO year {m.group(1)} ({exc})") from exc
    start = monday.replace(tzinfo=UTC)
    return start, start + timedelta(days=7)


def rolling_windows(start: datetime, end: datetime, days: int) -> list[tuple[datetime, datetime]]:
    """Windows of ``days`` days stepping by one day, the first starting at ``start`` and the last
    ending at ``end``. A period shorter than one window is one window, the whole period."""
    span = timedelta(days=days)
    if end - start <= span:
        return [(start, end)] if end > start else []
    out = []
    stop = start + span
    while stop <= end:
        out.append((stop - span, stop))
        stop += timedelta(days=1)
    if out[-1][1] < end:
        out.append((end - span, end))
    return out


@dataclass(frozen=True, slots=True)
class QualityReport:
    """A project's quality over ``[period_start, period_end)``. See ``docs/quality-reports.md``."""

    period_start: datetime
    period_end: datetime
    targets: Targets
    headline: tuple[Headline, ...]
    agreement: tuple[Figure, ...]
    confusion: tuple[ConfusionMatrix, ...]
    pair_kappa: tuple[PairMatrix, ...]
    annotators: tuple[AnnotatorStats, ...]
    reviewers: tuple[ReviewerStats, ...]
    trends: tuple[TrendPoint, ...]
    alerts: tuple[Alert, ...]
    error_weeks: tuple[ErrorWeek, ...]
    error_categories: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``json.dumps(..., allow_nan=False)`` works): nan/inf become ``None``."""
        return {
            "period": {"start": self.period_start.isoformat(), "end": self.period_end.isoformat()},
            "targets": self.targets.to_dict(),
            "headline": [h.to_dict() for h in self.headline],
            "agreement": [f.to_dict() for f in self.agreement],
            "confusion": [c.to_dict() for c in self.confusion],
            "pair_kappa": [p.to_dict() for p in self.pair_kappa],
            "annotators": [a.to_dict() for a in self.annotators],
            "reviewers": [r.to_dict() for r in self.reviewers],
            "trends": [t.to_dict() for t in self.trends],
            "alerts": [a.to_dict() for a in self.alerts],
            "error_weeks": [w.to_dict() for w in self.error_weeks],
            "error_categories": list(self.error_categories),
        }

    def rows(self) -> list[tuple[str, str, str, float, float, float, int]]:
        """The long-format table behind :meth:`to_csv` (columns :data:`CSV_COLUMNS`)."""
        out: list[tuple[str, str, str, float, float, float, int]] = []
        for h in self.headline:
            out.append(("headline", "project", h.metric, h.value, h.ci_low, h.ci_high, h.n))
            if h.target is not None:
                out.append(("headline", "project", f"{h.metric}_target", h.target, NAN, NAN, h.n))
        for f in self.agreement:
            out.append((f"agreement.{f.section}", f.subject, f.metric, f.value, f.ci_low, f.ci_high, f.n))
        for a in self.annotators:
            for name in a.__dataclass_fields__:
                v = getattr(a, name)
                if name == "annotator":
                    continue
                if isinstance(v, tuple):
                    prefix = "errors.category." if name == "errors_by_category" else "errors.severity."
                    out.extend(("annotator", a.annotator, prefix + k, float(c), NAN, NAN, c) for k, c in v)
                else:
                    out.append(("annotator", a.annotator, name, float(v), NAN, NAN, _n_of(a, name)))
        for r in self.reviewers:
            out.append(("reviewer", r.reviewer, "acceptances", float(r.acceptances), NAN, NAN, r.acceptances))
            out.append(("reviewer", r.reviewer, "overturned", float(r.overturned), NAN, NAN, r.audited))
            out.append(("reviewer", r.reviewer, "overturn_rate", r.overturn_rate, NAN, NAN, r.audited))
        for p in self.pair_kappa:
            for i, x in enumerate(p.annotators):
                for j, y in enumerate(p.annotators):
                    if i < j:
                        out.append((f"pair_kappa.{p.question}", f"{x} | {y}", "cohen_kappa", p.kappa[i][j],
                                    NAN, NAN, p.n[i][j]))  # fmt: skip
        for c in self.confusion:
            for i, x in enumerate(c.labels):
                for j, y in enumerate(c.labels):
                    n = c.counts[i][j]
                    out.append((f"confusion.{c.question}", f"{x} | {y}", "count", float(n), NAN, NAN, n))
        for t in self.trends:
            subject = f"{t.window_start.isoformat()}/{t.window_end.isoformat()}"
            out.append(("trend", subject, t.metric, t.value, NAN, NAN, t.n))
        for al in self.alerts:
            subject = f"{al.window_start.isoformat()}/{al.window_end.isoformat()}"
            out.append(("alert", subject, al.metric, al.value, NAN, NAN, al.n))
            out.append(("alert", subject, f"{al.metric}_target", al.target, NAN, NAN, al.n))
        for w in self.error_weeks:
            out.extend(("errors_week", w.week, cat, float(c), NAN, NAN, c) for cat, c in w.counts)
        return out

    def to_csv(self) -> str:
        """Long-format CSV (RFC 4180, ``\\r\\n`` line ends): one figure per row. NaN is an empty
        cell, infinity ``inf``."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        for section, subject, metric, value, lo, hi, n in self.rows():
            w.writerow([section, subject, metric, _csv_num(value), _csv_num(lo), _csv_num(hi), n])
        return buf.getvalue()


def _csv_num(v: float) -> str:
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(float(v))


_N_FIELD = {
    "gold_accuracy": "gold_items",
    "gold_mean_score": "gold_items",
    "consensus_agreement": "consensus_items",
    "error_rate": "reviewed_items",
    "errors": "reviewed_items",
    "rework_rate": "reviewed_items",
    "rework_items": "reviewed_items",
    "items_per_hour": "items",
    "annotations_per_hour": "items",
    "median_seconds_per_item": "items",
    "annotations": "items",
    "active_hours": "items",
}


def _n_of(a: AnnotatorStats, name: str) -> int:
    if name in _N_FIELD:
        return int(getattr(a, _N_FIELD[name]))
    return int(getattr(a, name))


# ---------------------------------------------------------------------------------------- building


def _check_period(period: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    try:
        start, end = period
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"period must be a (start, end) pair of datetimes; got {period!r:.80}") from exc
    start, end = utc(start, "period start"), utc(end, "period end")
    if end <= start:
        raise InvalidInput(
            f"period end {end.isoformat()} must come after its start {start.isoformat()}",
            detail={"start": start.isoformat(), "end": end.isoformat()},
        )
    return start, end


def _in_period(records: ReportInput, start: datetime, end: datetime) -> ReportInput:
    def keep(t: datetime) -> bool:
        return start <= t < end

    return ReportInput(
        ratings=[r for r in records.ratings if keep(r.at)],
        shapes=[s for s in records.shapes if keep(s.at)],
        masks=[m for m in records.masks if keep(m.at)],
        gold=[g for g in records.gold if keep(g.at)],
        reviews=[r for r in records.reviews if keep(r.at)],
        errors=[e for e in records.errors if keep(e.at)],
        work=[w for w in records.work if keep(w.submitted_at)],
    )


def _kappa_trend(
    qs: Sequence[Question], windows: Sequence[tuple[datetime, datetime]]
) -> list[tuple[TrendPoint, tuple[str, ...]]]:
    out = []
    for ws, we in windows:
        rows = [window_rows(q.times, ws, we) for q in qs]
        n_items = len({q.items[i] for q, r in zip(qs, rows, strict=True) for i in r.tolist()})
        who = {q.annotators[a] for q, r in zip(qs, rows, strict=True) for a in np.nonzero(q.codes[r] >= 0)[1]}
        out.append((TrendPoint("kappa", ws, we, pooled_kappa(qs, rows), n_items), tuple(sorted(who))))
    return out


def _dice_trend(
    table: UnitTable, windows: Sequence[tuple[datetime, datetime]]
) -> list[tuple[TrendPoint, tuple[str, ...]]]:
    whole = table.rows("")
    times = np.asarray(table.times, dtype=np.float64)[whole] if whole.size else np.zeros(0)
    out = []
    for ws, we in windows:
        sel = whole[window_rows(times, ws, we)]
        metric = unit_metric(table, "dice", sel)
        value = metric(np.arange(sel.size, dtype=np.intp))
        who = {a for i in sel.tolist() for a in table.annotators[i]}
        out.append((TrendPoint("dice", ws, we, value, int(sel.size)), tuple(sorted(who))))
    return out


def _alerts(
    series: Sequence[tuple[TrendPoint, tuple[str, ...]]], target: float, min_items: int
) -> list[Alert]:
    """Merge runs of consecutive breaching windows (≥ min_items items, value < target) into one
    alert each."""
    out: list[Alert] = []
    run: list[tuple[TrendPoint, tuple[str, ...]]] = []

    def close() -> None:
        if not run:
            return
        worst = min(run, key=lambda pw: pw[0].value)[0]
        who = sorted({a for _, names in run for a in names})
        out.append(
            Alert(
                worst.metric,
                run[0][0].window_start,
                run[-1][0].window_end,
                worst.value,
                target,
                worst.n,
                tuple(who),
            )  # fmt: skip
        )
        run.clear()

    for point, who in series:
        if point.n >= min_items and math.isfinite(point.value) and point.value < target:
            run.append((point, who))
        else:
            close()
    close()
    return out


def _figure(figs: Sequence[Figure], section: str, subject: str, metric: str) -> Figure | None:
    return next((f for f in figs if (f.section, f.subject, f.metric) == (section, subject, metric)), None)


def _headline(
    name: str, fig: Figure | None, target: float | None = None, *, higher_is_better: bool = True
) -> Headline:
    if fig is None:
        return Headline(name, NAN, NAN, NAN, 0, target, higher_is_better)
    return Headline(name, fig.value, fig.ci_low, fig.ci_high, fig.n, target, higher_is_better)


def _rate(name: str, num: int, den: int, *, higher_is_better: bool) -> Headline:
    return Headline(name, num / den if den else NAN, NAN, NAN, den, None, higher_is_better)


def build_report(
    records: ReportInput,
    *,
    period: tuple[datetime, datetime],
    targets: Targets,
    bootstrap_n: int = 1000,
    seed: int = 0,
) -> QualityReport:
    """Compute the quality report of ``records`` whose time falls in ``[period[0], period[1])``.

    Args:
        records: everything loaded for the project; records outside the period are ignored.
        period: UTC-aware (start, end); e.g. :func:`iso_week_period`.
        targets: the project's targets and alert parameters.
        bootstrap_n: bootstrap replicates per CI (0: no CIs, faster).
        seed: bootstrap seed; the same inputs and seed give the same report.
    """
    if not isinstance(records, ReportInput):
        raise InvalidInput(f"records must be a ReportInput; got {type(records).__name__}")
    if not isinstance(targets, Targets):
        raise InvalidInput(f"targets must be a Targets; got {type(targets).__name__}")
    if not isinstance(bootstrap_n, int) or bootstrap_n < 0:
        raise InvalidInput(f"bootstrap_n must be a whole number >= 0; got {bootstrap_n!r}")
    start, end = _check_period(period)
    rec = _in_period(records, start, end)

    qs = questions(rec.ratings)
    shapes = shape_units(rec.shapes, rec.work)
    masks = mask_units(rec.masks, rec.work, float(targets.surface_tolerance_mm))
    agreement = [
        *classification_figures(qs, bootstrap_n, seed),
        *unit_figures(shapes, ("f1", "mean_iou"), bootstrap_n, seed),
        *unit_figures(masks, ("dice", "hd95", "surface_dice"), bootstrap_n, seed),
    ]
    annotators = annotator_stats(
        gold=rec.gold,
        reviews=rec.reviews,
        errors=rec.errors,
        work=rec.work,
        consensus=consensus_agreement(qs),
        also=sorted({a for q in qs for a in q.annotators}),
    )
    reviewers = reviewer_stats(rec.reviews)

    windows = rolling_windows(start, end, int(targets.window_days))
    kappa_series = _kappa_trend(qs, windows) if qs else []
    dice_series = _dice_trend(masks, windows) if masks.items else []
    alerts = [
        *_alerts(kappa_series, float(targets.kappa), int(targets.min_items)),
        *_alerts(dice_series, float(targets.dice), int(targets.min_items)),
    ]
    alerts.sort(key=lambda a: (a.window_start, a.metric))

    reviewed = sum(a.reviewed_items for a in annotators)
    headline = (
        _headline("kappa", _figure(agreement, "classification", "overall", "kappa"), float(targets.kappa)),
        _headline("dice", _figure(agreement, "masks", "overall", "dice"), float(targets.dice)),
        _headline("shape_f1", _figure(agreement, "shapes", "overall", "f1")),
        _rate("gold_accuracy", sum(g.correct for g in rec.gold), len(rec.gold), higher_is_better=True),
        _rate("error_rate", sum(a.errors for a in annotators), reviewed, higher_is_better=False),
        _rate(
            "rework_rate",
            sum(a.rework_items for a in annotators),
            sum(len({r.item_id for r in rec.reviews if r.annotator == a.annotator}) for a in annotators),
            higher_is_better=False,
        ),
        _rate(
            "audit_overturn_rate",
            sum(r.overturned for r in reviewers),
            sum(r.audited for r in reviewers),
            higher_is_better=False,
        ),
    )
    return QualityReport(
        period_start=start,
        period_end=end,
        targets=targets,
        headline=headline,
        agreement=tuple(agreement),
        confusion=tuple(confusion_matrices(qs)),
        pair_kappa=tuple(pair_matrices(qs)),
        annotators=tuple(annotators),
        reviewers=tuple(reviewers),
        trends=tuple(p for p, _ in [*kappa_series, *dice_series]),
        alerts=tuple(alerts),
        error_weeks=tuple(error_weeks(rec.errors, start, end)),
        error_categories=tuple(error_categories(rec.errors)),
    )
