"""The typed pieces of a :class:`~medlabel.quality.report.QualityReport`.

Every number is a plain float; ``nan`` means "undefined or no data" (shown as "—" in HTML, an
empty cell in CSV and ``null`` in JSON). Times are UTC-aware datetimes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "Alert",
    "AnnotatorStats",
    "ConfusionMatrix",
    "ErrorWeek",
    "Figure",
    "Headline",
    "PairMatrix",
    "ReviewerStats",
    "TrendPoint",
    "json_number",
]

NAN = math.nan


def json_number(value: float) -> float | None:
    """A JSON-safe number: ``nan`` and ``±inf`` become ``None`` (JSON has neither)."""
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class Figure:
    """One agreement figure with its bootstrap CI.

    Attributes:
        section: ``"classification"``, ``"shapes"`` or ``"masks"``.
        subject: the question, ``"question: class"`` (one-vs-rest), the shape/mask label, or
            ``"overall"``.
        metric: e.g. ``"cohen_kappa"``, ``"fleiss_kappa"``, ``"krippendorff_alpha"``,
            ``"percent_agreement"``, ``"kappa"``, ``"f1"``, ``"mean_iou"``, ``"dice"``, ``"hd95"``,
            ``"surface_dice"``.
        value: the estimate on all items.
        ci_low, ci_high: 95 % percentile bootstrap interval over items (``nan`` if not computed).
        n: the number of items behind the value.
    """

    section: str
    subject: str
    metric: str
    value: float
    ci_low: float = NAN
    ci_high: float = NAN
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "subject": self.subject,
            "metric": self.metric,
            "value": json_number(self.value),
            "ci_low": json_number(self.ci_low),
            "ci_high": json_number(self.ci_high),
            "n": self.n,
        }


@dataclass(frozen=True, slots=True)
class Headline:
    """A headline figure and, where the project sets one, its target (``met``: value ≥ target)."""

    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    target: float | None = None
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        """Whether the target is met; ``None`` without a target or a value."""
        if self.target is None or not math.isfinite(self.value):
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": json_number(self.value),
            "ci_low": json_number(self.ci_low),
            "ci_high": json_number(self.ci_high),
            "n": self.n,
            "target": self.target,
            "met": self.met,
        }


@dataclass(frozen=True, slots=True)
class ConfusionMatrix:
    """Counts of (annotator's class, leave-one-out consensus class) for one question.

    ``counts[i][j]``: how often an annotator answered ``labels[i]`` where the plurality of the
    *other* annotators on that item answered ``labels[j]``. With two annotators this is the
    symmetric matrix of their pairwise answers.
    """

    question: str
    labels: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    @property
    def total(self) -> int:
        return sum(sum(row) for row in self.counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "labels": list(self.labels),
            "counts": [list(r) for r in self.counts],
        }


@dataclass(frozen=True, slots=True)
class PairMatrix:
    """Cohen's kappa between every pair of annotators on the items both answered (one question).

    The diagonal is ``nan`` (kappa with oneself) and its ``n`` is the annotator's item count.
    """

    question: str
    annotators: tuple[str, ...]
    kappa: tuple[tuple[float, ...], ...]
    n: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "annotators": list(self.annotators),
            "kappa": [[json_number(v) for v in row] for row in self.kappa],
            "n": [list(r) for r in self.n],
        }


@dataclass(frozen=True, slots=True)
class AnnotatorStats:
    """Per-annotator figures (see ``docs/quality-reports.md`` for each definition)."""

    annotator: str
    gold_items: int = 0
    gold_accuracy: float = NAN
    gold_mean_score: float = NAN
    consensus_items: int = 0
    consensus_agreement: float = NAN
    reviewed_items: int = 0
    errors: int = 0
    error_rate: float = NAN
    errors_by_category: tuple[tuple[str, int], ...] = ()
    errors_by_severity: tuple[tuple[str, int], ...] = ()
    rework_items: int = 0
    rework_rate: float = NAN
    items: int = 0
    annotations: int = 0
    active_hours: float = 0.0
    items_per_hour: float = NAN
    annotations_per_hour: float = NAN
    median_seconds_per_item: float = NAN

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if isinstance(v, float):
                out[name] = json_number(v)
            elif isinstance(v, tuple):
                out[name] = dict(v)
            else:
                out[name] = v
        return out


@dataclass(frozen=True, slots=True)
class ReviewerStats:
    """How often audits overturn a reviewer's or validator's acceptances.

    ``acceptances``: items the reviewer accepted (``accept``/``edit_accept``); ``audited``: those
    audited after the acceptance; ``overturned``: those whose later audit failed.
    ``overturn_rate = overturned / audited``.
    """

    reviewer: str
    decisions: int = 0
    acceptances: int = 0
    audited: int = 0
    overturned: int = 0
    overturn_rate: float = NAN

    def to_dict(self) -> dict[str, Any]:
        return {
            "reviewer": self.reviewer,
            "decisions": self.decisions,
            "acceptances": self.acceptances,
            "audited": self.audited,
            "overturned": self.overturned,
            "overturn_rate": json_number(self.overturn_rate),
        }


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """A metric over one rolling window ``[window_start, window_end)``."""

    metric: str
    window_start: datetime
    window_end: datetime
    value: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "value": json_number(self.value),
            "n": self.n,
        }


@dataclass(frozen=True, slots=True)
class Alert:
    """A run of consecutive windows with at least ``min_items`` items below target.

    ``window_start``/``window_end`` span the whole run; ``value`` is the worst window's value,
    ``n`` its item count; ``annotators`` everyone whose work is in the run.
    """

    metric: str
    window_start: datetime
    window_end: datetime
    value: float
    target: float
    n: int
    annotators: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "value": json_number(self.value),
            "target": self.target,
            "n": self.n,
            "annotators": list(self.annotators),
        }


@dataclass(frozen=True, slots=True)
class ErrorWeek:
    """Error records per category in one ISO week (Monday 00:00 UTC to the next Monday)."""

    week_start: datetime
    counts: tuple[tuple[str, int], ...]

    @property
    def week(self) -> str:
        year, week, _ = self.week_start.isocalendar()
        return f"{year}-W{week:02d}"

    def to_dict(self) -> dict[str, Any]:
        return {"week": self.week, "week_start": self.week_start.isoformat(), "counts": dict(self.counts)}
