"""Audit, overlap and gold sampling: sizes per stratum, exclusions, fairness."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from medlabel.errors import InvalidInput
from medlabel.workflow.rules import HistoryEvent
from medlabel.workflow.sampling import (
    assign_overlap,
    choose_auditor,
    select_audit_sample,
    select_overlap_items,
    share,
    should_serve_gold,
)
from medlabel.workflow.stages import Decision, Stage


def population(loads: dict[str, int]) -> dict[str, str]:
    return {f"{a}-item{i:04d}": a for a, n in loads.items() for i in range(n)}


def per_annotator(sample: tuple[str, ...], pop: dict[str, str]) -> Counter[str]:
    return Counter(pop[i] for i in sample)


def test_uneven_loads_get_documented_sizes() -> None:
    pop = population({"light": 1, "few": 3, "mid": 14, "heavy": 200, "odd": 25})
    sample = select_audit_sample(pop, 0.1, np.random.default_rng(7))
    # floor(0.1*n + 0.5), at least 1: 1 -> 1, 3 -> 1 (0.3 rounds to 0, raised to 1), 14 -> 1, 200 -> 20, 25 -> 3
    assert per_annotator(sample, pop) == {"light": 1, "few": 1, "mid": 1, "heavy": 20, "odd": 3}


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.sampled_from(list("abcdefgh")), st.integers(1, 60), min_size=1),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_each_annotator_gets_its_share(loads: dict[str, int], fraction: float, seed: int) -> None:
    pop = population(loads)
    sample = select_audit_sample(pop, fraction, np.random.default_rng(seed))
    assert len(set(sample)) == len(sample) and set(sample) <= set(pop)
    counts = per_annotator(sample, pop)
    for a, n in loads.items():
        want = 0 if fraction == 0 else max(1, math.floor(fraction * n + 0.5))
        assert counts.get(a, 0) == min(n, want)
        assert abs(counts.get(a, 0) - fraction * n) <= max(0.5, 1 - fraction * n) + 1e-9


def test_same_seed_same_sample_whatever_the_input_order() -> None:
    pop = population({"a": 30, "b": 7})
    shuffled = list(pop.items())[::-1]
    one = select_audit_sample(pop, 0.3, np.random.default_rng(3))
    two = select_audit_sample(shuffled, 0.3, np.random.default_rng(3))
    assert one == two


def test_audit_sample_is_uniform_within_an_annotator() -> None:
    pop = population({"a": 10})
    rng = np.random.default_rng(12345)
    hits: Counter[str] = Counter()
    for _ in range(2000):
        hits.update(select_audit_sample(pop, 0.2, rng))
    observed = [hits[i] for i in sorted(pop)]
    assert sum(observed) == 2000 * 2
    assert stats.chisquare(observed).pvalue > 1e-3


def test_audit_input_errors() -> None:
    with pytest.raises(InvalidInput, match="listed twice"):
        select_audit_sample([("i1", "a"), ("i1", "b")], 0.5, np.random.default_rng(0))
    with pytest.raises(InvalidInput, match="fraction"):
        select_audit_sample({}, 1.2, np.random.default_rng(0))
    assert select_audit_sample({}, 0.5, np.random.default_rng(0)) == ()


def test_auditor_excludes_everyone_who_touched_the_item() -> None:
    t = datetime(2026, 11, 29, tzinfo=UTC)
    hist = [
        HistoryEvent("ann", Stage.ANNOTATE, Decision.SUBMIT, t),
        HistoryEvent("rev", Stage.REVIEW, Decision.ACCEPT, t),
    ]
    rng = np.random.default_rng(0)
    picks = {choose_auditor(["ann", "rev", "aud1", "aud2"], hist, rng) for _ in range(50)}
    assert picks == {"aud1", "aud2"}
    assert choose_auditor(["ann", "rev"], hist, rng) is None


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 80), st.floats(0, 1), st.integers(2, 5), st.integers(0, 2**32 - 1))
def test_overlap_selection_size(n: int, fraction: float, k: int, seed: int) -> None:
    items = [f"i{j}" for j in range(n)]
    chosen = select_overlap_items(items, fraction, k, np.random.default_rng(seed))
    assert len(chosen) == share(fraction, n) == min(n, math.floor(fraction * n + 0.5))
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(items)


def test_overlap_assignment_is_distinct_and_balanced() -> None:
    items = [f"i{j}" for j in range(25)]
    plan = assign_overlap(items, ["a", "b", "c", "d"], 3, np.random.default_rng(1))
    assert set(plan) == set(items)
    assert all(len(set(v)) == 3 for v in plan.values())
    load = Counter(p for v in plan.values() for p in v)
    assert sum(load.values()) == 75 and max(load.values()) - min(load.values()) <= 1
    with pytest.raises(InvalidInput, match="k <= number"):
        assign_overlap(items, ["a", "b"], 3, np.random.default_rng(1))
    with pytest.raises(InvalidInput, match="at least 2"):
        select_overlap_items(items, 0.5, 1, np.random.default_rng(1))


def test_gold_rate() -> None:
    rng = np.random.default_rng(99)
    assert not any(should_serve_gold(0.0, rng) for _ in range(200))
    assert all(should_serve_gold(1.0, rng) for _ in range(200))
    served = sum(should_serve_gold(0.2, rng) for _ in range(5000))
    assert stats.binomtest(served, 5000, 0.2).pvalue > 1e-3
    with pytest.raises(InvalidInput, match="gold rate"):
        should_serve_gold(-0.1, rng)
