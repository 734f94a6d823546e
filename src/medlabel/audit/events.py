"""Typed audit events and the hash chains (pure: no DB).

Each record's hash is SHA-256 over the previous record's hash *in its chain* and a canonical JSON
of the record's content (time, actor, address, action, object, project, outcome, detail).

The log is several independent chains (``chain`` 1..N, one head row each) so that concurrent
transactions append without waiting for each other; ``seq`` is one global order over all of them
(what export and the API sort and page by), and ``prev_seq`` names the record a record links to.
``seq``, ``chain`` and ``prev_seq`` are deliberately *not* hashed, so that verification can tell
an inserted record (a later record's ``prev_hash`` points past it) from a changed one (its own
hash no longer matches its content), and can name a removed record by the number its successor
(or its chain's head) still carries.
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
    "ChainWalker",
    "verify_chain",
    "verify_chains",
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
    BLOB_DELETE = "blob.delete"
    BLOB_SWEEP = "blob.sweep"
    BLOB_SCRUB = "blob.scrub"
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
    chain: int = 1
    prev_seq: int = 0


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    kind: str  # changed | removed | inserted | head
    message: str
    chain: int = 1


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


class ChainWalker:
    """Checks one chain, fed its records in ``seq`` order; ``problem`` is the first one found.

    * **changed**: a record's hash no longer matches its content;
    * **inserted**: a record links to an earlier record than the one before it (the records in
      between were slipped in), or records follow the chain's head;
    * **removed**: a record links to a record that is gone (named by the ``prev_seq`` it still
      carries), or the head names a last record that is gone;
    * **head**: the last record does not match the head's hash.
    """

    def __init__(self, chain: int = 1) -> None:
        self.chain = chain
        self.count = 0
        self.problem: ChainProblem | None = None
        self._prev_hash = GENESIS_HASH
        self._prev_seq = 0
        self._last: ChainRecord | None = None
        # hash -> seq of every record walked, and seq -> the seq walked right after it
        self._seen: dict[str, int] = {GENESIS_HASH: 0}
        self._after: dict[int, int] = {}
        self._first_past_head: int | None = None
        self._head_seq: int | None = None

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last record accepted (0 before any)."""
        return self._last.seq if self._last is not None else 0

    def expect_head(self, head_seq: int) -> None:
        """Tell the walker the head's last seq up front, so it can name the first record appended
        past it."""
        self._head_seq = head_seq

    def _fail(self, seq: int, kind: str, message: str) -> bool:
        self.problem = ChainProblem(seq, kind, message, self.chain)
        return False

    def feed(self, rec: ChainRecord) -> bool:
        """Check the next record; False once a problem was found (later records are ignored)."""
        if self.problem is not None:
            return False
        self.count += 1
        c = self.chain
        if content_hash(rec.prev_hash, rec.at, rec) != rec.hash:
            return self._fail(
                rec.seq, "changed", f"record {rec.seq} was changed: its content no longer matches its hash"
            )
        if rec.prev_hash != self._prev_hash:
            if rec.prev_hash in self._seen:
                linked = self._seen[rec.prev_hash]
                first = self._after.get(linked, rec.seq)
                return self._fail(
                    first,
                    "inserted",
                    f"record {first} was inserted: record {rec.seq} links to record {linked}, "
                    f"not to the record before it (chain {c})",
                )
            if rec.prev_seq > self._prev_seq:
                return self._fail(
                    rec.prev_seq,
                    "removed",
                    f"record {rec.prev_seq} was removed: record {rec.seq} links to it and it is gone "
                    f"(chain {c}; any records between {self._prev_seq} and it are gone too)",
                )
            return self._fail(
                rec.seq,
                "removed",
                f"the record before {rec.seq} was removed or replaced (broken link, chain {c})",
            )
        if rec.prev_seq != self._prev_seq:
            # the links hold but the numbering does not: records were taken out and the rest
            # re-hashed, or the numbers edited
            if rec.prev_seq > self._prev_seq:
                return self._fail(
                    rec.prev_seq,
                    "removed",
                    f"record {rec.prev_seq} is missing: record {rec.seq} follows it in chain {c}",
                )
            return self._fail(rec.seq, "changed", f"record {rec.seq} was changed: its link number was edited")
        if self._last is not None:
            self._after[self._last.seq] = rec.seq
        if self._head_seq is not None and self._first_past_head is None and rec.seq > self._head_seq:
            self._first_past_head = rec.seq
        self._seen[rec.hash] = rec.seq
        self._prev_hash = rec.hash
        self._prev_seq = rec.seq
        self._last = rec
        return True

    def finish(self, head: tuple[int, str] | None) -> ChainProblem | None:
        """Compare the end of the chain with its stored head ``(last seq, last hash)``."""
        if self.problem is not None or head is None:
            return self.problem
        head_seq, head_hash = head
        c = self.chain
        last_seq = self._last.seq if self._last else 0
        last_hash = self._last.hash if self._last else GENESIS_HASH
        if head_seq > last_seq:
            self._fail(
                head_seq,
                "removed",
                f"record {head_seq} was removed from the end of chain {c} "
                f"(with any records of the chain after {last_seq})",
            )
        elif head_seq < last_seq:
            first = self._first_past_head if self._first_past_head is not None else last_seq
            self._fail(first, "inserted", f"records from {first} on were appended past the head of chain {c}")
        elif head_hash != last_hash:
            self._fail(last_seq, "head", f"record {last_seq} does not match the stored head of chain {c}")
        return self.problem


def verify_chain(
    records: Iterable[ChainRecord], head: tuple[int, str] | None = None
) -> tuple[int, ChainProblem | None]:
    """Walk one chain's records in sequence order; return (records checked, first problem or None).

    ``head`` is the stored (last seq, last hash); a mismatch there means records were removed
    from, or appended past, the end of the chain.
    """
    walker: ChainWalker | None = None
    for rec in records:
        if walker is None:
            walker = ChainWalker(rec.chain)
            if head is not None:
                walker.expect_head(head[0])
        if not walker.feed(rec):
            break
    if walker is None:
        walker = ChainWalker()
    return walker.count, walker.finish(head)


def verify_chains(
    records: Iterable[ChainRecord], heads: dict[int, tuple[int, str]], *, expected_chains: int = 1
) -> tuple[int, ChainProblem | None]:
    """Walk every chain at once over ``records`` in global ``seq`` order (one pass).

    ``heads`` maps each chain to its stored (last seq, last hash); chains 1..``expected_chains``
    (and up to the highest head) must all have a head. Returns (records checked, the problem with
    the lowest ``seq`` over all chains, or None).
    """
    n = max([expected_chains, *heads])
    walkers = {c: ChainWalker(c) for c in range(1, n + 1)}
    for c, (head_seq, _h) in heads.items():
        walkers[c].expect_head(head_seq)
    problems: list[ChainProblem] = []
    count = 0
    orphan: ChainRecord | None = None
    for rec in records:
        count += 1
        w = walkers.get(rec.chain)
        if w is None:
            orphan = orphan or rec
            continue
        w.feed(rec)
    for c in sorted(walkers):
        if c not in heads:
            problems.append(
                ChainProblem(
                    walkers[c].last_seq,
                    "head",
                    f"the head of chain {c} is missing (removed?)",
                    c,
                )
            )
            continue
        p = walkers[c].finish(heads[c])
        if p is not None:
            problems.append(p)
    if orphan is not None:
        problems.append(
            ChainProblem(
                orphan.seq,
                "inserted",
                f"record {orphan.seq} was inserted: it belongs to chain {orphan.chain}, which has no head",
                orphan.chain,
            )
        )
    if not problems:
        return count, None
    return count, min(problems, key=lambda p: (p.seq, p.chain))
