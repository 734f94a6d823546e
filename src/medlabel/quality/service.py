"""Quality of a project: load the labeling records, build the report with the pure core.

Where each figure's data comes from:

* classification ratings, boxes, polygons and masks: the independent ``work`` annotation sets of
  overlap items (one per annotator, who could not see each other's work);
* gold accuracy: ``gold_scores``;
* reviews and error records: ``reviews`` and ``review_errors``; the annotator they concern is
  whoever completed the item's ``annotate`` task(s);
* throughput and time per item: completed ``tasks`` with their active seconds.

Targets come from ``project.settings["quality"]`` (``kappa`` default 0.8, ``dice`` default 0.8,
``window_days``, ``min_items``, ``surface_tolerance_mm``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from medlabel.accounts.service import Actor
from medlabel.annotations.geometry import BBox
from medlabel.annotations.geometry import Polygon as GeoPolygon
from medlabel.annotations.masks import VolumeMask
from medlabel.annotations.model import AnnotationSet
from medlabel.annotations.rle import RLE, decode
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.errors import InvalidInput
from medlabel.items.models import Item
from medlabel.labeling.models import (
    SET_WORK,
    TASK_DONE,
    AnnotationSetRow,
    GoldScoreRow,
    Review,
    ReviewError,
    Task,
)
from medlabel.quality.html import render_html
from medlabel.quality.metrics import Box, Polygon
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
from medlabel.storage.models import Project, User

__all__ = [
    "targets_for",
    "set_targets",
    "load_records",
    "project_report",
    "ReportFiles",
    "render_report_files",
]

QUALITY_KEY = "quality"


def targets_for(project: Project) -> Targets:
    raw = (project.settings or {}).get(QUALITY_KEY) or {}
    try:
        return Targets(
            kappa=float(raw.get("kappa", 0.8)),
            dice=float(raw.get("dice", 0.8)),
            window_days=int(raw.get("window_days", 7)),
            min_items=int(raw.get("min_items", 10)),
            surface_tolerance_mm=float(raw.get("surface_tolerance_mm", 2.0)),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"project quality settings {raw!r} are invalid: {exc}") from None


def set_targets(session: Session, actor: Actor, project: Project, targets: Targets) -> Targets:
    """Store the project's quality targets (validated by ``Targets``); audited."""
    settings = dict(project.settings or {})
    settings[QUALITY_KEY] = targets.to_dict()
    project.settings = settings
    project.version += 1
    audit.record(
        session,
        actor.event(
            AuditAction.PROJECT_UPDATE,
            object_type="project",
            object_id=str(project.id),
            project_id=project.id,
            detail={"changed": ["quality_targets"], "targets": targets.to_dict()},
        ),
    )
    return targets


def _answer_value(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return "|".join(sorted(str(x) for x in v))
    return v


def _spacing(item: Item, ndim: int) -> tuple[float, ...] | None:
    sp = (item.meta or {}).get("spacing")
    if isinstance(sp, list | tuple) and len(sp) >= ndim and all(isinstance(x, int | float) for x in sp):
        return tuple(float(x) for x in sp[-ndim:])
    return None


def _records_from_set(
    item: Item, annotator: str, aset: AnnotationSet, at: datetime, out: dict[str, list[Any]]
) -> None:
    key = str(item.id)
    for qid, answer in aset.answers.items():
        out["ratings"].append(ClassificationRating(key, str(qid), annotator, _answer_value(answer), at))
    masks: dict[str, np.ndarray] = {}
    frames = max(1, item.frames)
    for ann in aset.annotations:
        g = ann.geometry
        label = str(ann.class_id)
        if isinstance(g, BBox):
            out["shapes"].append(
                ShapeRecord(key, annotator, label, Box(g.x, g.y, g.x + g.width, g.y + g.height, label), at)
            )
        elif isinstance(g, GeoPolygon):
            out["shapes"].append(
                ShapeRecord(
                    key,
                    annotator,
                    label,
                    Polygon(tuple(g.exterior), tuple(tuple(h) for h in g.holes), label),
                    at,
                )
            )
        elif isinstance(g, RLE):
            plane = getattr(ann.plane, "value", ann.plane)
            if plane not in (None, "axial"):
                continue  # masks drawn on reformatted planes are compared in their own plane later
            m = masks.setdefault(label, np.zeros((frames, g.height, g.width), dtype=bool))
            idx = ann.frame or 0
            if m.shape[1:] == (g.height, g.width) and 0 <= idx < frames:
                m[idx] |= decode(g).astype(bool)
        elif isinstance(g, VolumeMask):
            masks[label] = masks.get(label, np.zeros(0, dtype=bool))
            vol = g.to_array().astype(bool)
            masks[label] = vol if masks[label].size == 0 else (masks[label] | vol)
    for label, m in masks.items():
        arr = m[0] if m.ndim == 3 and m.shape[0] == 1 else m
        out["masks"].append(MaskRecord(key, annotator, label, arr, _spacing(item, arr.ndim), at))


def load_records(session: Session, project_id: int, *, start: datetime, end: datetime) -> ReportInput:
    """Every record of the project relevant to ``[start, end)`` (the core filters precisely)."""
    names = {u.id: u.username for u in session.scalars(select(User))}
    out: dict[str, list[Any]] = defaultdict(list)
    items = {i.id: i for i in session.scalars(select(Item).where(Item.project_id == project_id))}

    # independent work sets of overlap items (two or more owners)
    sets = session.scalars(
        select(AnnotationSetRow).where(
            AnnotationSetRow.project_id == project_id, AnnotationSetRow.kind == SET_WORK
        )
    ).all()
    owners: dict[int, set[int]] = defaultdict(set)
    for row in sets:
        if row.version > 0:
            owners[row.item_id].add(row.owner_key)
    for row in sets:
        if row.version == 0 or len(owners[row.item_id]) < 2 or row.item_id not in items:
            continue
        if not start <= row.updated_at < end:
            continue
        aset = AnnotationSet.from_dict(row.data)
        _records_from_set(
            items[row.item_id], names.get(row.owner_key, str(row.owner_key)), aset, row.updated_at, out
        )

    for g in session.scalars(select(GoldScoreRow).where(GoldScoreRow.project_id == project_id)):
        if g.user_id is not None and start <= g.at < end:
            out["gold"].append(
                GoldOutcome(
                    str(g.item_id), names.get(g.user_id, str(g.user_id)), float(g.score), bool(g.passed), g.at
                )
            )

    annotators: dict[int, list[str]] = defaultdict(list)
    tasks = session.scalars(select(Task).where(Task.project_id == project_id, Task.state == TASK_DONE)).all()
    counts: dict[tuple[int, int], int] = {}
    for row in sets:
        counts[(row.item_id, row.owner_key)] = len((row.data or {}).get("annotations", []))
    for t in tasks:
        if t.completed_by is None or t.completed_at is None:
            continue
        who = names.get(t.completed_by, str(t.completed_by))
        if t.stage == "annotate" and who not in annotators[t.item_id]:
            annotators[t.item_id].append(who)
        if start <= t.completed_at < end:
            n = counts.get((t.item_id, t.completed_by), 0)
            out["work"].append(
                WorkRecord(str(t.item_id), who, t.stage, float(t.active_seconds or 0.0), n, t.completed_at)
            )

    reviews = session.scalars(select(Review).where(Review.project_id == project_id)).all()
    errors_by_review: dict[int, list[ReviewError]] = defaultdict(list)
    if reviews:
        for e in session.scalars(
            select(ReviewError).where(ReviewError.review_id.in_([r.id for r in reviews]))
        ):
            errors_by_review[e.review_id].append(e)
    for r in reviews:
        if not start <= r.at < end or r.stage not in ("review", "validate", "audit"):
            continue
        for who in annotators.get(r.item_id, []) or ["(unknown)"]:
            out["reviews"].append(ReviewOutcome(str(r.item_id), who, r.username, r.stage, r.decision, r.at))
            for e in errors_by_review.get(r.id, []):
                out["errors"].append(
                    ErrorRecord(str(r.item_id), who, r.username, r.stage, e.category, e.severity, r.at)
                )
    return ReportInput(
        ratings=tuple(out["ratings"]),
        shapes=tuple(out["shapes"]),
        masks=tuple(out["masks"]),
        gold=tuple(out["gold"]),
        reviews=tuple(out["reviews"]),
        errors=tuple(out["errors"]),
        work=tuple(out["work"]),
    )


def project_report(
    session: Session,
    project: Project,
    *,
    period: tuple[datetime, datetime],
    bootstrap_n: int = 1000,
    seed: int = 0,
) -> QualityReport:
    records = load_records(session, project.id, start=period[0], end=period[1])
    return build_report(
        records, period=period, targets=targets_for(project), bootstrap_n=bootstrap_n, seed=seed
    )


@dataclass(frozen=True)
class ReportFiles:
    html: str
    csv: str
    json: str


def render_report_files(report: QualityReport, *, title: str) -> ReportFiles:
    return ReportFiles(
        html=render_html(report, title=title),
        csv=report.to_csv(),
        json=json.dumps(report.to_dict(), allow_nan=False, indent=2, sort_keys=True),
    )
