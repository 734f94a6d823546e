"""Recording, verifying and exporting the audit log (the one write path for audit events).

The log is ``CHAINS`` independent hash chains, each with its own head row in ``audit_head``
(``id`` = chain number, last ``seq``, last hash). An append locks one head row until its
transaction ends; with one chain that made every audited transaction of the installation wait
for the one before it to commit. Now:

* **PostgreSQL**: an append takes the first head row nobody holds
  (``FOR UPDATE SKIP LOCKED``), so concurrent transactions append to different chains and never
  wait on each other unless all chains are busy (then it waits for one). ``seq`` comes from the
  sequence ``audit_event_seq``: one order over all chains, increasing within each chain (it is
  drawn while the chain's head is held), with gaps where a transaction rolled back.
* **SQLite**: writers are serialised anyway (``BEGIN IMMEDIATE``), so appends go to chain 1 and
  ``seq`` is one more than the highest head.

A transaction appends all its events to the chain it took first. ``verify`` walks all chains in
one pass and names the first record (lowest ``seq``) that was changed, removed or inserted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, cast

from sqlalchemy import Sequence, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from medlabel import clock
from medlabel.audit.events import (
    AuditEventData,
    ChainProblem,
    ChainRecord,
    content_hash,
    verify_chains,
)
from medlabel.storage.models import AuditEvent, AuditHead

__all__ = ["CHAINS", "record", "verify", "export_jsonl", "VerifyResult", "iter_records", "heads"]

#: How many chains the log has (head rows 1..CHAINS, created by migration ``0005_audit_chains``).
CHAINS = 32
SEQUENCE = Sequence("audit_event_seq")  # PostgreSQL only (created by the migration)
_TX_KEY = "medlabel_audit_chain"

_events = cast(Table, AuditEvent.__table__)
_heads = cast(Table, AuditHead.__table__)

# Statements built once (building one costs more Python time than running it); values are bound
# at execution.
_free = _heads.alias("free")
# the first head nobody holds, else (all busy) wait for one, spread by the backend's process id
_TAKE_FREE = (
    select(_heads.c.id, _heads.c.seq, _heads.c.hash)
    .where(
        _heads.c.id
        == func.coalesce(
            select(_free.c.id)
            .order_by(_free.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery(),
            1 + func.pg_backend_pid() % CHAINS,
        )
    )
    .with_for_update()
)
_LOCK = (
    select(_heads.c.id, _heads.c.seq, _heads.c.hash)
    .where(_heads.c.id == bindparam("chain"))
    .with_for_update()
)
# SQLite: the chain's head and the highest number in use (writers are serialised)
_LOCK_TOP = select(
    _heads.c.id, _heads.c.seq, _heads.c.hash, select(func.max(_free.c.seq)).scalar_subquery().label("top")
).where(_heads.c.id == bindparam("chain"))
_FIELDS = (
    "at",
    "actor_id",
    "actor",
    "ip",
    "action",
    "object_type",
    "object_id",
    "project_id",
    "outcome",
    "detail",
    "prev_hash",
    "hash",
    "chain",
    "prev_seq",
)
_INSERT = insert(_events).values(seq=bindparam("seq"), **{f: bindparam(f) for f in _FIELDS})
_MOVE_HEAD = (
    update(_heads)
    .where(_heads.c.id == bindparam("chain"))
    .values(seq=bindparam("seq"), hash=bindparam("hash"))
)
# PostgreSQL, one round trip: insert with the next global number and move the head to it
_EV = (
    insert(_events)
    .values(seq=SEQUENCE.next_value(), **{f: bindparam(f) for f in _FIELDS})
    .returning(_events.c.seq)
    .cte("ev")
)
_APPEND_PG = (
    update(_heads)
    .where(_heads.c.id == bindparam("chain"))
    .values(seq=select(_EV.c.seq).scalar_subquery(), hash=bindparam("hash"))
    .returning(_heads.c.seq)
)


def record(session: Session, event: AuditEventData, *, chain: int | None = None) -> ChainRecord:
    """Append one event to a chain inside the caller's transaction; returns what was stored.

    Pending ORM changes are flushed first. Call it last in a transaction, after the change it
    records: the chain's head stays locked until the transaction ends. ``chain`` forces a
    chain (tests); by default the transaction's chain is picked as the module doc says.
    """
    session.flush()
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    # one chain per transaction: the one it holds, else the one asked for, else (PostgreSQL) the
    # first one free, else chain 1
    tx = session.get_transaction()
    held = session.info.get(_TX_KEY)
    want = held[1] if held is not None and held[0] is tx else chain
    row: Any
    if pg:
        row = (
            conn.execute(_TAKE_FREE) if want is None else conn.execute(_LOCK, {"chain": want})
        ).one_or_none()
    else:
        row = conn.execute(_LOCK_TOP, {"chain": want or 1}).one_or_none()
    if row is None:
        raise LookupError(f"audit chain {want} has no head row; run the migrations")
    chain_id, prev_seq, prev_hash = int(row.id), int(row.seq), str(row.hash)
    session.info[_TX_KEY] = (tx, chain_id)
    at = clock.now()
    digest = content_hash(prev_hash, at, event)
    values: dict[str, Any] = {
        "at": at,
        "actor_id": event.actor_id,
        "actor": event.actor,
        "ip": event.ip,
        "action": str(event.action),
        "object_type": event.object_type,
        "object_id": str(event.object_id),
        "project_id": event.project_id,
        "outcome": str(event.outcome),
        "detail": event.detail,
        "prev_hash": prev_hash,
        "hash": digest,
        "chain": chain_id,
        "prev_seq": prev_seq,
    }
    if pg:
        seq = int(conn.execute(_APPEND_PG, values).scalar_one())
    else:
        seq = int(row.top or 0) + 1
        conn.execute(_INSERT, {"seq": seq, **values})
        conn.execute(_MOVE_HEAD, {"chain": chain_id, "seq": seq, "hash": digest})
    return ChainRecord(
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
        chain=chain_id,
        prev_seq=prev_seq,
    )


def _to_record(row: Any) -> ChainRecord:
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
        chain=row.chain,
        prev_seq=row.prev_seq,
    )


def iter_records(
    session: Session, *, since: datetime | None = None, batch: int = 2000
) -> Iterator[ChainRecord]:
    """Every record of every chain in global ``seq`` order (``since``: from that time on)."""
    last_seq = -1
    while True:
        stmt = select(_events).where(_events.c.seq > last_seq).order_by(_events.c.seq).limit(batch)
        if since is not None:
            stmt = stmt.where(_events.c.at >= since)
        rows = session.connection().execute(stmt).all()
        if not rows:
            return
        for row in rows:
            yield _to_record(row)
        last_seq = rows[-1].seq


def heads(session: Session) -> dict[int, tuple[int, str]]:
    """Every chain's stored head: chain -> (last seq, last hash). Keep a copy outside the
    database (with the exports) to make a rewrite of whole chains evident too."""
    rows = session.execute(select(AuditHead.id, AuditHead.seq, AuditHead.hash).order_by(AuditHead.id))
    return {int(i): (int(s), str(h)) for i, s, h in rows}


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    problem: ChainProblem | None
    chains: int = 1

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session: Session) -> VerifyResult:
    """Walk every chain (one pass in ``seq`` order) against its head."""
    h = heads(session)
    checked, problem = verify_chains(iter_records(session), h, expected_chains=CHAINS)
    return VerifyResult(checked, problem, max([CHAINS, *h]))


def export_jsonl(session: Session, out: IO[str], *, since: datetime | None = None) -> int:
    """Records as JSON lines in global ``seq`` order, with the chain fields needed to re-check
    the hashes outside the database."""
    n = 0
    for rec in iter_records(session, since=since):
        doc = {
            "seq": rec.seq,
            "chain": rec.chain,
            "prev_seq": rec.prev_seq,
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
