"""Typed input records for quality reports.

The quality service loads these from the database (answers, shapes, masks, gold scores, review
decisions, error records, time sheets) and hands them to :func:`medlabel.quality.report.build_report`.
Every record is a frozen dataclass that validates itself on construction, so a report is never
built from half-valid data. All times must be timezone-aware; they are converted to UTC.

The stage and decision vocabularies are those of :mod:`medlabel.workflow.stages`
(``tests/quality/test_report_records.py`` checks they stay in step).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlabel.errors import InvalidInput
from medlabel.quality.metrics import Box, Polygon

__all__ = [
    "ACCEPTANCES",
    "DECISIONS_BY_STAGE",
    "REJECTIONS",
    "SEVERITIES",
    "ClassificationRating",
    "ErrorRecord",
    "GoldOutcome",
    "MaskRecord",
    "ReportInput",
    "ReviewOutcome",
    "ShapeRecord",
    "Targets",
    "WorkRecord",
    "utc",
]

#: Decisions each reviewing stage allows (mirrors ``medlabel.workflow.stages.ALLOWED_DECISIONS``).
DECISIONS_BY_STAGE: dict[str, frozenset[str]] = {
    "review": frozenset({"accept", "edit_accept", "reject"}),
    "validate": frozenset({"accept", "send_back_review", "send_back_annotate"}),
    "audit": frozenset({"pass", "fail"}),
}
#: Decisions that send the item back to its annotator (count towards rework).
REJECTIONS: frozenset[str] = frozenset({"reject", "send_back_annotate", "fail"})
#: Decisions by which a reviewer or validator lets the annotator's work through.
ACCEPTANCES: frozenset[str] = frozenset({"accept", "edit_accept"})
#: Error severities (mirrors ``medlabel.workflow.errors_taxonomy.Severity``), mildest first.
SEVERITIES: tuple[str, ...] = ("minor", "major", "critical")
_WORK_STAGES = frozenset({"annotate", "review", "validate", "audit"})


def utc(value: datetime, what: str) -> datetime:
    """``value`` in UTC; a naive datetime (no time zone) raises ``InvalidInput``."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime; got {value!r:.80}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"{what} is a naive datetime ({value.isoformat()}); expected a timezone-aware one (UTC)",
            detail={"value": value.isoformat()},
        )
    return value.astimezone(UTC)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string; got {value!r:.80}")
    return value


def _set_time(obj: Any, field: str, what: str) -> None:
    object.__setattr__(obj, field, utc(getattr(obj, field), what))


@dataclass(frozen=True, slots=True)
class ClassificationRating:
    """One annotator's answer to one classification question on one item.

    Attributes:
        item_id: the item (overlap or gold item) that was labelled.
        question: the question or classification label group, e.g. ``"finding"``.
        annotator: who answered.
        value: the chosen class (str, int or bool; not ``None``: leave a skipped question out).
        at: when the answer was submitted; the latest answer per (item, question, annotator) wins.
    """

    item_id: str
    question: str
    annotator: str
    value: Hashable
    at: datetime

    def __post_init__(self) -> None:
        _name(self.item_id, "rating item_id")
        _name(self.question, "rating question")
        _name(self.annotator, "rating annotator")
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            raise InvalidInput(
                f"rating of {self.annotator!r} on item {self.item_id!r} has no value; leave skipped "
                f"questions out instead of sending None/NaN"
            )
        try:
            hash(self.value)
        except TypeError as exc:
            raise InvalidInput(
                f"rating value must be hashable (str, int, bool); got {self.value!r:.80}"
            ) from exc
        _set_time(self, "at", "rating time")


@dataclass(frozen=True, slots=True)
class ShapeRecord:
    """One box or polygon drawn by one annotator on one item (2-D image pixels)."""

    item_id: str
    annotator: str
    label: str
    shape: Box | Polygon
    at: datetime

    def __post_init__(self) -> None:
        _name(self.item_id, "shape item_id")
        _name(self.annotator, "shape annotator")
        _name(self.label, "shape label")
        if not isinstance(self.shape, Box | Polygon):
            raise InvalidInput(f"shape must be a Box or Polygon; got {type(self.shape).__name__}")
        _set_time(self, "at", "shape time")


@dataclass(frozen=True, slots=True)
class MaskRecord:
    """One annotator's binary mask of one class on one item (2-D or 3-D, numpy axis order).

    Attributes:
        spacing: mm per axis in numpy order (z, y, x), or ``None`` for voxels.
        at: when the mask was last saved.
    """

    item_id: str
    annotator: str
    label: str
    mask: NDArray[np.bool_]
    spacing: tuple[float, ...] | None
    at: datetime

    def __post_init__(self) -> None:
        _name(self.item_id, "mask item_id")
        _name(self.annotator, "mask annotator")
        _name(self.label, "mask label")
        arr = np.asarray(self.mask)
        if arr.ndim not in (2, 3):
            raise InvalidInput(
                f"mask of {self.annotator!r} on item {self.item_id!r} must be 2-D or 3-D; got shape {arr.shape}"
            )
        if arr.dtype != np.bool_:
            if not np.issubdtype(arr.dtype, np.number) or np.any((arr != 0) & (arr != 1)):
                raise InvalidInput(f"mask must be boolean or 0/1; got dtype {arr.dtype} with other values")
            arr = arr != 0
        object.__setattr__(self, "mask", arr)
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != arr.ndim or not all(math.isfinite(s) and s > 0 for s in sp):
                raise InvalidInput(
                    f"mask spacing must be {arr.ndim} positive mm values (numpy axis order); got {self.spacing!r}"
                )
            object.__setattr__(self, "spacing", sp)
        _set_time(self, "at", "mask time")


@dataclass(frozen=True, slots=True)
class GoldOutcome:
    """An annotator's score on a gold (known-answer) item, e.g. from ``workflow.gold.score_gold``."""

    item_id: str
    annotator: str
    score: float
    correct: bool
    at: datetime

    def __post_init__(self) -> None:
        _name(self.item_id, "gold item_id")
        _name(self.annotator, "gold annotator")
        if not isinstance(self.score, numbers.Real) or not 0.0 <= float(self.score) <= 1.0:
            raise InvalidInput(f"gold score must be a number in [0, 1]; got {self.score!r}")
        object.__setattr__(self, "score", float(self.score))
        _set_time(self, "at", "gold time")


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    """A decision taken at ``review``, ``validate`` or ``audit`` on an item of ``annotator``."""

    item_id: str
    annotator: str
    reviewer: str
    stage: str
    decision: str
    at: datetime

    def __post_init__(self) -> None:
        _name(self.item_id, "review item_id")
        _name(self.annotator, "review annotator")
        _name(self.reviewer, "review reviewer")
        allowed = DECISIONS_BY_STAGE.get(self.stage)
        if allowed is None:
            raise InvalidInput(
                f"review stage {self.stage!r} is not one of {sorted(DECISIONS_BY_STAGE)}",
                detail={"stage": self.stage},
            )
        if self.decision not in allowed:
            raise InvalidInput(
                f"decision {self.decision!r} is not allowed at stage {self.stage!r}; expected one of {sorted(allowed)}",
                detail={"stage": self.stage, "decision": self.decision},
            )
        _set_time(self, "at", "review time")


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One error a reviewer, validator or auditor recorded against an annotator's item."""

    item_id: str
    annotator: str
    reviewer: str
    stage: str
    category: str
    severity: str
    at: datetime

    def __post_init__(self) -> None:
        _name(self.item_id, "error item_id")
        _name(self.annotator, "error annotator")
        _name(self.reviewer, "error reviewer")
        _name(self.category, "error category")
        if self.stage not in DECISIONS_BY_STAGE:
            raise InvalidInput(f"error stage {self.stage!r} is not one of {sorted(DECISIONS_BY_STAGE)}")
        if self.severity not in SEVERITIES:
            raise InvalidInput(f"error severity {self.severity!r} is not one of {list(SEVERITIES)}")
        _set_time(self, "at", "error time")


@dataclass(frozen=True, slots=True)
class WorkRecord:
    """Time spent by ``annotator`` (the worker: annotator, reviewer...) on one item at one stage."""

    item_id: str
    annotator: str
    stage: str
    active_seconds: float
    annotations: int
    submitted_at: datetime

    def __post_init__(self) -> None:
        _name(self.item_id, "work item_id")
        _name(self.annotator, "work annotator")
        if self.stage not in _WORK_STAGES:
            raise InvalidInput(f"work stage {self.stage!r} is not one of {sorted(_WORK_STAGES)}")
        secs = self.active_seconds
        if not isinstance(secs, numbers.Real) or not math.isfinite(float(secs)) or secs < 0:
            raise InvalidInput(f"active_seconds must be a finite number >= 0; got {secs!r}")
        object.__setattr__(self, "active_seconds", float(secs))
        if not isinstance(self.annotations, numbers.Integral) or self.annotations < 0:
            raise InvalidInput(f"annotations must be a whole number >= 0; got {self.annotations!r}")
        _set_time(self, "submitted_at", "work submitted_at")


@dataclass(frozen=True, slots=True)
class Targets:
    """A project's quality targets and the alert rule's parameters.

    Attributes:
        kappa: least acceptable classification agreement (headline kappa, see the docs).
        dice: least acceptable mean pairwise Dice between annotators' masks.
        window_days: length of the rolling windows the alerts look at.
        min_items: a window needs at least this many overlap items to raise an alert.
        surface_tolerance_mm: tolerance of the surface Dice.
    """

    kappa: float = 0.8
    dice: float = 0.8
    window_days: int = 7
    min_items: int = 10
    surface_tolerance_mm: float = 2.0

    def __post_init__(self) -> None:
        for name in ("kappa", "dice"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or not -1.0 <= float(v) <= 1.0:
                raise InvalidInput(f"target {name} must be a number in [-1, 1]; got {v!r}")
        if not isinstance(self.window_days, numbers.Integral) or self.window_days < 1:
            raise InvalidInput(f"window_days must be a whole number of days >= 1; got {self.window_days!r}")
        if not isinstance(self.min_items, numbers.Integral) or self.min_items < 1:
            raise InvalidInput(f"min_items must be a whole number >= 1; got {self.min_items!r}")
        tol = self.surface_tolerance_mm
        if not isinstance(tol, numbers.Real) or not math.isfinite(float(tol)) or tol < 0:
            raise InvalidInput(f"surface_tolerance_mm must be a finite distance >= 0; got {tol!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kappa": float(self.kappa),
            "dice": float(self.dice),
            "window_days": int(self.window_days),
            "min_items": int(self.min_items),
            "surface_tolerance_mm": float(self.surface_tolerance_mm),
        }


def _records(value: Sequence[Any], kind: type, what: str) -> tuple[Any, ...]:
    out = tuple(value)
    for i, r in enumerate(out):
        if not isinstance(r, kind):
            raise InvalidInput(f"{what}[{i}] must be a {kind.__name__}; got {type(r).__name__}")
    return out


@dataclass(frozen=True, slots=True)
class ReportInput:
    """Everything a report is computed from; each field may be empty."""

    ratings: Sequence[ClassificationRating] = ()
    shapes: Sequence[ShapeRecord] = ()
    masks: Sequence[MaskRecord] = ()
    gold: Sequence[GoldOutcome] = ()
    reviews: Sequence[ReviewOutcome] = ()
    errors: Sequence[ErrorRecord] = ()
    work: Sequence[WorkRecord] = ()

    def __post_init__(self) -> None:
        for field, kind in (
            ("ratings", ClassificationRating),
            ("shapes", ShapeRecord),
            ("masks", MaskRecord),
            ("gold", GoldOutcome),
            ("reviews", ReviewOutcome),
            ("errors", ErrorRecord),
            ("work", WorkRecord),
        ):
            object.__setattr__(self, field, _records(getattr(self, field), kind, field))
