"""Agreement statistics checked against scikit-learn, statsmodels, krippendorff and scipy."""

from __future__ import annotations

import itertools
import math
from typing import Literal

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from medlabel.errors import InvalidInput
from medlabel.quality.metrics import (
    BootstrapResult,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
    ratings_to_table,
)

SETTINGS = settings(max_examples=50, deadline=None)
Weights = Literal["linear", "quadratic"] | None
Level = Literal["nominal", "ordinal", "interval", "ratio"]
WEIGHTS: list[Weights] = [None, "linear", "quadratic"]


def noisy_pair(seed: int, n: int = 80, k: int = 5, agree: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, k, n)
    b = np.where(rng.random(n) < agree, a, rng.integers(0, k, n))
    return a, b


# ------------------------------------------------------------------------------------------ Cohen


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("seed", range(5))
def test_cohen_matches_sklearn(weights: Weights, seed: int) -> None:
    a, b = noisy_pair(seed)
    assert cohen_kappa(a, b, weights=weights) == pytest.approx(
        cohen_kappa_score(a, b, weights=weights), abs=1e-9
    )


@pytest.mark.parametrize("weights", WEIGHTS)
def test_cohen_labels_order_and_unused_category_match_sklearn(weights: Weights) -> None:
    a, b = noisy_pair(7, k=4)
    labels = [3, 0, 9, 2, 1]  # custom order and a category nobody used
    ours = cohen_kappa(list(a), list(b), labels=labels, weights=weights)
    assert ours == pytest.approx(cohen_kappa_score(a, b, labels=labels, weights=weights), abs=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=2, max_size=40),
    st.sampled_from(WEIGHTS),
)
def test_cohen_hypothesis_vs_sklearn(pairs: list[tuple[int, int]], weights: Weights) -> None:
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    labels = [0, 1, 2, 3]
    expected = cohen_kappa_score(a, b, labels=labels, weights=weights)
    ours = cohen_kappa(a, b, labels=labels, weights=weights)
    if math.isnan(expected):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(expected, abs=1e-9)


@SETTINGS
@given(st.lists(st.sampled_from(["benign", "malignant", "unsure"]), min_size=2, max_size=30))
def test_cohen_identical_raters_is_one_or_undefined(labels: list[str]) -> None:
    k = cohen_kappa(labels, labels)
    if len(set(labels)) >= 2:
        assert k == pytest.approx(1.0)
    else:
        assert math.isnan(k)


def test_cohen_undefined_is_nan_like_sklearn() -> None:
    a = b = ["x"] * 6
    assert math.isnan(cohen_kappa(a, b))
    with pytest.warns(UserWarning):
        assert math.isnan(cohen_kappa_score(a, b))


def test_cohen_constant_rater_matches_sklearn() -> None:
    a = [1, 1, 1, 1, 1, 1]
    b = [1, 0, 1, 1, 0, 1]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert cohen_kappa(a, b) == 0.0


def test_cohen_rejects_bad_input() -> None:
    with pytest.raises(InvalidInput, match="got 3 and 2"):
        cohen_kappa([1, 2, 3], [1, 2])
    with pytest.raises(InvalidInput, match="not in labels"):
        cohen_kappa([1, 2, 3], [1, 2, 4], labels=[1, 2, 3])
    with pytest.raises(InvalidInput, match="missing"):
        cohen_kappa([1, None], [1, 2])
    with pytest.raises(InvalidInput, match="weights"):
        cohen_kappa([1, 2], [1, 2], weights="cubic")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        cohen_kappa([], [])


# ----------------------------------------------------------------------------------------- Fleiss


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, 60)
    ratings = np.where(rng.random((60, 6)) < 0.7, truth[:, None], rng.integers(0, 4, (60, 6)))
    ours_table = ratings_to_table(ratings)
    sm_table, sm_cats = aggregate_raters(ratings)
    np.testing.assert_array_equal(ours_table, sm_table)
    assert fleiss_kappa(ours_table) == pytest.approx(sm_fleiss_kappa(sm_table, method="fleiss"), abs=1e-9)


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 2), min_size=3, max_size=3), min_size=2, max_size=25))
def test_fleiss_hypothesis_vs_statsmodels(rows: list[list[int]]) -> None:
    table = ratings_to_table(rows, categories=[0, 1, 2])
    with np.errstate(all="ignore"):
        expected = sm_fleiss_kappa(table, method="fleiss")
    ours = fleiss_kappa(table)
    if not np.isfinite(expected):
        assert math.isnan(ours)  # every rating in one category: chance agreement is 1
    else:
        assert ours == pytest.approx(expected, abs=1e-9)


def test_fleiss_identical_raters_is_one() -> None:
    ratings = [["a", "a", "a"], ["b", "b", "b"], ["a", "a", "a"], ["c", "c", "c"]]
    assert fleiss_kappa(ratings_to_table(ratings)) == pytest.approx(1.0)


def test_fleiss_rejects_unequal_rows_and_bad_counts() -> None:
    with pytest.raises(InvalidInput, match="item 1 sums to 2"):
        fleiss_kappa([[1, 2], [1, 1]])
    with pytest.raises(InvalidInput, match="non-negative whole counts"):
        fleiss_kappa([[1, 2], [4, -1]])
    with pytest.raises(InvalidInput, match="non-negative whole counts"):
        fleiss_kappa([[1.5, 1.5], [1, 2]])
    with pytest.raises(InvalidInput, match="at least 2 ratings"):
        fleiss_kappa([[1, 0], [0, 1]])
    with pytest.raises(InvalidInput, match="2-D"):
        fleiss_kappa([1, 2, 3])  # type: ignore[list-item]
    # A missing rating leaves a short row, which Fleiss' kappa cannot use.
    with pytest.raises(InvalidInput, match="same number of raters"):
        fleiss_kappa(ratings_to_table([[1, 1, 2], [1, None, 2]]))


def test_ratings_to_table_categories() -> None:
    table = ratings_to_table([["x", "y"], ["y", "y"]], categories=["y", "x", "z"])
    np.testing.assert_array_equal(table, [[1, 1, 0], [2, 0, 0]])
    with pytest.raises(InvalidInput, match="'w'"):
        ratings_to_table([["x", "w"]], categories=["x"])
    with pytest.raises(InvalidInput, match="same number of raters"):
        ratings_to_table([["x", "y"], ["x"]])


# ----------------------------------------------------------------------------------- Krippendorff


def reliability(seed: int, raters: int = 4, items: int = 50, missing: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, items).astype(float)
    data = truth[None, :] + rng.integers(-1, 2, (raters, items)) * (rng.random((raters, items)) < 0.4)
    data[rng.random(data.shape) < missing] = np.nan
    return data


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
@pytest.mark.parametrize("seed", range(4))
def test_alpha_matches_krippendorff_package(level: Level, seed: int) -> None:
    data = reliability(seed)
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert krippendorff_alpha(data, level=level) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("level", ["interval", "ratio"])
def test_alpha_continuous_values_match_package(level: Level) -> None:
    rng = np.random.default_rng(11)
    truth = rng.gamma(2.0, 3.0, 40)
    data = np.abs(truth[None, :] + rng.normal(0, 1.0, (3, 40)))
    data[rng.random(data.shape) < 0.2] = np.nan
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert krippendorff_alpha(data, level=level) == pytest.approx(expected, abs=1e-9)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the package's 0/0
@SETTINGS
@given(
    st.lists(
        st.lists(st.sampled_from([1.0, 2.0, 3.0, math.nan]), min_size=6, max_size=6), min_size=2, max_size=4
    ),
    st.sampled_from(["nominal", "ordinal", "interval", "ratio"]),
)
def test_alpha_hypothesis_vs_package(rows: list[list[float]], level: Level) -> None:
    data = np.array(rows)
    try:
        expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    except ValueError:
        expected = math.nan  # the package refuses a single-valued domain; we return nan
    ours = krippendorff_alpha(data, level=level)
    if not np.isfinite(expected):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(expected, abs=1e-9)


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=3, max_size=20), st.integers(2, 5))
def test_alpha_identical_raters_is_one(values: list[int], raters: int) -> None:
    data = np.tile(np.array(values, dtype=float), (raters, 1))
    levels: tuple[Level, ...] = ("nominal", "ordinal", "interval", "ratio")
    for level in levels:
        alpha = krippendorff_alpha(data, level=level)
        if len(set(values)) >= 2:
            assert alpha == pytest.approx(1.0)
        else:
            assert math.isnan(alpha)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_alpha_all_missing_columns_are_ignored(level: Level) -> None:
    data = reliability(3, missing=0.1)
    padded = np.insert(data, [0, 10, 10, 50], np.nan, axis=1)
    one_rating = padded.copy()
    one_rating[0, 0] = 2.0  # a single rating is not pairable either
    base = krippendorff_alpha(data, level=level)
    assert krippendorff_alpha(padded, level=level) == pytest.approx(base, abs=1e-12)
    assert krippendorff_alpha(one_rating, level=level) == pytest.approx(base, abs=1e-12)
    expected = krippendorff.alpha(reliability_data=padded, level_of_measurement=level)
    assert base == pytest.approx(expected, abs=1e-9)


def test_alpha_string_labels_equal_coded_labels() -> None:
    data = reliability(5)
    names = {1.0: "one", 2.0: "two", 3.0: "three", 4.0: "four", 5.0: "five", 6.0: "six", 0.0: "zero"}
    as_text = np.array([[None if np.isnan(v) else names[v] for v in row] for row in data], dtype=object)
    assert krippendorff_alpha(as_text, level="nominal") == pytest.approx(
        krippendorff_alpha(data, level="nominal"), abs=1e-12
    )


def test_alpha_undefined_and_invalid() -> None:
    assert math.isnan(krippendorff_alpha(np.full((3, 4), np.nan)))
    assert math.isnan(krippendorff_alpha([[1.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(InvalidInput, match="level"):
        krippendorff_alpha([[1.0, 2.0]], level="circular")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="must be numeric"):
        krippendorff_alpha(np.array([["a", "b"], ["a", "a"]], dtype=object), level="interval")
    with pytest.raises(InvalidInput, match="non-negative"):
        krippendorff_alpha([[-1.0, 2.0], [1.0, 2.0]], level="ratio")
    with pytest.raises(InvalidInput, match="2-D"):
        krippendorff_alpha([1.0, 2.0])  # type: ignore[list-item]


# ---------------------------------------------------------------------------- percent agreement / CI


def brute_percent_agreement(rows: list[list[object]]) -> float:
    per_item = []
    for row in rows:
        given = [v for v in row if v is not None]
        pairs = list(itertools.combinations(given, 2))
        if pairs:
            per_item.append(sum(x == y for x, y in pairs) / len(pairs))
    return float(np.mean(per_item))


@SETTINGS
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "c", None]), min_size=4, max_size=4), min_size=1, max_size=20
    )
)
def test_percent_agreement_vs_pair_counting(rows: list[list[object]]) -> None:
    if not any(sum(v is not None for v in row) >= 2 for row in rows):
        assert math.isnan(percent_agreement(rows))
    else:
        assert percent_agreement(rows) == pytest.approx(brute_percent_agreement(rows), abs=1e-12)


def test_percent_agreement_two_raters_is_accuracy() -> None:
    a, b = noisy_pair(2)
    assert percent_agreement(np.column_stack([a, b])) == pytest.approx(float(np.mean(a == b)))


def test_bootstrap_matches_scipy_percentile_interval() -> None:
    a, b = noisy_pair(4, n=300, agree=0.7)
    ours = bootstrap_ci(cohen_kappa, (a, b), n=1500, seed=1)
    ref = stats.bootstrap(
        (a, b),
        lambda x, y: cohen_kappa_score(x, y),
        paired=True,
        vectorized=False,
        n_resamples=1500,
        method="percentile",
        rng=np.random.default_rng(2),
    )
    assert isinstance(ours, BootstrapResult)
    assert ours.estimate == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.02)
    assert ours.low < ours.estimate < ours.high
    assert (ours.level, ours.n) == (0.95, 1500)


def test_bootstrap_is_reproducible_and_resamples_items_on_axis() -> None:
    data = reliability(1, raters=3, items=40)
    first = bootstrap_ci(krippendorff_alpha, data, n=200, seed=5, axis=1)
    again = bootstrap_ci(krippendorff_alpha, data, n=200, seed=5, axis=1)
    other = bootstrap_ci(krippendorff_alpha, data, n=200, seed=6, axis=1)
    assert first == again
    assert first != other
    assert first.low <= first.estimate <= first.high


def test_bootstrap_drops_undefined_replicates() -> None:
    # Two items, one single-category item: many resamples are constant, so kappa is undefined.
    result = bootstrap_ci(cohen_kappa, (["x", "y"], ["x", "y"]), n=100, seed=0)
    assert 0 < result.n < 100
    assert result.low == result.high == 1.0


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match="level"):
        bootstrap_ci(cohen_kappa, ([1, 2], [1, 2]), level=95)
    with pytest.raises(InvalidInput, match="same number of items"):
        bootstrap_ci(cohen_kappa, ([1, 2, 3], [1, 2]))
    with pytest.raises(InvalidInput, match="replicates"):
        bootstrap_ci(cohen_kappa, ([1, 2], [1, 2]), n=0)
