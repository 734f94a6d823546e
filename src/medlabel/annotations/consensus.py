"""Consensus of independent annotation sets of one item (overlap copies), for adjudication.

When ``k`` annotators label the same item blind, the item's main set starts from their consensus
and a reviewer adjudicates what they disagree on. :func:`build_consensus`:

1. **Groups** the annotations of every copy into clusters of "the same finding": same type, class,
   frame and plane, and geometry that overlaps enough — IoU ≥ ``iou_threshold`` for boxes,
   polygons and masks; distance ≤ ``distance_tolerance`` pixels for points (Euclidean) and
   polylines (symmetric Hausdorff); same class for item classifications. Copies are added one at
   a time; each copy's annotations are matched one-to-one to the clusters so far by the Hungarian
   algorithm on similarity (``scipy.optimize.linear_sum_assignment``), so one copy never puts two
   annotations into one cluster.
2. **Keeps** a cluster when at least ``quorum`` copies contain it (default: a strict majority,
   ``k // 2 + 1``). Its geometry is not averaged (an averaged polygon is not something anyone
   drew): the representative is the medoid, the member most similar on average to the others,
   and keeps its author's provenance with ``derived_from`` naming it. Attribute values are the
   plurality of the members' values, ties going to the representative's.
3. **Answers** an item-level question when a strict majority of the copies gave the same
   answer; other questions are left open and listed in ``disputed_questions`` for the
   adjudicator.

Clusters below the quorum are returned as ``minority`` so the adjudicator sees every finding
someone made. Pure: no database, no I/O.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from shapely.geometry import LineString

from medlabel.annotations.geometry import BBox, Point, Polygon, Polyline, bbox_iou, mask_iou, polygon_iou
from medlabel.annotations.masks import VolumeMask
from medlabel.annotations.model import Annotation, AnnotationSet
from medlabel.annotations.rle import RLE, decode
from medlabel.annotations.schema import AnnotationType
from medlabel.errors import InvalidInput

__all__ = ["Finding", "Consensus", "build_consensus", "similarity"]

Answer = str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """One cluster: the representative annotation, who drew a member of it (copy owners, in copy
    order) and the mean similarity between its members (1.0 for a single member)."""

    annotation: Annotation
    support: tuple[str, ...]
    agreement: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "annotation": self.annotation.to_dict(),
            "support": list(self.support),
            "agreement": self.agreement,
        }


@dataclass(frozen=True, slots=True)
class Consensus:
    """The result of :func:`build_consensus` (see the module docstring)."""

    copies: tuple[str, ...]
    quorum: int
    kept: tuple[Finding, ...]
    minority: tuple[Finding, ...]
    answers: Mapping[str, Answer] = field(default_factory=dict)
    disputed_questions: tuple[str, ...] = ()

    def annotation_set(self, item_id: str, schema_version: int) -> AnnotationSet:
        """The consensus as an unsaved annotation set (version 0)."""
        return AnnotationSet(
            item_id=item_id,
            version=0,
            annotations=tuple(f.annotation for f in self.kept),
            schema_version=schema_version,
            answers=dict(self.answers),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "copies": list(self.copies),
            "quorum": self.quorum,
            "kept": [f.to_dict() for f in self.kept],
            "minority": [f.to_dict() for f in self.minority],
            "answers": {k: list(v) if isinstance(v, tuple) else v for k, v in self.answers.items()},
            "disputed_questions": list(self.disputed_questions),
        }


def _mask(g: RLE | VolumeMask) -> np.ndarray[Any, Any]:
    return decode(g) != 0 if isinstance(g, RLE) else g.to_array()


def similarity(a: Annotation, b: Annotation, *, distance_tolerance: float = 5.0) -> float:
    """How alike two annotations of the same type are, in [0, 1]: IoU for boxes, polygons and
    masks; ``1 / (1 + d)`` for points and polylines at distance ``d`` (0 beyond
    ``distance_tolerance``); 1 for two classifications of the same class. Different type, class,
    frame or plane: 0."""
    if (a.type, a.class_id, a.frame, a.plane) != (b.type, b.class_id, b.frame, b.plane):
        return 0.0
    ga, gb = a.geometry, b.geometry
    if a.type is AnnotationType.CLASSIFICATION:
        return 1.0
    if isinstance(ga, BBox) and isinstance(gb, BBox):
        return bbox_iou(ga, gb)
    if isinstance(ga, Polygon) and isinstance(gb, Polygon):
        return polygon_iou(ga, gb)
    if isinstance(ga, RLE | VolumeMask) and isinstance(gb, RLE | VolumeMask):
        ma, mb = _mask(ga), _mask(gb)
        if ma.shape != mb.shape:
            return 0.0
        return mask_iou(ma, mb)
    if isinstance(ga, Point) and isinstance(gb, Point):
        d = math.dist((ga.x, ga.y), (gb.x, gb.y))
    elif isinstance(ga, Polyline) and isinstance(gb, Polyline):
        d = float(LineString(ga.points).hausdorff_distance(LineString(gb.points)))
    else:
        return 0.0
    return 1.0 / (1.0 + d) if d <= distance_tolerance else 0.0


def _matches(sim: float, a: Annotation, iou_threshold: float) -> bool:
    if a.type in (AnnotationType.POINT, AnnotationType.POLYLINE):
        return sim > 0.0  # within the distance tolerance
    if a.type is AnnotationType.CLASSIFICATION:
        return sim == 1.0
    return sim >= iou_threshold


@dataclass
class _Cluster:
    members: list[tuple[str, Annotation]]


def _key(a: Annotation) -> tuple[Any, ...]:
    return (a.type, a.class_id, a.frame, a.plane)


def _attr_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _finding(cluster: _Cluster, sims: dict[tuple[int, int], float], used_ids: set[str]) -> Finding:
    n = len(cluster.members)
    if n == 1:
        best, agreement = 0, 1.0
    else:
        means = [
            sum(sims[(min(i, j), max(i, j))] for j in range(n) if j != i) / (n - 1) for i in range(n)
        ]
        best = max(range(n), key=lambda i: (means[i], -i))
        agreement = sum(means) / n
    owner, rep = cluster.members[best]
    attrs: dict[str, Any] = {}
    keys = sorted({k for _, a in cluster.members for k in a.attributes})
    for k in keys:
        votes = Counter(_attr_key(a.attributes[k]) for _, a in cluster.members if k in a.attributes)
        top = votes.most_common()
        if k in rep.attributes and (len(top) > 1 and top[0][1] == top[1][1]):
            attrs[k] = rep.attributes[k]  # a tie: the representative's value
        else:
            winner = top[0][0]
            attrs[k] = next(a.attributes[k] for _, a in cluster.members if _attr_key(a.attributes.get(k)) == winner)
    new_id = rep.id if rep.id not in used_ids else f"{rep.id}~{owner}"
    used_ids.add(new_id)
    annotation = replace(
        rep,
        id=new_id,
        attributes=attrs,
        provenance=replace(rep.provenance, derived_from=rep.id),
    )
    return Finding(annotation, tuple(o for o, _ in cluster.members), round(agreement, 6))


def _answer_key(value: Answer) -> Answer:
    return tuple(sorted(value)) if isinstance(value, tuple | list) else value


def build_consensus(
    copies: Mapping[str, AnnotationSet],
    *,
    quorum: int | None = None,
    iou_threshold: float = 0.5,
    distance_tolerance: float = 5.0,
) -> Consensus:
    """The consensus of ``copies`` (owner name → that annotator's set), in the mapping's order."""
    k = len(copies)
    if k < 1:
        raise InvalidInput("a consensus needs at least one annotation set; found none")
    q = k // 2 + 1 if quorum is None else quorum
    if not 1 <= q <= k:
        raise InvalidInput(f"consensus quorum is {q}; expected 1 to {k} (the number of copies)")
    if not 0.0 < iou_threshold <= 1.0:
        raise InvalidInput(f"consensus iou_threshold is {iou_threshold}; expected a value in (0, 1]")
    if distance_tolerance < 0:
        raise InvalidInput(f"consensus distance_tolerance is {distance_tolerance}; expected ≥ 0 pixels")

    clusters: dict[tuple[Any, ...], list[_Cluster]] = {}
    for owner, aset in copies.items():
        by_key: dict[tuple[Any, ...], list[Annotation]] = {}
        for a in aset.annotations:
            by_key.setdefault(_key(a), []).append(a)
        for key, anns in by_key.items():
            existing = clusters.setdefault(key, [])
            taken: set[int] = set()
            if existing:
                m = np.zeros((len(existing), len(anns)))
                for ci, c in enumerate(existing):
                    for ai, a in enumerate(anns):
                        s = [similarity(a, b, distance_tolerance=distance_tolerance) for _, b in c.members]
                        m[ci, ai] = sum(s) / len(s)
                rows, cols = linear_sum_assignment(m, maximize=True)
                for ci, ai in zip(rows, cols, strict=True):
                    if _matches(float(m[ci, ai]), anns[ai], iou_threshold):
                        existing[ci].members.append((owner, anns[ai]))
                        taken.add(int(ai))
            existing.extend(_Cluster([(owner, a)]) for ai, a in enumerate(anns) if ai not in taken)

    kept: list[Finding] = []
    minority: list[Finding] = []
    used: set[str] = set()
    for group in clusters.values():
        for c in group:
            sims = {
                (i, j): similarity(c.members[i][1], c.members[j][1], distance_tolerance=distance_tolerance)
                for i in range(len(c.members))
                for j in range(i + 1, len(c.members))
            }
            f = _finding(c, sims, used)
            (kept if len(c.members) >= q else minority).append(f)

    answers: dict[str, Answer] = {}
    disputed: list[str] = []
    questions = sorted({qid for aset in copies.values() for qid in aset.answers})
    majority = k // 2 + 1
    for qid in questions:
        votes = Counter(_answer_key(aset.answers[qid]) for aset in copies.values() if qid in aset.answers)
        value, n = votes.most_common(1)[0]
        if n >= majority and list(votes.values()).count(n) == 1:
            answers[qid] = value
        else:
            disputed.append(qid)
    return Consensus(tuple(copies), q, tuple(kept), tuple(minority), answers, tuple(disputed))
