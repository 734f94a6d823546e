"""Recording, verifying and exporting the audit log (the one write path for audit events)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from medlabel import clock
from medlabel.audit.events import (
    AuditEventData,
    ChainProblem,
    ChainRecord,
    content_hash,
    verify_chain,
)
from medlabel.storage.models import AuditEvent, AuditHead

__all__ = ["record", "verify", "export_jsonl", "VerifyResult", "iter_records"]


def record(session: Session, event: AuditEventData) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction.

    The head row is updated first: that takes a row lock on PostgreSQL and the write lock on
    SQLite, so concurrent appends are serialised and each links to its true predecessor.
    Call it last in a transaction, after the change it records.
    """
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1))
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    seq, prev_hash = int(head.seq), str(head.hash)
    at = clock.now()
    digest = content_hash(prev_hash, at, event)
    row = AuditEvent(
        seq=seq,
        at=at,
        actor_id=event.actor_id,
        actor=event.actor,
        ip=event.ip,
        action=str(event.action),
        object_type=event.object_type,
        object_id=str(event.object_id),
        project_id=event.project_id,
        outcome=str(event.outcome),
        detail=event.detail,
        prev_hash=prev_hash,
        hash=digest,
    )
    session.add(row)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=digest))
    session.flush()
    return row


def _to_record(row: AuditEvent) -> ChainRecord:
    return ChainRecord(
        seq=row.seq,
        at=row.at,
        actor_id=row.actor_id,
        actor=row.actor,
        ip=row.ip,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        project_id=row.project_id,
        outcome=row.outcome,
        detail=row.detail or {},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def iter_records(
    session: Session, *, since: datetime | None = None, batch: int = 2000
) -> Iterator[ChainRecord]:
    last_seq = -1
    while True:
        stmt = select(AuditEvent).where(AuditEvent.seq > last_seq).order_by(AuditEvent.seq).limit(batch)
        if since is not None:
            stmt = stmt.where(AuditEvent.at >= since)
        rows = session.scalars(stmt).all()
        if not rows:
            return
        for row in rows:
            yield _to_record(row)
        last_seq = rows[-1].seq


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    problem: ChainProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session: Session) -> VerifyResult:
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one_or_none()
    head_t = (int(head.seq), str(head.hash)) if head else None
    checked, problem = verify_chain(iter_records(session), head_t)
    return VerifyResult(checked, problem)


def export_jsonl(session: Session, out: IO[str], *, since: datetime | None = None) -> int:
    n = 0
    for rec in iter_records(session, since=since):
        doc = {
            "seq": rec.seq,
            "at": rec.at.isoformat(),
            "actor_id": rec.actor_id,
            "actor": rec.actor,
            "ip": rec.ip,
            "action": rec.action,
            "object_type": rec.object_type,
            "object_id": rec.object_id,
            "project_id": rec.project_id,
            "outcome": rec.outcome,
            "detail": rec.detail,
            "prev_hash": rec.prev_hash,
            "hash": rec.hash,
        }
        out.write(json.dumps(doc, sort_keys=True) + "\n")
        n += 1
    return n
