"""Typed audit events and the hash chain (pure: no DB).

Each record's hash is SHA-256 over the previous record's hash and a canonical JSON of the
record's content (time, actor, address, action, object, project, outcome, detail). The
sequence number is deliberately *not* hashed, so that verification can tell an inserted
record (a later record's ``prev_hash`` points past it) from a changed one (its own hash no
longer matches its content).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "AuditAction",
    "Outcome",
    "AuditEventData",
    "ChainRecord",
    "ChainProblem",
    "GENESIS_HASH",
    "content_hash",
    "verify_chain",
]

GENESIS_HASH = "0" * 64


class AuditAction(StrEnum):
    LOGIN = "auth.login"
    LOGOUT = "auth.logout"
    SESSION_EXPIRED = "auth.session_expired"
    ACCOUNT_LOCKED = "auth.account_locked"
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    PROJECT_CREATE = "project.create"
    PROJECT_UPDATE = "project.update"
    PROJECT_DELETE = "project.delete"
    PROJECT_READ = "project.read"
    MEMBER_ADD = "member.add"
    MEMBER_REMOVE = "member.remove"
    JOB_CREATE = "job.create"
    JOB_READ = "job.read"
    AUDIT_EXPORT = "audit.export"
    AUDIT_READ = "audit.read"
    ACCESS_DENIED = "access.denied"
    # used by the imaging / annotation issues
    IMAGE_READ = "image.read"
    IMAGE_IMPORT = "image.import"
    PHI_READ = "phi.read"
    ANNOTATION_READ = "annotation.read"
    ANNOTATION_WRITE = "annotation.write"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


@dataclass(frozen=True)
class AuditEventData:
    """What a caller records; ``medlabel.audit.service.record`` chains and stores it."""

    action: AuditAction | str
    outcome: Outcome | str = Outcome.SUCCESS
    actor_id: int | None = None
    actor: str = "system"
    ip: str = ""
    object_type: str = ""
    object_id: str = ""
    project_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainRecord:
    seq: int
    at: datetime
    actor_id: int | None
    actor: str
    ip: str
    action: str
    object_type: str
    object_id: str
    project_id: int | None
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    kind: str  # changed | removed | inserted | head
    message: str


def _canonical(
    at: datetime,
    actor_id: int | None,
    actor: str,
    ip: str,
    action: str,
    object_type: str,
    object_id: str,
    project_id: int | None,
    outcome: str,
    detail: dict[str, Any],
) -> bytes:
    doc = {
        "at": at.isoformat(timespec="microseconds"),
        "actor_id": actor_id,
        "actor": actor,
        "ip": ip,
        "action": str(action),
        "object_type": object_type,
        "object_id": object_id,
        "project_id": project_id,
        "outcome": str(outcome),
        "detail": detail,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def content_hash(prev_hash: str, at: datetime, event: AuditEventData | ChainRecord) -> str:
    body = _canonical(
        at,
        event.actor_id,
        event.actor,
        event.ip,
        str(event.action),
        event.object_type,
        event.object_id,
        event.project_id,
        str(event.outcome),
        event.detail,
    )
    return hashlib.sha256(prev_hash.encode() + b"\n" + body).hexdigest()


def verify_chain(
    records: Iterable[ChainRecord], head: tuple[int, str] | None = None
) -> tuple[int, ChainProblem | None]:
    """Walk records in sequence order; return (records checked, first problem or None).

    ``head`` is the stored (last seq, last hash); a mismatch there means records were removed
    from, or appended past, the end of the chain.
    """
    expected_prev = GENESIS_HASH
    expected_seq = 1
    seen: dict[str, int] = {GENESIS_HASH: 0}
    count = 0
    last: ChainRecord | None = None
    for rec in records:
        count += 1
        if content_hash(rec.prev_hash, rec.at, rec) != rec.hash:
            return count, ChainProblem(
                rec.seq, "changed", f"record {rec.seq} was changed: its content no longer matches its hash"
            )
        if rec.prev_hash != expected_prev:
            if rec.prev_hash in seen:
                first_inserted = seen[rec.prev_hash] + 1
                return count, ChainProblem(
                    first_inserted,
                    "inserted",
                    f"record {first_inserted} was inserted: record {rec.seq} links to record "
                    f"{seen[rec.prev_hash]}, not to the record before it",
                )
            if rec.seq > expected_seq:
                return count, ChainProblem(
                    expected_seq,
                    "removed",
                    f"record {expected_seq} was removed: record {rec.seq} links to a record that is gone",
                )
            return count, ChainProblem(
                rec.seq, "removed", f"the record before {rec.seq} was removed or replaced (broken link)"
            )
        if rec.seq != expected_seq and rec.seq > expected_seq:
            return count, ChainProblem(
                expected_seq, "removed", f"records {expected_seq}..{rec.seq - 1} are missing"
            )
        seen[rec.hash] = rec.seq
        expected_prev = rec.hash
        expected_seq = rec.seq + 1
        last = rec
    if head is not None:
        head_seq, head_hash = head
        last_seq = last.seq if last else 0
        last_hash = last.hash if last else GENESIS_HASH
        if head_seq > last_seq:
            return count, ChainProblem(
                last_seq + 1, "removed", f"records {last_seq + 1}..{head_seq} were removed from the end"
            )
        if head_seq < last_seq:
            return count, ChainProblem(
                head_seq + 1, "inserted", f"records {head_seq + 1}..{last_seq} were appended past the head"
            )
        if head_hash != last_hash:
            return count, ChainProblem(last_seq, "head", f"record {last_seq} does not match the stored head")
    return count, None
