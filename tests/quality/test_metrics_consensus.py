"""STAPLE and majority vote checked against SimpleITK; plurality on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from medlabel.errors import InvalidInput
from medlabel.quality.metrics import Plurality, StapleResult, majority_vote, plurality_label, staple

SETTINGS = settings(max_examples=50, deadline=None)


def noisy_raters(
    seed: int, shape: tuple[int, ...], quality: list[tuple[float, float]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    truth = ndimage.gaussian_filter(rng.random(shape), 2.0)
    truth = truth > np.quantile(truth, 0.7)
    raters = []
    for sens, spec in quality:
        hit = rng.random(shape) < sens
        false_alarm = rng.random(shape) > spec
        # Errors cluster near the edge, as with real raters: dilate/erode some of them.
        mask = np.where(truth, hit, false_alarm)
        raters.append(mask)
    return truth, raters


def sitk_staple(masks: list[np.ndarray]) -> tuple[np.ndarray, sitk.STAPLEImageFilter]:
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    out = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    return sitk.GetArrayFromImage(out), f


@pytest.mark.parametrize(
    ("shape", "quality"),
    [
        ((18, 30, 30), [(0.9, 0.98), (0.8, 0.99), (0.95, 0.95), (0.7, 0.995)]),
        ((60, 50), [(0.85, 0.9), (0.6, 0.99), (0.99, 0.8)]),
        ((10, 20, 20), [(0.9, 0.9), (0.9, 0.9)]),
    ],
)
def test_staple_matches_simpleitk(shape: tuple[int, ...], quality: list[tuple[float, float]]) -> None:
    truth, masks = noisy_raters(len(quality), shape, quality)
    ours = staple(masks)
    prob, f = sitk_staple(masks)
    assert isinstance(ours, StapleResult)
    assert ours.converged
    np.testing.assert_allclose(ours.probability, prob, atol=1e-9)
    np.testing.assert_allclose(ours.sensitivities, f.GetSensitivity(), atol=1e-9)
    np.testing.assert_allclose(ours.specificities, f.GetSpecificity(), atol=1e-9)
    # The better raters are recognised as such (truth known here).
    best = int(np.argmax([s for s, _ in quality]))
    assert ours.sensitivities[best] == max(ours.sensitivities)
    assert np.mean((ours.probability > 0.5) == truth) > 0.9


def test_staple_accepts_integer_masks_and_reports_prior() -> None:
    _, masks = noisy_raters(3, (20, 20), [(0.9, 0.95)] * 3)
    as_int = [m.astype(np.int32) for m in masks]
    result = staple(as_int)
    assert result.prior == pytest.approx(np.mean([m.mean() for m in masks]))
    np.testing.assert_allclose(result.probability, staple(masks).probability)


def test_staple_rejects_degenerate_input() -> None:
    empty = np.zeros((5, 5), dtype=bool)
    with pytest.raises(InvalidInput, match="prior is 0"):
        staple([empty, empty])
    with pytest.raises(InvalidInput, match="at least 2"):
        staple([empty])
    with pytest.raises(InvalidInput, match="same shape"):
        staple([empty, np.zeros((5, 6), dtype=bool)])
    with pytest.raises(InvalidInput, match="only 0 and 1"):
        staple([empty, np.full((5, 5), 3)])


def sitk_vote(masks: list[np.ndarray], undecided: int) -> np.ndarray:
    f = sitk.LabelVotingImageFilter()
    f.SetLabelForUndecidedPixels(undecided)
    out = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    return sitk.GetArrayFromImage(out)


@pytest.mark.parametrize("n_raters", [1, 2, 3, 4, 5])
def test_majority_vote_matches_simpleitk_label_voting(n_raters: int) -> None:
    _, masks = noisy_raters(n_raters, (12, 16, 16), [(0.7, 0.8)] * n_raters)
    # SimpleITK picks the label with most votes; undecided (a tie) gets the given label.
    np.testing.assert_array_equal(majority_vote(masks), sitk_vote(masks, 0) == 1)
    np.testing.assert_array_equal(majority_vote(masks, tie="foreground"), sitk_vote(masks, 1) == 1)


def test_majority_vote_rejects_bad_tie() -> None:
    with pytest.raises(InvalidInput, match="tie"):
        majority_vote([np.ones((2, 2))], tie="coin")  # type: ignore[arg-type]


def test_plurality_label_cases() -> None:
    clear = plurality_label(["tumour", "tumour", "cyst", None])
    assert clear == Plurality("tumour", 2, 3, ("tumour",), (("tumour", 2), ("cyst", 1)))
    assert clear.is_majority
    tie = plurality_label(["a", "b", "b", "a", "c"])
    assert tie.label is None and tie.tied == ("a", "b") and not tie.is_majority
    assert plurality_label([float("nan"), None]).label is None
    with pytest.raises(InvalidInput, match="hashable"):
        plurality_label([["a"], ["b"]])  # type: ignore[list-item]
    weak = plurality_label(["a", "b", "c", "a"])
    assert weak.label == "a" and not weak.is_majority  # plurality, not majority (2 of 4)


@SETTINGS
@given(st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=15))
def test_plurality_label_agrees_with_counting(labels: list[str]) -> None:
    result = plurality_label(labels)
    counts = {v: labels.count(v) for v in set(labels)}
    top = max(counts.values())
    winners = {k for k, c in counts.items() if c == top}
    assert set(result.tied) == winners
    assert result.label == (winners.pop() if len(winners) == 1 else None)
    assert result.votes == top and result.total == len(labels)


def test_staple_many_raters_matches_simpleitk() -> None:
    # More than 20 raters takes the sorting path instead of the 2^R lookup table.
    _, masks = noisy_raters(21, (6, 12, 12), [(0.8 + 0.009 * i, 0.9 + 0.004 * i) for i in range(21)])
    ours = staple(masks)
    prob, f = sitk_staple(masks)
    np.testing.assert_allclose(ours.probability, prob, atol=1e-9)
    np.testing.assert_allclose(ours.sensitivities, f.GetSensitivity(), atol=1e-9)
