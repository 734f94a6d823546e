"""Random choices the workflow makes: audit samples, overlap items, gold items, auditors.

Every function takes a ``numpy.random.Generator`` so that the service can seed it (and tests can
be reproducible). Inputs are sorted before sampling, so the same seed and the same input give the
same answer regardless of the input's order.

Rounding: a share ``fraction`` of ``n`` items is ``floor(fraction * n + 0.5)`` (half rounds up),
capped at ``n``. For audits each annotator with at least one done item gets **at least one** item
audited whenever ``fraction > 0``, so light annotators are over-sampled relative to the fraction:
an annotator with 3 done items at ``fraction=0.1`` gets 1 audit (33 %), one with 200 gets 20.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from medlabel.errors import InvalidInput
from medlabel.workflow.rules import HistoryEvent, touched_by

__all__ = [
    "share",
    "select_audit_sample",
    "choose_auditor",
    "select_overlap_items",
    "assign_overlap",
    "should_serve_gold",
]


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise InvalidInput(f"{name} is {value}; expected a fraction in [0, 1]")


def share(fraction: float, n: int) -> int:
    """``floor(fraction * n + 0.5)`` capped to ``[0, n]``: the documented rounding."""
    _check_fraction("fraction", fraction)
    return max(0, min(n, math.floor(fraction * n + 0.5)))


def select_audit_sample(
    done_items_with_annotator: Mapping[str, str] | Iterable[tuple[str, str]],
    fraction: float,
    rng: np.random.Generator,
) -> tuple[str, ...]:
    """Stratified audit sample: from each annotator's done items pick ``max(1, share(fraction, n))``
    items (none when ``fraction == 0``). Returns the chosen item ids, sorted."""
    _check_fraction("audit fraction", fraction)
    pairs = (
        done_items_with_annotator.items()
        if isinstance(done_items_with_annotator, Mapping)
        else done_items_with_annotator
    )
    by_annotator: dict[str, list[str]] = {}
    seen: set[str] = set()
    for item, annotator in pairs:
        if item in seen:
            raise InvalidInput(
                f"item {item!r} is listed twice in the audit population; expected one annotator each"
            )
        seen.add(item)
        by_annotator.setdefault(annotator, []).append(item)
    if fraction == 0:
        return ()
    chosen: list[str] = []
    for annotator in sorted(by_annotator):
        items = sorted(by_annotator[annotator])
        k = max(1, share(fraction, len(items)))
        idx = rng.choice(len(items), size=k, replace=False)
        chosen.extend(items[int(i)] for i in idx)
    return tuple(sorted(chosen))


def choose_auditor(
    candidates: Iterable[str], history: Sequence[HistoryEvent], rng: np.random.Generator
) -> str | None:
    """A random auditor among ``candidates`` who never touched the item; None if nobody qualifies."""
    excluded = touched_by(history)
    eligible = sorted(set(candidates) - excluded)
    if not eligible:
        return None
    return eligible[int(rng.integers(len(eligible)))]


def select_overlap_items(
    item_ids: Iterable[str], fraction: float, k: int, rng: np.random.Generator
) -> tuple[str, ...]:
    """Items to be annotated independently by ``k`` annotators: ``share(fraction, n)`` of them, sorted."""
    _check_fraction("overlap fraction", fraction)
    if k < 2:
        raise InvalidInput(f"overlap k is {k}; expected at least 2 annotators per overlap item")
    items = sorted(set(item_ids))
    m = share(fraction, len(items))
    if m == 0:
        return ()
    idx = rng.choice(len(items), size=m, replace=False)
    return tuple(sorted(items[int(i)] for i in idx))


def assign_overlap(
    item_ids: Iterable[str], annotators: Iterable[str], k: int, rng: np.random.Generator
) -> dict[str, tuple[str, ...]]:
    """For each overlap item, ``k`` distinct annotators, balancing load (least-loaded first, ties
    broken at random)."""
    people = sorted(set(annotators))
    if k < 2 or k > len(people):
        raise InvalidInput(
            f"overlap k is {k} with {len(people)} annotator(s); expected 2 <= k <= number of annotators"
        )
    load = dict.fromkeys(people, 0)
    out: dict[str, tuple[str, ...]] = {}
    for item in sorted(set(item_ids)):
        tiebreak = rng.permutation(len(people))
        order = sorted(range(len(people)), key=lambda i: (load[people[i]], int(tiebreak[i])))
        picked = tuple(sorted(people[i] for i in order[:k]))
        for p in picked:
            load[p] += 1
        out[item] = picked
    return out


def should_serve_gold(rate: float, rng: np.random.Generator) -> bool:
    """True with probability ``rate``: serve a gold item next."""
    _check_fraction("gold rate", rate)
    return bool(rng.random() < rate)
