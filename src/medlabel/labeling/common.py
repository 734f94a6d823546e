"""Helpers shared by the labeling services: per-project settings, users, items, history."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medlabel.accounts.service import Actor
from medlabel.annotations.model import ImageExtent
from medlabel.audit.events import AuditAction, AuditEventData
from medlabel.errors import NotFound
from medlabel.items.models import Item
from medlabel.labeling.models import Review, ReviewError
from medlabel.storage.models import Project, User
from medlabel.workflow import (
    Decision,
    ErrorLocation,
    ErrorRecord,
    ErrorTaxonomy,
    HistoryEvent,
    Severity,
    Stage,
    WorkflowConfig,
)

__all__ = [
    "WORKFLOW_KEY",
    "TAXONOMY_KEY",
    "workflow_config",
    "taxonomy",
    "usernames",
    "user_id_of",
    "get_item",
    "extent_of",
    "history_of",
    "error_records_of",
    "error_to_row",
    "event",
]

WORKFLOW_KEY = "workflow"
TAXONOMY_KEY = "error_categories"


def workflow_config(project: Project) -> WorkflowConfig:
    """The project's workflow settings (``project.settings["workflow"]``), defaults when unset."""
    raw = (project.settings or {}).get(WORKFLOW_KEY) or {}
    return WorkflowConfig.from_dict(raw)


def taxonomy(project: Project) -> ErrorTaxonomy:
    extra = (project.settings or {}).get(TAXONOMY_KEY) or []
    return ErrorTaxonomy(tuple(str(x) for x in extra))


def usernames(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(wanted)))
    return {int(i): str(n) for i, n in rows}


def user_id_of(session: Session, username: str) -> int:
    uid = session.scalar(select(User.id).where(User.username == username))
    if uid is None:
        raise NotFound(f"no user named {username!r}", detail={"field": "username"})
    return int(uid)


def get_item(session: Session, project_id: int, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None or item.project_id != project_id:
        raise NotFound(f"no item with id {item_id} in project {project_id}")
    return item


def extent_of(item: Item) -> ImageExtent:
    return ImageExtent(
        width=max(1, item.width),
        height=max(1, item.height),
        frames=max(1, item.frames),
        is_volume=item.kind == "volume",
    )


def error_records_of(rows: Iterable[ReviewError]) -> tuple[ErrorRecord, ...]:
    out = []
    for r in rows:
        loc = None if r.x is None or r.y is None else ErrorLocation(r.x, r.y, r.frame)
        out.append(ErrorRecord(r.category, Severity(r.severity), r.comment, r.annotation_id, loc))
    return tuple(out)


def error_to_row(review_id: int, e: ErrorRecord) -> ReviewError:
    loc = e.location
    return ReviewError(
        review_id=review_id,
        category=e.category,
        severity=e.severity.value,
        comment=e.comment,
        annotation_id=e.annotation_id,
        x=None if loc is None else loc.x,
        y=None if loc is None else loc.y,
        frame=None if loc is None else loc.frame,
    )


def history_of(session: Session, item_id: int, *, with_errors: bool = False) -> list[HistoryEvent]:
    """The item's decisions as core history events, oldest first."""
    rows = list(session.scalars(select(Review).where(Review.item_id == item_id).order_by(Review.id)))
    errs: dict[int, list[ReviewError]] = {}
    if with_errors and rows:
        for e in session.scalars(select(ReviewError).where(ReviewError.review_id.in_([r.id for r in rows]))):
            errs.setdefault(e.review_id, []).append(e)
    return [
        HistoryEvent(
            r.username, Stage(r.stage), Decision(r.decision), r.at, error_records_of(errs.get(r.id, ()))
        )
        for r in rows
    ]


def as_dict(x: Any) -> dict[str, Any]:
    return dict(x) if isinstance(x, dict) else {}


def event(actor: Actor, action: AuditAction | str, **kw: Any) -> AuditEventData:
    """An audit event by ``actor``; ``action`` may be a labeling action name such as ``task.claim``."""
    return AuditEventData(action=action, actor_id=actor.user_id, actor=actor.username, ip=actor.ip, **kw)
