"""The workflow state machine: stages, decisions and the transition table.

Stages run ``annotate → review → validate → done``; ``review`` and ``validate`` can each be
switched off per project. ``audit`` is independent: a sample of *done* items is audited later
(see :mod:`medlabel.workflow.sampling`); a pass leaves the item done, a fail reopens it for its
annotator.

=============  =====================  ===========================================================
stage          decision               next stage
=============  =====================  ===========================================================
annotate       submit                 review, else validate, else done (first enabled)
review         accept, edit_accept    validate if enabled, else done
review         reject                 annotate (back to the same annotator)
validate       accept                 done
validate       send_back_review       review (only when review is enabled)
validate       send_back_annotate     annotate (same annotator)
audit          pass                   done
audit          fail                   annotate (same annotator)
done           (none)                 an item leaves ``done`` only through audit
=============  =====================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from medlabel.errors import InvalidInput

__all__ = [
    "Stage",
    "Decision",
    "WorkflowConfig",
    "ALLOWED_DECISIONS",
    "REJECTIONS",
    "allowed_decisions",
    "next_stage",
]


class Stage(StrEnum):
    ANNOTATE = "annotate"
    REVIEW = "review"
    VALIDATE = "validate"
    DONE = "done"
    AUDIT = "audit"


class Decision(StrEnum):
    SUBMIT = "submit"
    ACCEPT = "accept"
    EDIT_ACCEPT = "edit_accept"
    REJECT = "reject"
    SEND_BACK_REVIEW = "send_back_review"
    SEND_BACK_ANNOTATE = "send_back_annotate"
    PASS = "pass"
    FAIL = "fail"


ALLOWED_DECISIONS: Mapping[Stage, frozenset[Decision]] = {
    Stage.ANNOTATE: frozenset({Decision.SUBMIT}),
    Stage.REVIEW: frozenset({Decision.ACCEPT, Decision.EDIT_ACCEPT, Decision.REJECT}),
    Stage.VALIDATE: frozenset({Decision.ACCEPT, Decision.SEND_BACK_REVIEW, Decision.SEND_BACK_ANNOTATE}),
    Stage.AUDIT: frozenset({Decision.PASS, Decision.FAIL}),
    Stage.DONE: frozenset(),
}

#: Decisions that send work back and so must carry at least one error record.
REJECTIONS: frozenset[Decision] = frozenset(
    {Decision.REJECT, Decision.SEND_BACK_REVIEW, Decision.SEND_BACK_ANNOTATE, Decision.FAIL}
)


def _fraction(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise InvalidInput(f"workflow {name} is {value}; expected a fraction in [0, 1]")


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    """Per-project workflow settings.

    ``audit_fraction``: share of each annotator's done items to audit. ``overlap_fraction`` and
    ``overlap_k``: share of items annotated independently by ``overlap_k`` annotators (agreement).
    ``gold_rate``: probability that the next task served is a gold (known-answer) item.
    ``lease_seconds``: how long a claimed task stays reserved. ``feedback_on_gold``: show the
    annotator the reference after a gold item. ``active_gap_seconds``: the most time one UI
    heartbeat may add to a task's active time (a longer silence counts as idle).
    """

    review: bool = True
    validate: bool = False
    audit_fraction: float = 0.0
    overlap_fraction: float = 0.0
    overlap_k: int = 2
    gold_rate: float = 0.0
    lease_seconds: int = 1800
    feedback_on_gold: bool = True
    active_gap_seconds: int = 90

    def __post_init__(self) -> None:
        _fraction("audit_fraction", self.audit_fraction)
        _fraction("overlap_fraction", self.overlap_fraction)
        _fraction("gold_rate", self.gold_rate)
        if self.overlap_k < 2:
            raise InvalidInput(f"workflow overlap_k is {self.overlap_k}; expected at least 2 annotators")
        if self.lease_seconds < 1:
            raise InvalidInput(f"workflow lease_seconds is {self.lease_seconds}; expected at least 1")
        if not 1 <= self.active_gap_seconds <= 3600:
            raise InvalidInput(
                f"workflow active_gap_seconds is {self.active_gap_seconds}; expected 1 to 3600 seconds"
            )

    def enabled(self, stage: Stage) -> bool:
        if stage is Stage.REVIEW:
            return self.review
        if stage is Stage.VALIDATE:
            return self.validate
        if stage is Stage.AUDIT:
            return self.audit_fraction > 0
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "review": self.review,
            "validate": self.validate,
            "audit_fraction": self.audit_fraction,
            "overlap_fraction": self.overlap_fraction,
            "overlap_k": self.overlap_k,
            "gold_rate": self.gold_rate,
            "lease_seconds": self.lease_seconds,
            "feedback_on_gold": self.feedback_on_gold,
            "active_gap_seconds": self.active_gap_seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkflowConfig:
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise InvalidInput(f"workflow config has unknown key(s) {extra}; expected {sorted(known)}")
        return cls(**dict(d))


def allowed_decisions(config: WorkflowConfig, stage: Stage) -> frozenset[Decision]:
    """Decisions possible at ``stage`` under ``config`` (``send_back_review`` needs review on)."""
    out = ALLOWED_DECISIONS[stage]
    if stage is Stage.VALIDATE and not config.review:
        out = out - {Decision.SEND_BACK_REVIEW}
    return out


def _after_annotate(config: WorkflowConfig) -> Stage:
    if config.review:
        return Stage.REVIEW
    if config.validate:
        return Stage.VALIDATE
    return Stage.DONE


def next_stage(config: WorkflowConfig, current: Stage, decision: Decision) -> Stage:
    """The stage an item moves to when ``decision`` is taken at ``current``.

    Raises InvalidInput for a stage switched off in ``config`` or a decision not allowed there.
    """
    if current in (Stage.REVIEW, Stage.VALIDATE) and not config.enabled(current):
        raise InvalidInput(
            f"stage {current.value!r} is disabled in this project's workflow; no decision can be taken there",
            detail={"stage": current.value, "decision": decision.value},
        )
    allowed = allowed_decisions(config, current)
    if decision not in allowed:
        raise InvalidInput(
            f"decision {decision.value!r} is not allowed at stage {current.value!r}; expected one of "
            f"{sorted(d.value for d in allowed)}",
            detail={"stage": current.value, "decision": decision.value, "allowed": sorted(allowed)},
        )
    if current is Stage.ANNOTATE:
        return _after_annotate(config)
    if current is Stage.REVIEW:
        if decision is Decision.REJECT:
            return Stage.ANNOTATE
        return Stage.VALIDATE if config.validate else Stage.DONE
    if current is Stage.VALIDATE:
        if decision is Decision.ACCEPT:
            return Stage.DONE
        return Stage.REVIEW if decision is Decision.SEND_BACK_REVIEW else Stage.ANNOTATE
    # audit
    return Stage.DONE if decision is Decision.PASS else Stage.ANNOTATE
