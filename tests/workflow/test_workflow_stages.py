"""The state machine, as a full table: every stage x decision under every stage configuration."""

from __future__ import annotations

import itertools

import pytest

from medlabel.errors import InvalidInput
from medlabel.workflow.stages import (
    ALLOWED_DECISIONS,
    Decision,
    Stage,
    WorkflowConfig,
    allowed_decisions,
    next_stage,
)

A, R, V, D, AU = Stage.ANNOTATE, Stage.REVIEW, Stage.VALIDATE, Stage.DONE, Stage.AUDIT
X = None  # not allowed

# (review on, validate on) -> {(stage, decision): next stage or X}
EXPECTED: dict[tuple[bool, bool], dict[tuple[Stage, Decision], Stage | None]] = {}


def _table(review: bool, validate: bool) -> dict[tuple[Stage, Decision], Stage | None]:
    after_annotate = R if review else (V if validate else D)
    after_review = V if validate else D
    t: dict[tuple[Stage, Decision], Stage | None] = {}
    for s, d in itertools.product(Stage, Decision):
        t[(s, d)] = X
    t[(A, Decision.SUBMIT)] = after_annotate
    if review:
        t[(R, Decision.ACCEPT)] = after_review
        t[(R, Decision.EDIT_ACCEPT)] = after_review
        t[(R, Decision.REJECT)] = A
    if validate:
        t[(V, Decision.ACCEPT)] = D
        t[(V, Decision.SEND_BACK_REVIEW)] = R if review else X
        t[(V, Decision.SEND_BACK_ANNOTATE)] = A
    t[(AU, Decision.PASS)] = D
    t[(AU, Decision.FAIL)] = A
    return t


CASES = [
    (review, validate, stage, decision, expected)
    for review, validate in itertools.product([True, False], repeat=2)
    for (stage, decision), expected in _table(review, validate).items()
]


@pytest.mark.parametrize(
    "review, validate, stage, decision, expected",
    CASES,
    ids=[f"r{int(c[0])}v{int(c[1])}-{c[2].value}-{c[3].value}" for c in CASES],
)
def test_transition_table(
    review: bool, validate: bool, stage: Stage, decision: Decision, expected: Stage | None
) -> None:
    config = WorkflowConfig(review=review, validate=validate)
    if expected is None:
        with pytest.raises(InvalidInput) as exc:
            next_stage(config, stage, decision)
        assert stage.value in exc.value.message and (
            decision.value in exc.value.message or "disabled" in exc.value.message
        )
    else:
        assert next_stage(config, stage, decision) is expected


def test_table_covers_every_pair() -> None:
    assert len(CASES) == 4 * len(Stage) * len(Decision)


def test_allowed_decisions_per_stage_match_the_brief() -> None:
    assert ALLOWED_DECISIONS[R] == {Decision.ACCEPT, Decision.EDIT_ACCEPT, Decision.REJECT}
    assert ALLOWED_DECISIONS[V] == {Decision.ACCEPT, Decision.SEND_BACK_REVIEW, Decision.SEND_BACK_ANNOTATE}
    assert ALLOWED_DECISIONS[AU] == {Decision.PASS, Decision.FAIL}
    assert ALLOWED_DECISIONS[D] == frozenset()
    no_review = WorkflowConfig(review=False, validate=True)
    assert Decision.SEND_BACK_REVIEW not in allowed_decisions(no_review, V)


def test_every_path_ends_in_done() -> None:
    for review, validate in itertools.product([True, False], repeat=2):
        config = WorkflowConfig(review=review, validate=validate)
        stage, steps = A, 0
        while stage is not D:
            decision = sorted(
                allowed_decisions(config, stage)
                - {Decision.REJECT, Decision.SEND_BACK_ANNOTATE, Decision.SEND_BACK_REVIEW}
            )[0]
            stage = next_stage(config, stage, decision)
            steps += 1
        assert steps == 1 + review + validate


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"audit_fraction": 1.5}, "audit_fraction"),
        ({"overlap_fraction": -0.1}, "overlap_fraction"),
        ({"gold_rate": 2}, "gold_rate"),
        ({"overlap_k": 1}, "at least 2"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"active_gap_seconds": 0}, "active_gap_seconds is 0"),
        ({"active_gap_seconds": 3601}, "active_gap_seconds is 3601"),
    ],
)
def test_config_is_checked(kwargs: dict, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        WorkflowConfig(**kwargs)


def test_config_round_trips_and_refuses_unknown_keys() -> None:
    c = WorkflowConfig(
        review=True,
        validate=True,
        audit_fraction=0.1,
        overlap_fraction=0.2,
        overlap_k=3,
        gold_rate=0.05,
        lease_seconds=600,
        feedback_on_gold=False,
        active_gap_seconds=45,
    )
    assert WorkflowConfig.from_dict(c.to_dict()) == c
    with pytest.raises(InvalidInput, match="unknown key"):
        WorkflowConfig.from_dict({"reviews": True})
    assert c.enabled(AU) and not WorkflowConfig().enabled(AU)
