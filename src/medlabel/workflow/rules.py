"""Who may act on an item, and what a decision must carry.

Rules:

* **No one checks their own work.** A reviewer must not have annotated the item; a validator must
  not have annotated or reviewed it; an auditor must not have touched it at all (any event).
* **Rework goes back to its author.** After a rejection the item returns to the annotator who last
  submitted it; after ``send_back_review`` to the reviewer who last reviewed it.
* **A rejection explains itself.** ``reject``, ``send_back_*`` and audit ``fail`` need at least one
  :class:`~medlabel.workflow.errors_taxonomy.ErrorRecord` from the project's taxonomy.

The history of an item is the ordered list of :class:`HistoryEvent`; the service stores it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from medlabel.errors import Forbidden, InvalidInput
from medlabel.workflow.errors_taxonomy import ErrorRecord, ErrorTaxonomy
from medlabel.workflow.stages import REJECTIONS, Decision, Stage, WorkflowConfig, next_stage

__all__ = [
    "HistoryEvent",
    "Transition",
    "annotator_of",
    "reviewer_of",
    "touched_by",
    "why_cannot_act",
    "can_act",
    "require_can_act",
    "check_decision",
    "decide",
    "replay",
    "lease_expires_at",
    "lease_expired",
]


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One decision taken on an item: who, at which stage, what, when, and the error records."""

    user: str
    stage: Stage
    decision: Decision
    at: datetime
    errors: tuple[ErrorRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "stage": self.stage.value,
            "decision": self.decision.value,
            "at": self.at.isoformat(),
            "errors": [e.to_dict() for e in self.errors],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HistoryEvent:
        try:
            return cls(
                user=str(d["user"]),
                stage=Stage(d["stage"]),
                decision=Decision(d["decision"]),
                at=datetime.fromisoformat(str(d["at"])),
                errors=tuple(ErrorRecord.from_dict(e) for e in d.get("errors", ())),
            )
        except (KeyError, ValueError) as exc:
            raise InvalidInput(f"history event {dict(d)!r:.160} is malformed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of :func:`decide`: the new stage, who the item goes to (None = the pool), and the
    event to append to the history."""

    from_stage: Stage
    to_stage: Stage
    assignee: str | None
    event: HistoryEvent


def _last_user(history: Sequence[HistoryEvent], stage: Stage) -> str | None:
    for e in reversed(history):
        if e.stage is stage:
            return e.user
    return None


def annotator_of(history: Sequence[HistoryEvent]) -> str | None:
    """The user who last submitted the item at ``annotate`` (None if never submitted)."""
    return _last_user(history, Stage.ANNOTATE)


def reviewer_of(history: Sequence[HistoryEvent]) -> str | None:
    """The user who last reviewed the item (None if never reviewed)."""
    return _last_user(history, Stage.REVIEW)


def touched_by(history: Sequence[HistoryEvent]) -> frozenset[str]:
    """Everyone with any event on the item."""
    return frozenset(e.user for e in history)


def why_cannot_act(user: str, history: Sequence[HistoryEvent], stage: Stage) -> str | None:
    """``None`` if ``user`` may act at ``stage`` on this item, else the rule that forbids it."""
    annotators = {e.user for e in history if e.stage is Stage.ANNOTATE}
    reviewers = {e.user for e in history if e.stage is Stage.REVIEW}
    if stage is Stage.ANNOTATE:
        owner = annotator_of(history)
        if owner is not None and owner != user:
            return (
                f"the item is rework for its annotator {owner!r}; rejected items return to the same annotator"
            )
        return None
    if stage is Stage.REVIEW:
        if user in annotators:
            return f"user {user!r} annotated this item; nobody reviews their own work"
        return None
    if stage is Stage.VALIDATE:
        if user in annotators or user in reviewers:
            role = "annotated" if user in annotators else "reviewed"
            return f"user {user!r} {role} this item; nobody validates their own work"
        return None
    if stage is Stage.AUDIT:
        if user in touched_by(history):
            return f"user {user!r} worked on this item; auditors must not have touched it"
        return None
    return "the item is done; nobody acts on it except through an audit"


def can_act(user: str, history: Sequence[HistoryEvent], stage: Stage) -> bool:
    return why_cannot_act(user, history, stage) is None


def require_can_act(user: str, history: Sequence[HistoryEvent], stage: Stage) -> None:
    """Raise Forbidden (403) with the rule when ``user`` may not act at ``stage``."""
    why = why_cannot_act(user, history, stage)
    if why is not None:
        raise Forbidden(
            f"cannot act at stage {stage.value!r}: {why}", detail={"stage": stage.value, "user": user}
        )


def check_decision(
    decision: Decision, errors: Sequence[ErrorRecord], taxonomy: ErrorTaxonomy | None = None
) -> None:
    """A rejection needs ≥ 1 error record; every record must be in the taxonomy (defaults if None)."""
    if decision in REJECTIONS and not errors:
        raise InvalidInput(
            f"decision {decision.value!r} sends work back but carries no error record; expected at least one "
            "(category, severity, optional location and comment) so the annotator knows what to fix",
            detail={"decision": decision.value, "errors": 0},
        )
    tax = taxonomy or ErrorTaxonomy()
    for e in errors:
        e.check(tax)


def decide(
    config: WorkflowConfig,
    history: Sequence[HistoryEvent],
    *,
    user: str,
    stage: Stage,
    decision: Decision,
    at: datetime,
    errors: Sequence[ErrorRecord] = (),
    taxonomy: ErrorTaxonomy | None = None,
) -> Transition:
    """Check and apply one decision: who may act, what the decision needs, where the item goes.

    Raises Forbidden when ``user`` may not act, InvalidInput for a disallowed decision or a
    rejection without error records.
    """
    require_can_act(user, history, stage)
    to = next_stage(config, stage, decision)
    check_decision(decision, errors, taxonomy)
    event = HistoryEvent(user, stage, decision, at, tuple(errors))
    assignee: str | None = None
    if to is Stage.ANNOTATE:
        assignee = annotator_of(history) or (user if stage is Stage.ANNOTATE else None)
    elif to is Stage.REVIEW and decision is Decision.SEND_BACK_REVIEW:
        assignee = reviewer_of(history)
    return Transition(stage, to, assignee, event)


def replay(config: WorkflowConfig, history: Sequence[HistoryEvent]) -> Stage:
    """The stage an item is in after ``history`` (starting at annotate); checks each step."""
    stage = Stage.ANNOTATE
    for i, e in enumerate(history):
        if e.stage is Stage.AUDIT and stage is Stage.DONE:
            stage = Stage.AUDIT
        if e.stage is not stage:
            raise InvalidInput(
                f"history[{i}] is a {e.decision.value!r} at stage {e.stage.value!r}, but the item was at "
                f"{stage.value!r}",
            )
        stage = next_stage(config, stage, e.decision)
    return stage


def lease_expires_at(claimed_at: datetime, config: WorkflowConfig) -> datetime:
    """When a task claimed at ``claimed_at`` returns to the pool (``config.lease_seconds`` later)."""
    return claimed_at + timedelta(seconds=config.lease_seconds)


def lease_expired(claimed_at: datetime, now: datetime, config: WorkflowConfig) -> bool:
    """True once ``now`` has reached the lease's end; the service then frees the task."""
    return now >= lease_expires_at(claimed_at, config)
