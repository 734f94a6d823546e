"""Per-annotator and per-reviewer figures, and error records per ISO week."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from medlabel.quality.records import (
    ACCEPTANCES,
    REJECTIONS,
    SEVERITIES,
    ErrorRecord,
    GoldOutcome,
    ReviewOutcome,
    WorkRecord,
)
from medlabel.quality.results import AnnotatorStats, ErrorWeek, ReviewerStats

__all__ = ["annotator_stats", "error_categories", "error_weeks", "reviewer_stats", "week_start"]

NAN = math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den else NAN


def annotator_stats(
    *,
    gold: Sequence[GoldOutcome],
    reviews: Sequence[ReviewOutcome],
    errors: Sequence[ErrorRecord],
    work: Sequence[WorkRecord],
    consensus: Mapping[str, tuple[int, int]],
    also: Sequence[str] = (),
) -> list[AnnotatorStats]:
    """One row per annotator seen in any record (``also``: further names, e.g. raters)."""
    names = (
        {g.annotator for g in gold}
        | {r.annotator for r in reviews}
        | {e.annotator for e in errors}
        | {w.annotator for w in work if w.stage == "annotate"}
        | set(consensus)
        | set(also)
    )
    gold_by: dict[str, list[GoldOutcome]] = defaultdict(list)
    for g in gold:
        gold_by[g.annotator].append(g)
    reviewed: dict[str, set[str]] = defaultdict(set)
    rejected: dict[str, set[str]] = defaultdict(set)
    for r in reviews:
        reviewed[r.annotator].add(r.item_id)
        if r.decision in REJECTIONS:
            rejected[r.annotator].add(r.item_id)
    err_by: dict[str, list[ErrorRecord]] = defaultdict(list)
    for e in errors:
        err_by[e.annotator].append(e)
    work_by: dict[str, list[WorkRecord]] = defaultdict(list)
    for w in work:
        if w.stage == "annotate":
            work_by[w.annotator].append(w)

    out = []
    for name in sorted(names):
        gs = gold_by.get(name, [])
        comp, agree = consensus.get(name, (0, 0))
        errs = err_by.get(name, [])
        # Errors count against reviewed items; an error on an item without a decision still
        # makes that item a reviewed one.
        n_reviewed = len(reviewed.get(name, set()) | {e.item_id for e in errs})
        cats = Counter(e.category for e in errs)
        sev = Counter(e.severity for e in errs)
        ws = work_by.get(name, [])
        seconds = sum(w.active_seconds for w in ws)
        per_item: dict[str, float] = defaultdict(float)
        for w in ws:
            per_item[w.item_id] += w.active_seconds
        n_items = len(per_item)
        n_ann = sum(w.annotations for w in ws)
        hours = seconds / 3600.0
        n_rev = len(reviewed.get(name, set()))
        out.append(
            AnnotatorStats(
                annotator=name,
                gold_items=len(gs),
                gold_accuracy=_ratio(sum(g.correct for g in gs), len(gs)),
                gold_mean_score=_ratio(sum(g.score for g in gs), len(gs)),
                consensus_items=comp,
                consensus_agreement=_ratio(agree, comp),
                reviewed_items=n_reviewed,
                errors=len(errs),
                error_rate=_ratio(len(errs), n_reviewed),
                errors_by_category=tuple(sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))),
                errors_by_severity=tuple((s, sev[s]) for s in SEVERITIES if sev[s]),
                rework_items=len(rejected.get(name, set())),
                rework_rate=_ratio(len(rejected.get(name, set())), n_rev),
                items=n_items,
                annotations=n_ann,
                active_hours=hours,
                items_per_hour=_ratio(n_items, hours),
                annotations_per_hour=_ratio(n_ann, hours),
                median_seconds_per_item=float(np.median(list(per_item.values()))) if per_item else NAN,
            )
        )
    return out


def reviewer_stats(reviews: Sequence[ReviewOutcome]) -> list[ReviewerStats]:
    """Per reviewer/validator: acceptances, how many were audited later, how many audits failed.

    An acceptance of item *i* at time *t* is *audited* when an audit decision on *i* comes after
    *t*; it is *overturned* when the first such audit is a ``fail``.
    """
    audits: dict[str, list[ReviewOutcome]] = defaultdict(list)
    for r in reviews:
        if r.stage == "audit":
            audits[r.item_id].append(r)
    for lst in audits.values():
        lst.sort(key=lambda r: r.at)
    decisions: Counter[str] = Counter()
    accepted: dict[str, dict[str, datetime]] = defaultdict(dict)  # reviewer -> item -> last acceptance
    for r in reviews:
        if r.stage == "audit":
            continue
        decisions[r.reviewer] += 1
        if r.decision in ACCEPTANCES:
            prev = accepted[r.reviewer].get(r.item_id)
            if prev is None or r.at > prev:
                accepted[r.reviewer][r.item_id] = r.at
    out = []
    for name in sorted(decisions):
        audited = overturned = 0
        for item, at in accepted.get(name, {}).items():
            later = [a for a in audits.get(item, []) if a.at > at]
            if later:
                audited += 1
                overturned += later[0].decision == "fail"
        out.append(
            ReviewerStats(
                reviewer=name,
                decisions=decisions[name],
                acceptances=len(accepted.get(name, {})),
                audited=audited,
                overturned=overturned,
                overturn_rate=_ratio(overturned, audited),
            )
        )
    return out


def week_start(t: datetime) -> datetime:
    """Monday 00:00 UTC of the ISO week containing ``t``."""
    d = t.astimezone(UTC)
    monday = d.date() - timedelta(days=d.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)


def error_categories(errors: Sequence[ErrorRecord]) -> list[str]:
    """Categories seen, most frequent first (ties by name)."""
    c = Counter(e.category for e in errors)
    return [k for k, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]


def error_weeks(errors: Sequence[ErrorRecord], start: datetime, end: datetime) -> list[ErrorWeek]:
    """Error records per category for every ISO week overlapping ``[start, end)``."""
    if end <= start:
        return []
    cats = error_categories(errors)
    by_week: dict[datetime, Counter[str]] = defaultdict(Counter)
    for e in errors:
        by_week[week_start(e.at)][e.category] += 1
    out = []
    w = week_start(start)
    while w < end:
        counts = by_week.get(w, Counter())
        out.append(ErrorWeek(w, tuple((c, counts[c]) for c in cats)))
        w += timedelta(days=7)
    return out
