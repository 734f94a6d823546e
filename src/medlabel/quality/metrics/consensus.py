"""Consensus from several raters: majority vote and STAPLE for masks, plurality for labels."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from medlabel.errors import InvalidInput

__all__ = [
    "Plurality",
    "StapleResult",
    "majority_vote",
    "plurality_label",
    "staple",
]


def _masks(masks: Sequence[ArrayLike], least: int) -> list[NDArray[np.bool_]]:
    """Validate raters' masks (same shape, boolean or 0/1) and return them as boolean arrays."""
    arrays = [np.asarray(m) for m in masks]
    if len(arrays) < least:
        raise InvalidInput(f"need at least {least} masks; got {len(arrays)}")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise InvalidInput(
            f"all masks must have the same shape; got {sorted(shapes)}",
            detail={"shapes": [list(s) for s in sorted(shapes)]},
        )
    out = []
    for i, a in enumerate(arrays):
        if a.dtype != np.bool_:
            if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
                raise InvalidInput(f"mask {i} must be boolean or 0/1; got dtype {a.dtype}")
            bad = (a != 0) & (a != 1)
            if np.any(bad):
                raise InvalidInput(f"mask {i} must hold only 0 and 1; found {a[bad].ravel()[0].item()!r}")
            a = a != 0
        out.append(a)
    return out


def majority_vote(
    masks: Sequence[ArrayLike],
    *,
    tie: Literal["background", "foreground"] = "background",
) -> NDArray[np.bool_]:
    """Voxel-wise majority of binary masks: foreground where more than half the raters say so.

    With an even number of raters a voxel can be tied (exactly half); ``tie`` decides it.
    """
    if tie not in ("background", "foreground"):
        raise InvalidInput(f"tie must be 'background' or 'foreground'; got {tie!r}")
    arrays = _masks(masks, 1)
    n = len(arrays)
    votes = np.zeros(arrays[0].shape, dtype=np.uint8 if n < 255 else np.uint32)
    for a in arrays:
        votes += a
    # More than half: n // 2 + 1 votes; exactly half (even n) also wins for tie="foreground".
    need = n // 2 + 1 if tie == "background" else (n + 1) // 2
    return np.asarray(votes >= need)


_CODE_TYPES = ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64))


@dataclass(frozen=True, slots=True)
class StapleResult:
    """STAPLE estimate.

    Attributes:
        probability: per-voxel posterior probability that the true label is foreground.
        sensitivities: per rater, P(rater says foreground | truly foreground).
        specificities: per rater, P(rater says background | truly background).
        prior: the foreground prior used (fixed, from the mean rater volume).
        iterations: EM iterations run.
        converged: whether the parameters settled before ``max_iterations``.
    """

    probability: NDArray[np.float64]
    sensitivities: tuple[float, ...]
    specificities: tuple[float, ...]
    prior: float
    iterations: int
    converged: bool


def staple(
    masks: Sequence[ArrayLike],
    *,
    max_iterations: int = 1000,
    tolerance: float = 1e-7,
    confidence_weight: float = 1.0,
) -> StapleResult:
    """Binary STAPLE (Warfield, Zou & Wells 2004, IEEE TMI 23:903) by expectation-maximisation.

    Follows ITK's ``STAPLEImageFilter``: the first truth estimate is the voxel-wise mean of the
    masks; the foreground prior is the mean of that estimate times ``confidence_weight`` and
    stays fixed; every voxel of the array (background included) takes part. Each iteration
    re-estimates sensitivities and specificities, then the posterior. It stops when no
    sensitivity or specificity moves by more than ``tolerance`` (ITK: squared change 1e-14).

    Raters' decisions are grouped by their pattern of votes (at most 2^R distinct patterns), so
    each iteration costs O(patterns x raters), not O(voxels x raters).
    """
    if max_iterations < 1:
        raise InvalidInput(f"max_iterations must be >= 1; got {max_iterations!r}")
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise InvalidInput(f"tolerance must be a finite number > 0; got {tolerance!r}")
    if not 0 < confidence_weight:
        raise InvalidInput(f"confidence_weight must be > 0; got {confidence_weight!r}")
    arrays = _masks(masks, 2)
    n_raters = len(arrays)
    if n_raters > 62:
        raise InvalidInput(f"staple supports at most 62 raters; got {n_raters}")
    shape = arrays[0].shape
    # One code per voxel: bit r is rater r's vote. The narrowest dtype keeps memory down.
    code_type = np.dtype(next(t for bits, t in _CODE_TYPES if n_raters <= bits))
    codes: NDArray[Any] = np.zeros(arrays[0].size, dtype=code_type)
    for r, a in enumerate(arrays):
        codes |= a.reshape(-1).astype(code_type) << np.array(r, dtype=code_type)
    if n_raters <= 20:  # a lookup table over all 2^R patterns beats sorting the voxels
        all_counts = np.bincount(codes, minlength=1 << n_raters)
        patterns = np.flatnonzero(all_counts)
        counts = all_counts[patterns]
        inverse = None
    else:
        patterns, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    bits = np.arange(n_raters, dtype=np.uint64)[:, None]
    votes = ((patterns.astype(np.uint64)[None, :] >> bits) & np.uint64(1)).astype(np.float64)  # R x P
    weight = counts.astype(np.float64)
    n_voxels = float(codes.size)

    w = votes.mean(axis=0)  # initial truth estimate per pattern
    prior = float(np.sum(w * weight) / n_voxels) * confidence_weight
    if not 0.0 < prior < 1.0:
        raise InvalidInput(
            f"staple needs some foreground and some background; the foreground prior is {prior:g}",
            detail={"prior": prior},
        )
    p = np.full(n_raters, math.nan)
    q = np.full(n_raters, math.nan)
    converged = False
    iterations = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported below
            fg = w * weight
            bg = (1.0 - w) * weight
            new_p = (votes @ fg) / fg.sum()
            new_q = ((1.0 - votes) @ bg) / bg.sum()
            alpha = np.prod(np.where(votes == 1.0, new_p[:, None], 1.0 - new_p[:, None]), axis=0)
            beta = np.prod(np.where(votes == 1.0, 1.0 - new_q[:, None], new_q[:, None]), axis=0)
            w = prior * alpha / (prior * alpha + (1.0 - prior) * beta)
            settled = iterations > 1 and bool(
                np.all(np.abs(new_p - p) <= tolerance) and np.all(np.abs(new_q - q) <= tolerance)
            )
            p, q = new_p, new_q
            if settled:
                converged = True
                break
    if inverse is None:
        lookup = np.zeros(1 << n_raters, dtype=np.float64)
        lookup[patterns] = w
        probability = lookup[codes].reshape(shape)
    else:
        probability = w[inverse].reshape(shape)
    return StapleResult(
        probability=np.asarray(probability, dtype=np.float64),
        sensitivities=tuple(float(v) for v in p),
        specificities=tuple(float(v) for v in q),
        prior=prior,
        iterations=iterations,
        converged=converged,
    )


@dataclass(frozen=True, slots=True)
class Plurality:
    """Outcome of :func:`plurality_label`.

    Attributes:
        label: the most frequent label, or ``None`` when two or more labels tie for first place
            or no rater gave a label.
        votes: how many raters gave the winning (or each tied) label.
        total: how many raters gave a label (missing ones excluded).
        tied: the labels sharing first place, in first-seen order (one element when no tie).
        counts: votes per label, in first-seen order.
    """

    label: Hashable | None
    votes: int
    total: int
    tied: tuple[Hashable, ...]
    counts: tuple[tuple[Hashable, int], ...]

    @property
    def is_majority(self) -> bool:
        """True when the winner has more than half of the given labels (a strict majority)."""
        return self.label is not None and 2 * self.votes > self.total


def plurality_label(labels: Sequence[Hashable | None] | NDArray[Any]) -> Plurality:
    """The most frequent class label among raters for one item; ties are reported, not broken.

    ``None`` and NaN are missing and ignored. Use ``result.is_majority`` for a strict majority.
    """
    values = (
        list(np.asarray(labels, dtype=object).ravel()) if isinstance(labels, np.ndarray) else list(labels)
    )
    given = [v for v in values if not (v is None or (isinstance(v, float | np.floating) and math.isnan(v)))]
    try:
        counter = Counter(given)
    except TypeError as exc:
        raise InvalidInput(f"class labels must be hashable (str, int, ...); got {given!r:.120}") from exc
    if not counter:
        return Plurality(None, 0, 0, (), ())
    top = max(counter.values())
    tied = tuple(k for k, c in counter.items() if c == top)
    return Plurality(
        label=tied[0] if len(tied) == 1 else None,
        votes=top,
        total=len(given),
        tied=tied,
        counts=tuple(counter.items()),
    )
