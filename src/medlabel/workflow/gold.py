"""Scoring an answer on a gold (known-answer) item against its reference.

Deliberately minimal: the full metric library lives in ``medlabel.quality.metrics``.

* item questions and classification annotations: exact match (multi-choice answers as sets);
* boxes and polygons: one-to-one greedy matching per (class, frame, plane) by IoU (shapely),
  a match counts when IoU ≥ ``iou_threshold``; the component score is the F1 of matches;
* masks: Dice per (class, frame, plane) of the union of that class's masks (volume masks per class);
* points and polylines are not scored.

The overall score is the mean of the component scores present; the answer passes when every
component passes (exact answers all correct, F1 ≥ ``pass_mark``, every Dice ≥ ``dice_threshold``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medlabel.annotations.geometry import BBox, Polygon, mask_dice, polygon_iou
from medlabel.annotations.masks import VolumeMask
from medlabel.annotations.model import Annotation, AnnotationSet
from medlabel.annotations.rle import RLE, decode
from medlabel.annotations.schema import AnnotationType

__all__ = ["GoldScore", "score_answers", "score_objects", "score_masks", "score_gold"]


@dataclass(frozen=True, slots=True)
class GoldScore:
    score: float
    passed: bool
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "passed": self.passed, "detail": dict(self.detail)}


def _norm(v: Any) -> Any:
    return frozenset(v) if isinstance(v, list | tuple | set | frozenset) else v


def score_answers(answer: Mapping[str, Any], reference: Mapping[str, Any]) -> GoldScore:
    """Exact match per reference question; score = share correct, passed = all correct."""
    if not reference:
        return GoldScore(1.0, True, {"wrong": []})
    wrong = sorted(q for q, ref in reference.items() if _norm(answer.get(q)) != _norm(ref))
    score = 1.0 - len(wrong) / len(reference)
    return GoldScore(score, not wrong, {"wrong": wrong})


def _key(a: Annotation) -> tuple[str, int | None, str | None]:
    return (a.class_id, a.frame, None if a.plane is None else a.plane.value)


def score_objects(
    answer: Sequence[Annotation],
    reference: Sequence[Annotation],
    *,
    iou_threshold: float = 0.5,
    pass_mark: float = 0.8,
) -> GoldScore:
    """F1 of greedy one-to-one IoU matching of boxes/polygons with the same class, frame and plane."""
    shapes = (BBox, Polygon)
    ans = [a for a in answer if isinstance(a.geometry, shapes)]
    ref = [r for r in reference if isinstance(r.geometry, shapes)]
    if not ans and not ref:
        return GoldScore(1.0, True, {"matched": 0, "answer": 0, "reference": 0})
    pairs: list[tuple[float, int, int]] = []
    for i, a in enumerate(ans):
        for j, r in enumerate(ref):
            if _key(a) == _key(r):
                iou = polygon_iou(a.geometry, r.geometry)  # type: ignore[arg-type]
                if iou >= iou_threshold:
                    pairs.append((iou, i, j))
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_a: set[int] = set()
    used_r: set[int] = set()
    for _, i, j in pairs:
        if i not in used_a and j not in used_r:
            used_a.add(i)
            used_r.add(j)
    matched = len(used_a)
    f1 = 2 * matched / (len(ans) + len(ref))
    detail = {
        "matched": matched,
        "answer": len(ans),
        "reference": len(ref),
        "missed": sorted(ref[j].id for j in range(len(ref)) if j not in used_r),
        "extra": sorted(ans[i].id for i in range(len(ans)) if i not in used_a),
    }
    return GoldScore(f1, f1 >= pass_mark, detail)


def _mask_groups(anns: Sequence[Annotation]) -> dict[tuple[str, int | None, str | None], np.ndarray]:
    out: dict[tuple[str, int | None, str | None], np.ndarray] = {}
    for a in anns:
        g = a.geometry
        if isinstance(g, RLE):
            m = decode(g).astype(bool)
        elif isinstance(g, VolumeMask):
            m = g.to_array()
        else:
            continue
        k = _key(a)
        out[k] = (out[k] | m) if k in out and out[k].shape == m.shape else m
    return out


def score_masks(
    answer: Sequence[Annotation], reference: Sequence[Annotation], *, dice_threshold: float = 0.8
) -> GoldScore:
    """Dice per (class, frame, plane) of mask annotations; score = mean Dice, passed = all ≥ threshold.

    A group present on one side only scores 0 (missing or extra mask)."""
    a = _mask_groups(answer)
    r = _mask_groups(reference)
    keys = sorted(set(a) | set(r), key=repr)
    if not keys:
        return GoldScore(1.0, True, {"dice": {}})
    dice: dict[str, float] = {}
    for k in keys:
        if k in a and k in r and a[k].shape == r[k].shape:
            dice[repr(k)] = mask_dice(a[k], r[k])
        else:
            dice[repr(k)] = 0.0
    values = list(dice.values())
    return GoldScore(float(np.mean(values)), min(values) >= dice_threshold, {"dice": dice})


def score_gold(
    answer: AnnotationSet,
    reference: AnnotationSet,
    *,
    iou_threshold: float = 0.5,
    dice_threshold: float = 0.8,
    pass_mark: float = 0.8,
) -> GoldScore:
    """Score a whole annotation set against the gold reference (see module doc)."""
    parts: dict[str, GoldScore] = {}
    if reference.answers or answer.answers:
        parts["answers"] = score_answers(answer.answers, reference.answers)
    ref_cls = {a.class_id for a in reference.annotations if a.type is AnnotationType.CLASSIFICATION}
    ans_cls = {a.class_id for a in answer.annotations if a.type is AnnotationType.CLASSIFICATION}
    if ref_cls or ans_cls:
        ok = ref_cls == ans_cls
        union = ref_cls | ans_cls
        parts["classification"] = GoldScore(
            len(ref_cls & ans_cls) / len(union),
            ok,
            {"missed": sorted(ref_cls - ans_cls), "extra": sorted(ans_cls - ref_cls)},
        )
    shapes = (BBox, Polygon)
    if any(isinstance(a.geometry, shapes) for a in (*answer.annotations, *reference.annotations)):
        parts["objects"] = score_objects(
            answer.annotations, reference.annotations, iou_threshold=iou_threshold, pass_mark=pass_mark
        )
    if any(isinstance(a.geometry, RLE | VolumeMask) for a in (*answer.annotations, *reference.annotations)):
        parts["masks"] = score_masks(answer.annotations, reference.annotations, dice_threshold=dice_threshold)
    if not parts:
        return GoldScore(1.0, True, {})
    score = float(np.mean([p.score for p in parts.values()]))
    return GoldScore(score, all(p.passed for p in parts.values()), {k: p.to_dict() for k, p in parts.items()})
