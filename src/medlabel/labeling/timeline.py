"""An item's timeline: who did what, when — tasks, saves and decisions from the labeling tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.items.models import Item
from medlabel.labeling.common import error_records_of, usernames
from medlabel.labeling.models import (
    SET_MAIN,
    AnnotationSetRow,
    AnnotationSetVersion,
    Review,
    ReviewError,
    Task,
)
from medlabel.projects.service import ProjectAccess
from medlabel.security.rbac import Permission

__all__ = ["timeline"]


def timeline(session: Session, actor: Actor, access: ProjectAccess, item: Item) -> list[dict[str, Any]]:
    """Events oldest first: ``task.create``, ``task.claim``, ``annotation.save``, ``decision``.

    Saves to annotators' blind work copies are listed only for callers who may read them
    (task.assign or quality.read) or for their own."""
    see_all = Permission.TASK_ASSIGN in access.permissions or Permission.QUALITY_READ in access.permissions
    events: list[dict[str, Any]] = []
    tasks = list(session.scalars(select(Task).where(Task.item_id == item.id)))
    visible = [t for t in tasks if not t.is_gold or see_all]
    names = usernames(session, [t.assignee_id for t in tasks] + [t.completed_by for t in tasks])
    for t in visible:
        events.append(
            {"at": t.created_at, "event": "task.create", "stage": t.stage, "task_id": t.id, "user": None}
        )
        if t.claimed_at is not None and t.assignee_id is not None:
            events.append(
                {
                    "at": t.claimed_at,
                    "event": "task.claim",
                    "stage": t.stage,
                    "task_id": t.id,
                    "user": names.get(t.assignee_id, ""),
                    "state": t.state,
                }
            )
    sets = {
        s.id: s for s in session.scalars(select(AnnotationSetRow).where(AnnotationSetRow.item_id == item.id))
    }
    for v in session.scalars(select(AnnotationSetVersion).where(AnnotationSetVersion.item_id == item.id)):
        s = sets.get(v.set_id)
        if s is None:
            continue
        if s.kind != SET_MAIN and not see_all and s.owner_key != actor.user_id:
            continue
        events.append(
            {
                "at": v.saved_at,
                "event": "annotation.save",
                "stage": v.stage,
                "task_id": v.task_id,
                "user": v.saved_by_name,
                "set": s.kind,
                "version": v.version,
                "derived_from": v.derived_from,
            }
        )
    reviews = list(session.scalars(select(Review).where(Review.item_id == item.id)))
    errs: dict[int, list[ReviewError]] = {}
    if reviews:
        for e in session.scalars(
            select(ReviewError).where(ReviewError.review_id.in_([r.id for r in reviews]))
        ):
            errs.setdefault(e.review_id, []).append(e)
    for r in reviews:
        events.append(
            {
                "at": r.at,
                "event": "decision",
                "stage": r.stage,
                "task_id": r.task_id,
                "user": r.username,
                "decision": r.decision,
                "to_stage": r.to_stage,
                "annotation_version": r.annotation_version,
                "comment": r.comment,
                "errors": [e.to_dict() for e in error_records_of(errs.get(r.id, ()))],
            }
        )
    order = {"task.create": 0, "task.claim": 1, "annotation.save": 2, "decision": 3}
    events.sort(key=lambda e: (e["at"], order[e["event"]], e.get("task_id") or 0))
    audit.record(
        session,
        actor.event(
            AuditAction.ANNOTATION_READ,
            object_type="item",
            object_id=str(item.id),
            project_id=item.project_id,
            detail={"timeline": len(events)},
        ),
    )
    for ev in events:
        ev["at"] = ev["at"].isoformat()
    return events
