"""Who may act, rework routing, rejections needing error records, error taxonomy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from medlabel.errors import Forbidden, InvalidInput
from medlabel.workflow.errors_taxonomy import (
    DEFAULT_CATEGORIES,
    ErrorLocation,
    ErrorRecord,
    ErrorTaxonomy,
    Severity,
)
from medlabel.workflow.rules import (
    HistoryEvent,
    can_act,
    check_decision,
    decide,
    replay,
    require_can_act,
)
from medlabel.workflow.stages import REJECTIONS, Decision, Stage, WorkflowConfig

T0 = datetime(2026, 11, 29, 10, tzinfo=UTC)
FULL = WorkflowConfig(review=True, validate=True, audit_fraction=0.1)
ERR = ErrorRecord(
    "boundary",
    Severity.MAJOR,
    "edge too loose",
    annotation_id="a1",
    location=ErrorLocation(12.5, 40.0, frame=3),
)


def ev(user: str, stage: Stage, decision: Decision, minute: int = 0, errors: tuple = ()) -> HistoryEvent:
    return HistoryEvent(user, stage, decision, T0 + timedelta(minutes=minute), errors)


SUBMITTED = [ev("ann", Stage.ANNOTATE, Decision.SUBMIT)]
REVIEWED = [*SUBMITTED, ev("rev", Stage.REVIEW, Decision.ACCEPT, 1)]
VALIDATED = [*REVIEWED, ev("val", Stage.VALIDATE, Decision.ACCEPT, 2)]


@pytest.mark.parametrize(
    "history, stage, user, allowed",
    [
        ([], Stage.ANNOTATE, "anyone", True),
        (SUBMITTED, Stage.REVIEW, "ann", False),  # self-review
        (SUBMITTED, Stage.REVIEW, "rev", True),
        (REVIEWED, Stage.VALIDATE, "ann", False),
        (REVIEWED, Stage.VALIDATE, "rev", False),
        (REVIEWED, Stage.VALIDATE, "val", True),
        (VALIDATED, Stage.AUDIT, "ann", False),
        (VALIDATED, Stage.AUDIT, "rev", False),
        (VALIDATED, Stage.AUDIT, "val", False),
        (VALIDATED, Stage.AUDIT, "aud", True),
        (VALIDATED, Stage.DONE, "aud", False),
        # after a rejection the item goes back to its annotator only
        ([*SUBMITTED, ev("rev", Stage.REVIEW, Decision.REJECT, 1, (ERR,))], Stage.ANNOTATE, "ann", True),
        ([*SUBMITTED, ev("rev", Stage.REVIEW, Decision.REJECT, 1, (ERR,))], Stage.ANNOTATE, "other", False),
    ],
)
def test_can_act(history: list[HistoryEvent], stage: Stage, user: str, allowed: bool) -> None:
    assert can_act(user, history, stage) is allowed
    if not allowed:
        with pytest.raises(Forbidden) as exc:
            require_can_act(user, history, stage)
        assert exc.value.status == 403 and stage.value in exc.value.message


def test_self_review_is_forbidden_through_decide() -> None:
    with pytest.raises(Forbidden, match="nobody reviews their own work"):
        decide(FULL, SUBMITTED, user="ann", stage=Stage.REVIEW, decision=Decision.ACCEPT, at=T0)


@pytest.mark.parametrize("decision", sorted(REJECTIONS))
def test_rejection_without_error_records_is_refused(decision: Decision) -> None:
    with pytest.raises(InvalidInput, match="no error record") as exc:
        check_decision(decision, [])
    assert exc.value.status == 422
    check_decision(decision, [ERR])  # with one it is fine


def test_rejection_via_decide_needs_errors_and_returns_to_same_annotator() -> None:
    with pytest.raises(InvalidInput, match="no error record"):
        decide(FULL, SUBMITTED, user="rev", stage=Stage.REVIEW, decision=Decision.REJECT, at=T0)
    t = decide(FULL, SUBMITTED, user="rev", stage=Stage.REVIEW, decision=Decision.REJECT, at=T0, errors=[ERR])
    assert (t.from_stage, t.to_stage, t.assignee) == (Stage.REVIEW, Stage.ANNOTATE, "ann")
    assert t.event.errors == (ERR,) and t.event.user == "rev"


def test_validator_send_backs_route_to_the_right_people() -> None:
    to_review = decide(
        FULL,
        REVIEWED,
        user="val",
        stage=Stage.VALIDATE,
        decision=Decision.SEND_BACK_REVIEW,
        at=T0,
        errors=[ERR],
    )
    assert (to_review.to_stage, to_review.assignee) == (Stage.REVIEW, "rev")
    to_ann = decide(
        FULL,
        REVIEWED,
        user="val",
        stage=Stage.VALIDATE,
        decision=Decision.SEND_BACK_ANNOTATE,
        at=T0,
        errors=[ERR],
    )
    assert (to_ann.to_stage, to_ann.assignee) == (Stage.ANNOTATE, "ann")


def test_audit_fail_reopens_for_annotator_and_pass_keeps_done() -> None:
    fail = decide(FULL, VALIDATED, user="aud", stage=Stage.AUDIT, decision=Decision.FAIL, at=T0, errors=[ERR])
    assert (fail.to_stage, fail.assignee) == (Stage.ANNOTATE, "ann")
    ok = decide(FULL, VALIDATED, user="aud", stage=Stage.AUDIT, decision=Decision.PASS, at=T0)
    assert (ok.to_stage, ok.assignee) == (Stage.DONE, None)


def test_errors_must_come_from_the_taxonomy() -> None:
    odd = ErrorRecord("laterality", Severity.CRITICAL)
    with pytest.raises(InvalidInput, match="not in the project's taxonomy"):
        check_decision(Decision.REJECT, [odd])
    check_decision(Decision.REJECT, [odd], ErrorTaxonomy().extend("laterality"))
    assert ErrorTaxonomy().categories == DEFAULT_CATEGORIES
    assert DEFAULT_CATEGORIES == (
        "mislabel",
        "omission",
        "false_positive",
        "boundary",
        "attribute",
        "inconsistency",
        "other",
    )
    with pytest.raises(InvalidInput, match="already in the taxonomy"):
        ErrorTaxonomy(("boundary",))
    with pytest.raises(InvalidInput, match="lower-case"):
        ErrorTaxonomy(("Bad Name",))


def test_error_record_round_trip_and_bad_severity() -> None:
    assert ErrorRecord.from_dict(ERR.to_dict()) == ERR
    with pytest.raises(InvalidInput, match="minor, major, critical"):
        ErrorRecord.from_dict({"category": "other", "severity": "huge"})


def test_history_round_trip_and_replay() -> None:
    hist = [
        ev("ann", Stage.ANNOTATE, Decision.SUBMIT),
        ev("rev", Stage.REVIEW, Decision.REJECT, 1, (ERR,)),
        ev("ann", Stage.ANNOTATE, Decision.SUBMIT, 2),
        ev("rev", Stage.REVIEW, Decision.EDIT_ACCEPT, 3),
        ev("val", Stage.VALIDATE, Decision.ACCEPT, 4),
    ]
    assert [HistoryEvent.from_dict(e.to_dict()) for e in hist] == hist
    assert replay(FULL, hist) is Stage.DONE
    assert replay(FULL, [*hist, ev("aud", Stage.AUDIT, Decision.FAIL, 5, (ERR,))]) is Stage.ANNOTATE
    with pytest.raises(InvalidInput, match="history\\[1\\]"):
        replay(FULL, [hist[0], hist[4]])


def test_lease_expiry() -> None:
    from medlabel.workflow.rules import lease_expired, lease_expires_at

    cfg = WorkflowConfig(lease_seconds=600)
    assert lease_expires_at(T0, cfg) == T0 + timedelta(minutes=10)
    assert not lease_expired(T0, T0 + timedelta(seconds=599), cfg)
    assert lease_expired(T0, T0 + timedelta(seconds=600), cfg)
