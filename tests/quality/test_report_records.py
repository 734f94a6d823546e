"""Input records of the quality report: validation, vocabularies in step with the workflow, and
the ISO-week helper checked against ``datetime.strptime``'s ISO directives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from medlabel.errors import InvalidInput
from medlabel.quality.metrics import Box
from medlabel.quality.records import (
    ACCEPTANCES,
    DECISIONS_BY_STAGE,
    REJECTIONS,
    SEVERITIES,
    ClassificationRating,
    ErrorRecord,
    GoldOutcome,
    MaskRecord,
    ReportInput,
    ReviewOutcome,
    ShapeRecord,
    Targets,
    WorkRecord,
)
from medlabel.quality.report import iso_week_period, rolling_windows

T = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_vocabularies_match_the_workflow() -> None:
    from medlabel.workflow.errors_taxonomy import Severity
    from medlabel.workflow.stages import ALLOWED_DECISIONS, Stage
    from medlabel.workflow.stages import REJECTIONS as WF_REJECTIONS

    for stage, decisions in DECISIONS_BY_STAGE.items():
        assert decisions == {d.value for d in ALLOWED_DECISIONS[Stage(stage)]}
    # Rework counts the rejections that go back to the annotator (send_back_review goes to review).
    assert REJECTIONS == {d.value for d in WF_REJECTIONS} - {"send_back_review"}
    assert ACCEPTANCES <= DECISIONS_BY_STAGE["review"] | DECISIONS_BY_STAGE["validate"]
    assert SEVERITIES == tuple(s.value for s in Severity)


def test_times_are_converted_to_utc_and_naive_ones_refused() -> None:
    cet = timezone(timedelta(hours=1))
    r = ClassificationRating("i1", "q", "ann", "a", datetime(2026, 11, 23, 10, 0, tzinfo=cet))
    assert r.at == T and r.at.tzinfo == UTC
    with pytest.raises(InvalidInput, match="naive"):
        ClassificationRating("i1", "q", "ann", "a", datetime(2026, 11, 23))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClassificationRating("i1", "q", "ann", None, T),
        lambda: ClassificationRating("i1", "q", "ann", float("nan"), T),
        lambda: ClassificationRating("i1", "q", "ann", ["a"], T),
        lambda: ClassificationRating("", "q", "ann", "a", T),
        lambda: ShapeRecord("i1", "ann", "x", (0, 0, 1, 1), T),  # type: ignore[arg-type]
        lambda: MaskRecord("i1", "ann", "x", np.zeros(4), None, T),
        lambda: MaskRecord("i1", "ann", "x", np.full((2, 2), 2), None, T),
        lambda: MaskRecord("i1", "ann", "x", np.zeros((2, 2)), (1.0,), T),
        lambda: GoldOutcome("i1", "ann", 1.5, True, T),
        lambda: ReviewOutcome("i1", "ann", "rev", "annotate", "submit", T),
        lambda: ReviewOutcome("i1", "ann", "rev", "review", "pass", T),
        lambda: ErrorRecord("i1", "ann", "rev", "review", "omission", "fatal", T),
        lambda: WorkRecord("i1", "ann", "annotate", -1.0, 1, T),
        lambda: WorkRecord("i1", "ann", "annotate", 1.0, 1.5, T),  # type: ignore[arg-type]
        lambda: WorkRecord("i1", "ann", "done", 1.0, 1, T),
        lambda: Targets(kappa=1.5),
        lambda: Targets(window_days=0),
        lambda: Targets(min_items=0),
        lambda: Targets(surface_tolerance_mm=-1),
        lambda: ReportInput(ratings=[GoldOutcome("i1", "ann", 1.0, True, T)]),  # type: ignore[list-item]
    ],
)
def test_bad_records_raise_invalid_input(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput):
        make()


def test_masks_are_normalised_to_bool_and_tuple_spacing() -> None:
    m = MaskRecord("i1", "ann", "liver", np.array([[0, 1], [1, 0]], dtype=np.uint8), [2, 1], T)
    assert m.mask.dtype == np.bool_ and m.spacing == (2.0, 1.0)
    s = ShapeRecord("i1", "ann", "nodule", Box(0, 0, 2, 2), T)
    assert s.shape.x1 == 2


@pytest.mark.parametrize("week", ["2026-W01", "2026-W48", "2026-W53", "2020-W53", "2027-W01", "2025-W01"])
def test_iso_week_period_matches_strptime(week: str) -> None:
    start, end = iso_week_period(week)
    expected = datetime.strptime(week + "-1", "%G-W%V-%u").replace(tzinfo=UTC)
    assert start == expected
    assert end - start == timedelta(days=7)
    assert start.weekday() == 0 and start.tzinfo == UTC
    assert start.isocalendar()[:2] == (int(week[:4]), int(week[-2:]))


@pytest.mark.parametrize(
    "bad", ["2025-W53", "2026-W00", "2026-W54", "2026W48", "2026-w48", "", "2026-W4", None, 2026]
)
def test_iso_week_period_rejects_bad_strings(bad: object) -> None:
    with pytest.raises(InvalidInput):
        iso_week_period(bad)  # type: ignore[arg-type]


def test_rolling_windows() -> None:
    start = datetime(2026, 11, 2, tzinfo=UTC)
    w = rolling_windows(start, start + timedelta(days=21), 7)
    assert len(w) == 15
    assert w[0] == (start, start + timedelta(days=7))
    assert w[-1] == (start + timedelta(days=14), start + timedelta(days=21))
    assert all(b - a == timedelta(days=7) for a, b in w)
    # Shorter than one window: the whole period.
    assert rolling_windows(start, start + timedelta(days=3), 7) == [(start, start + timedelta(days=3))]
    # A ragged end still gets a last window ending at the period end.
    ragged = rolling_windows(start, start + timedelta(days=8, hours=12), 7)
    assert ragged[-1][1] == start + timedelta(days=8, hours=12)
