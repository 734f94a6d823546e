"""build_report: agreement figures checked against scikit-learn, statsmodels and krippendorff;
per-annotator and per-reviewer figures against hand counts; windows and alerts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from medlabel.errors import InvalidInput
from medlabel.quality.metrics import Box, hausdorff_distance, surface_dice
from medlabel.quality.records import (
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
from medlabel.quality.report import QualityReport, build_report

T0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
PERIOD = (T0, T0 + timedelta(days=21))
LABELS = ["benign", "malignant", "normal"]


def noisy_ratings(
    seed: int,
    annotators: Sequence[str],
    n_items: int,
    *,
    agree: float = 0.75,
    question: str = "finding",
    start: datetime = T0,
    step: timedelta = timedelta(hours=6),
    missing: float = 0.0,
    prefix: str = "i",
) -> list[ClassificationRating]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_items):
        truth = LABELS[rng.integers(3)]
        given = [a for a in annotators if rng.random() >= missing]
        if len(given) < 2:
            given = list(annotators[:2])
        for a in given:
            v = truth if rng.random() < agree else LABELS[rng.integers(3)]
            out.append(ClassificationRating(f"{prefix}{i:03d}", question, a, v, start + i * step))
    return out


def matrix(ratings: Sequence[ClassificationRating], annotators: Sequence[str]) -> list[list[str | None]]:
    """items x annotators (None: missing), items sorted by id."""
    by: dict[str, dict[str, str]] = {}
    for r in ratings:
        by.setdefault(r.item_id, {})[r.annotator] = str(r.value)
    return [[by[i].get(a) for a in annotators] for i in sorted(by)]


def fig(report: QualityReport, section: str, subject: str, metric: str):  # type: ignore[no-untyped-def]
    found = [f for f in report.agreement if (f.section, f.subject, f.metric) == (section, subject, metric)]
    assert len(found) == 1, (section, subject, metric, report.agreement)
    return found[0]


def report(records: ReportInput, **kw) -> QualityReport:  # type: ignore[no-untyped-def]
    kw.setdefault("targets", Targets())
    kw.setdefault("bootstrap_n", 200)
    return build_report(records, period=kw.pop("period", PERIOD), **kw)


# ------------------------------------------------------------------------------- classification


def test_two_annotators_cohen_kappa_equals_sklearn() -> None:
    ratings = noisy_ratings(1, ["ann1", "ann2"], 80)
    rep = report(ReportInput(ratings=ratings))
    m = matrix(ratings, ["ann1", "ann2"])
    a, b = [r[0] for r in m], [r[1] for r in m]
    expected = cohen_kappa_score(a, b)
    f = fig(rep, "classification", "finding", "cohen_kappa")
    assert f.value == pytest.approx(expected, abs=1e-12)
    assert f.n == 80 and f.ci_low <= f.value <= f.ci_high
    assert rep.headline[0].metric == "kappa" and rep.headline[0].value == pytest.approx(expected, abs=1e-12)
    # Per class, one-vs-rest.
    for label in LABELS:
        one = cohen_kappa_score([x == label for x in a], [x == label for x in b])
        assert fig(rep, "classification", f"finding: {label}", "cohen_kappa").value == pytest.approx(
            one, abs=1e-12
        )
    # Pairwise matrix and the pooled confusion matrix (both directions with two annotators).
    (pm,) = rep.pair_kappa
    assert pm.annotators == ("ann1", "ann2") and pm.kappa[0][1] == pytest.approx(expected, abs=1e-12)
    assert math.isnan(pm.kappa[0][0]) and pm.n[0][1] == 80
    (cm,) = rep.confusion
    sk = confusion_matrix(a, b, labels=LABELS) + confusion_matrix(b, a, labels=LABELS)
    assert cm.labels == tuple(LABELS) and np.array_equal(np.array(cm.counts), sk)
    # Consensus agreement: with two annotators the consensus of "the others" is the other one.
    agree = sum(x == y for x, y in zip(a, b, strict=True)) / 80
    for stats in rep.annotators:
        assert stats.consensus_items == 80 and stats.consensus_agreement == pytest.approx(agree)


def test_three_complete_annotators_fleiss_alpha_percent_against_references() -> None:
    anns = ["a1", "a2", "a3"]
    ratings = noisy_ratings(2, anns, 70)
    rep = report(ReportInput(ratings=ratings))
    m = np.array(matrix(ratings, anns), dtype=object)
    codes = np.vectorize(LABELS.index)(m)
    table, _ = aggregate_raters(codes, n_cat=3)
    expected = sm_fleiss_kappa(table, method="fleiss")
    assert fig(rep, "classification", "finding", "fleiss_kappa").value == pytest.approx(expected, abs=1e-12)
    alpha = krippendorff.alpha(reliability_data=codes.T.astype(float), level_of_measurement="nominal")
    assert fig(rep, "classification", "finding", "krippendorff_alpha").value == pytest.approx(alpha, abs=1e-9)
    # Percent agreement: mean over items of agreeing pairs / 3 pairs, written out directly.
    pa = np.mean([sum(r[i] == r[j] for i, j in ((0, 1), (0, 2), (1, 2))) / 3 for r in m])
    assert fig(rep, "classification", "finding", "percent_agreement").value == pytest.approx(pa, abs=1e-12)
    assert rep.headline[0].value == pytest.approx(expected, abs=1e-12)
    # Every pair's kappa equals scikit-learn's.
    (pm,) = rep.pair_kappa
    for i in range(3):
        for j in range(3):
            if i != j:
                assert pm.kappa[i][j] == pytest.approx(cohen_kappa_score(m[:, i], m[:, j]), abs=1e-12)


def test_incomplete_ratings_use_krippendorff_alpha_with_missing() -> None:
    anns = ["a1", "a2", "a3", "a4"]
    ratings = noisy_ratings(3, anns, 90, missing=0.35, step=timedelta(hours=4))
    rep = report(ReportInput(ratings=ratings))
    m = np.array(matrix(ratings, anns), dtype=object)
    assert len({sum(v is not None for v in r) for r in m}) > 1  # really incomplete
    data = np.array([[np.nan if v is None else LABELS.index(v) for v in r] for r in m]).T
    alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    f = fig(rep, "classification", "finding", "krippendorff_alpha")
    assert f.value == pytest.approx(alpha, abs=1e-9)
    assert not [x for x in rep.agreement if x.metric == "fleiss_kappa" and x.subject == "finding"]
    assert rep.headline[0].value == pytest.approx(alpha, abs=1e-9)
    # Pairwise kappa over the items both answered.
    (pm,) = rep.pair_kappa
    both = [(r[0], r[1]) for r in m if r[0] is not None and r[1] is not None]
    assert pm.n[0][1] == len(both)
    assert pm.kappa[0][1] == pytest.approx(cohen_kappa_score(*zip(*both, strict=True)), abs=1e-12)


def test_overall_kappa_is_item_weighted_mean_over_questions() -> None:
    q1 = noisy_ratings(4, ["a", "b"], 60, question="finding")
    q2 = noisy_ratings(5, ["a", "b"], 30, question="quality", agree=0.5)
    rep = report(ReportInput(ratings=q1 + q2))
    k1 = fig(rep, "classification", "finding", "cohen_kappa").value
    k2 = fig(rep, "classification", "quality", "cohen_kappa").value
    overall = fig(rep, "classification", "overall", "kappa")
    assert overall.value == pytest.approx((60 * k1 + 30 * k2) / 90)
    assert overall.n == 60 and overall.ci_low < overall.value < overall.ci_high


def test_latest_answer_wins_and_period_filters() -> None:
    base = [
        ClassificationRating("x", "q", "a", "yes", T0),
        ClassificationRating("x", "q", "b", "no", T0),
        ClassificationRating("y", "q", "a", "no", T0),
        ClassificationRating("y", "q", "b", "no", T0),
        ClassificationRating("x", "q", "b", "yes", T0 + timedelta(hours=1)),  # b changes its mind
        ClassificationRating("z", "q", "a", "yes", PERIOD[1]),  # end excluded
        ClassificationRating("z", "q", "b", "no", PERIOD[1]),
    ]
    rep = report(ReportInput(ratings=base), bootstrap_n=0)
    f = fig(rep, "classification", "q", "percent_agreement")
    assert f.value == 1.0 and f.n == 2 and math.isnan(f.ci_low)


def test_bootstrap_is_reproducible_and_seeded() -> None:
    ratings = noisy_ratings(6, ["a", "b"], 50)
    r1 = report(ReportInput(ratings=ratings), seed=3)
    r2 = report(ReportInput(ratings=ratings), seed=3)
    r3 = report(ReportInput(ratings=ratings), seed=4)
    f1, f2, f3 = (fig(r, "classification", "finding", "cohen_kappa") for r in (r1, r2, r3))
    assert (f1.ci_low, f1.ci_high) == (f2.ci_low, f2.ci_high)
    assert (f1.ci_low, f1.ci_high) != (f3.ci_low, f3.ci_high)


# ---------------------------------------------------------------------------------- shapes, masks


def test_shape_agreement_f1_and_mean_iou() -> None:
    shapes = [
        # item s1: both draw one nodule, IoU = 81/100; b adds an extra cyst -> F1 = 2/3 overall.
        ShapeRecord("s1", "a", "nodule", Box(0, 0, 10, 10), T0),
        ShapeRecord("s1", "b", "nodule", Box(1, 1, 10, 10), T0),
        ShapeRecord("s1", "b", "cyst", Box(50, 50, 60, 60), T0),
        # item s2: same box but different labels: no match when labels must agree.
        ShapeRecord("s2", "a", "nodule", Box(0, 0, 4, 4), T0),
        ShapeRecord("s2", "b", "cyst", Box(0, 0, 4, 4), T0),
    ]
    rep = report(ReportInput(shapes=shapes))
    f1 = fig(rep, "shapes", "overall", "f1")
    assert f1.value == pytest.approx((2 / 3 + 0.0) / 2) and f1.n == 2
    assert fig(rep, "shapes", "overall", "mean_iou").value == pytest.approx(0.81)  # s2 has no match
    nod = fig(rep, "shapes", "nodule", "f1")
    assert nod.n == 2 and nod.value == pytest.approx((1.0 + 0.0) / 2)
    assert fig(rep, "shapes", "cyst", "f1").value == pytest.approx(0.0)


def _square(n: int, lo: int, hi: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=bool)
    m[lo:hi, lo:hi] = True
    return m


def test_mask_agreement_dice_hd95_surface_dice() -> None:
    a, b = _square(32, 8, 20), _square(32, 10, 22)
    sp = (0.5, 0.5)
    masks = [MaskRecord("m1", "a", "liver", a, sp, T0), MaskRecord("m1", "b", "liver", b, sp, T0)]
    # m2: annotator b worked on the item but drew no liver -> empty mask, Dice 0.
    masks.append(MaskRecord("m2", "a", "liver", a, sp, T0))
    work = [WorkRecord("m2", "b", "annotate", 30, 0, T0)]
    rep = report(ReportInput(masks=masks, work=work), targets=Targets(surface_tolerance_mm=1.0))
    inter = np.count_nonzero(a & b)
    d1 = 2 * inter / (a.sum() + b.sum())
    d = fig(rep, "masks", "liver", "dice")
    assert d.value == pytest.approx((d1 + 0.0) / 2) and d.n == 2
    hd = fig(rep, "masks", "liver", "hd95")
    assert hd.value == math.inf  # median of (finite, inf) with two items is inf
    sd = fig(rep, "masks", "overall", "surface_dice")
    assert sd.value == pytest.approx((surface_dice(a, b, tolerance=1.0, spacing=sp) + 0.0) / 2)
    only = report(ReportInput(masks=masks[:2]))
    assert fig(only, "masks", "liver", "hd95").value == pytest.approx(
        hausdorff_distance(a, b, spacing=sp, percentile=95)
    )
    assert rep.headline[1].metric == "dice" and rep.headline[1].met is False


# ------------------------------------------------------------------------------ annotators, reviewers


def test_annotator_figures_from_gold_reviews_errors_and_work() -> None:
    h = timedelta(hours=1)
    gold = [
        GoldOutcome("g1", "ann", 1.0, True, T0),
        GoldOutcome("g2", "ann", 0.5, False, T0),
        GoldOutcome("g3", "ann", 0.9, True, T0),
        GoldOutcome("g1", "other", 0.0, False, T0),
    ]
    reviews = [
        ReviewOutcome("i1", "ann", "rev", "review", "reject", T0),
        ReviewOutcome("i1", "ann", "rev", "review", "accept", T0 + h),
        ReviewOutcome("i2", "ann", "rev", "review", "accept", T0),
        ReviewOutcome("i3", "ann", "val", "validate", "send_back_review", T0),
        ReviewOutcome("i4", "ann", "rev", "review", "edit_accept", T0),
    ]
    errors = [
        ErrorRecord("i1", "ann", "rev", "review", "omission", "major", T0),
        ErrorRecord("i1", "ann", "rev", "review", "boundary", "minor", T0),
        ErrorRecord("i3", "ann", "val", "validate", "omission", "critical", T0),
    ]
    work = [
        WorkRecord("i1", "ann", "annotate", 100, 4, T0),
        WorkRecord("i1", "ann", "annotate", 50, 1, T0 + h),  # rework session on the same item
        WorkRecord("i2", "ann", "annotate", 300, 6, T0),
        WorkRecord("i3", "ann", "annotate", 200, 2, T0),
        WorkRecord("i4", "ann", "annotate", 70, 3, T0),
        WorkRecord("i1", "rev", "review", 40, 0, T0),  # review time is not annotator throughput
    ]
    rep = report(ReportInput(gold=gold, reviews=reviews, errors=errors, work=work))
    (ann,) = [a for a in rep.annotators if a.annotator == "ann"]
    assert ann.gold_items == 3 and ann.gold_accuracy == pytest.approx(2 / 3)
    assert ann.gold_mean_score == pytest.approx(2.4 / 3)
    assert ann.reviewed_items == 4 and ann.errors == 3 and ann.error_rate == pytest.approx(3 / 4)
    assert dict(ann.errors_by_category) == {"omission": 2, "boundary": 1}
    assert ann.errors_by_severity == (("minor", 1), ("major", 1), ("critical", 1))
    assert ann.rework_items == 1 and ann.rework_rate == pytest.approx(1 / 4)
    hours = 720 / 3600
    assert ann.items == 4 and ann.annotations == 16 and ann.active_hours == pytest.approx(hours)
    assert ann.items_per_hour == pytest.approx(4 / hours)
    assert ann.annotations_per_hour == pytest.approx(16 / hours)
    assert ann.median_seconds_per_item == pytest.approx(np.median([150, 300, 200, 70]))
    assert "rev" not in {a.annotator for a in rep.annotators}
    assert {h.metric: h.value for h in rep.headline}["gold_accuracy"] == pytest.approx(2 / 4)


def test_reviewer_overturn_rate() -> None:
    d = timedelta(days=1)
    reviews = [
        ReviewOutcome("i1", "ann", "rev", "review", "accept", T0),
        ReviewOutcome("i1", "ann", "aud", "audit", "fail", T0 + d),  # overturned
        ReviewOutcome("i2", "ann", "rev", "review", "edit_accept", T0),
        ReviewOutcome("i2", "ann", "aud", "audit", "pass", T0 + d),  # upheld
        ReviewOutcome("i3", "ann", "rev", "review", "accept", T0 + 2 * d),
        ReviewOutcome("i3", "ann", "aud", "audit", "fail", T0 + d),  # audit before the acceptance
        ReviewOutcome("i4", "ann", "rev", "review", "reject", T0),
        ReviewOutcome("i1", "ann", "val", "validate", "accept", T0 + timedelta(hours=1)),
    ]
    rep = report(ReportInput(reviews=reviews))
    by = {r.reviewer: r for r in rep.reviewers}
    assert set(by) == {"rev", "val"}
    rev = by["rev"]
    assert (rev.decisions, rev.acceptances, rev.audited, rev.overturned) == (4, 3, 2, 1)
    assert rev.overturn_rate == pytest.approx(0.5)
    assert by["val"].overturn_rate == 1.0
    assert {h.metric: h.value for h in rep.headline}["audit_overturn_rate"] == pytest.approx(2 / 3)


def test_error_weeks_count_per_iso_week_and_category() -> None:
    errors = [
        ErrorRecord("i", "ann", "rev", "review", c, "minor", T0 + timedelta(days=d))
        for d, c in [(0, "omission"), (6.9, "boundary"), (7, "omission"), (8, "omission"), (20, "mislabel")]
    ]
    rep = report(ReportInput(errors=errors))
    assert [w.week for w in rep.error_weeks] == ["2026-W45", "2026-W46", "2026-W47"]
    assert rep.error_categories == ("omission", "boundary", "mislabel")
    assert [dict(w.counts) for w in rep.error_weeks] == [
        {"omission": 1, "boundary": 1, "mislabel": 0},
        {"omission": 2, "boundary": 0, "mislabel": 0},
        {"omission": 0, "boundary": 0, "mislabel": 1},
    ]


# ------------------------------------------------------------------------------ windows and alerts


def test_kappa_alert_for_a_bad_week_only() -> None:
    anns = ["a", "b", "c"]
    good1 = noisy_ratings(7, anns, 28, agree=0.97, step=timedelta(hours=6), prefix="w1-")
    bad = noisy_ratings(8, anns, 28, agree=0.2, start=T0 + timedelta(days=7), prefix="w2-")
    good3 = noisy_ratings(9, anns, 28, agree=0.97, start=T0 + timedelta(days=14), prefix="w3-")
    rep = report(ReportInput(ratings=good1 + bad + good3), bootstrap_n=0)
    kappa_trend = [t for t in rep.trends if t.metric == "kappa"]
    assert len(kappa_trend) == 15
    assert [a.metric for a in rep.alerts] == ["kappa"]
    (alert,) = rep.alerts
    # Every window overlapping the bad week by enough items is below target: one merged alert.
    assert alert.window_start < T0 + timedelta(days=14) and alert.window_end > T0 + timedelta(days=7)
    assert alert.value < 0.8 and alert.target == 0.8 and alert.annotators == ("a", "b", "c")
    # The exact bad-week window's value equals Fleiss' kappa (statsmodels) on that week's items.
    (wk,) = [t for t in kappa_trend if t.window_start == T0 + timedelta(days=7)]
    m = np.array(matrix(bad, anns), dtype=object)
    table, _ = aggregate_raters(np.vectorize(LABELS.index)(m), n_cat=3)
    assert wk.n == 28 and wk.value == pytest.approx(sm_fleiss_kappa(table), abs=1e-12)
    assert alert.value <= wk.value
    # Not enough items per window: no alert.
    quiet = report(ReportInput(ratings=good1 + bad + good3), bootstrap_n=0, targets=Targets(min_items=100))
    assert quiet.alerts == ()


def test_dice_alert_and_trend() -> None:
    masks = []
    for i in range(12):
        t = T0 + timedelta(days=8, hours=i)  # all in the second week
        masks.append(MaskRecord(f"m{i}", "a", "liver", _square(16, 2, 10), None, t))
        masks.append(MaskRecord(f"m{i}", "b", "liver", _square(16, 6, 14), None, t))
    rep = report(ReportInput(masks=masks), bootstrap_n=0)
    dice_trend = [t for t in rep.trends if t.metric == "dice"]
    assert len(dice_trend) == 15 and max(t.n for t in dice_trend) == 12
    (alert,) = rep.alerts
    assert alert.metric == "dice" and alert.value == pytest.approx(2 * 16 / 128) and alert.n == 12
    assert alert.annotators == ("a", "b")


# ---------------------------------------------------------------------------------- edge cases


def test_empty_input_gives_an_empty_report() -> None:
    rep = report(ReportInput())
    assert rep.agreement == () and rep.alerts == () and rep.annotators == () and rep.trends == ()
    assert all(math.isnan(h.value) and h.met is None for h in rep.headline)
    assert len(rep.error_weeks) == 3


def test_single_rater_items_are_not_overlap() -> None:
    ratings = [ClassificationRating(f"i{i}", "q", "a", "x", T0) for i in range(5)]
    rep = report(ReportInput(ratings=ratings))
    assert rep.agreement == () and rep.confusion == ()


def test_bad_arguments_raise_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="after its start"):
        build_report(ReportInput(), period=(PERIOD[1], PERIOD[0]), targets=Targets())
    with pytest.raises(InvalidInput, match="naive"):
        build_report(ReportInput(), period=(datetime(2026, 1, 1), datetime(2026, 2, 1)), targets=Targets())
    with pytest.raises(InvalidInput, match="bootstrap_n"):
        build_report(ReportInput(), period=PERIOD, targets=Targets(), bootstrap_n=-1)
    with pytest.raises(InvalidInput):
        build_report([], period=PERIOD, targets=Targets())  # type: ignore[arg-type]
