from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from medlabel.accounts.service import Actor
from medlabel.api.deps import SessionDep, global_permission
from medlabel.api.schemas import AuditEventRead, AuditVerifyRead
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.security.rbac import Permission
from medlabel.storage.models import AuditEvent

router = APIRouter(prefix="/audit", tags=["audit"])
Auditor = Annotated[Actor, Depends(global_permission(Permission.AUDIT_READ))]


@router.get("/events", response_model=list[AuditEventRead])
def list_events(
    actor: Auditor,
    session: SessionDep,
    since: datetime | None = None,
    action: str | None = None,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventRead]:
    stmt = select(AuditEvent).where(AuditEvent.seq > after_seq).order_by(AuditEvent.seq).limit(limit)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    rows = [AuditEventRead.model_validate(r) for r in session.scalars(stmt)]
    audit.record(
        session, actor.event(AuditAction.AUDIT_READ, object_type="audit", detail={"count": len(rows)})
    )
    return rows


@router.get("/verify", response_model=AuditVerifyRead)
def verify(actor: Auditor, session: SessionDep) -> AuditVerifyRead:
    """Walk the hash chain; name the first record that was changed, removed or inserted."""
    result = audit.verify(session)
    return AuditVerifyRead.model_validate(
        {
            "ok": result.ok,
            "checked": result.checked,
            "problem": result.problem.__dict__ if result.problem else None,
        }
    )
