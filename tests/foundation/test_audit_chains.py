"""The audit log as several chains: tampering in any chain is named, tails are guarded by each
chain's head, concurrent transactions take different chains (PostgreSQL), old logs migrate."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, select, text, update

from medlabel import clock
from medlabel.audit import service as audit
from medlabel.audit.events import GENESIS_HASH, AuditAction, AuditEventData, content_hash
from medlabel.storage.db import UTCDateTime, make_engine, make_sessionmaker, session_scope
from medlabel.storage.models import AuditEvent, AuditHead

# records 1..12 round-robin over chains 1, 2, 3: chain c holds seq c, c+3, c+6, c+9
SPREAD = (1, 2, 3)


def _ev(i: int) -> AuditEventData:
    return AuditEventData(
        action=AuditAction.PROJECT_READ, actor=f"user{i}", object_id=str(i), detail={"i": i}
    )


def _spread(rt, n: int = 12) -> None:
    for i in range(n):
        with session_scope(rt.sessions) as s:
            audit.record(s, _ev(i), chain=SPREAD[i % len(SPREAD)])


def _verify(rt):
    with session_scope(rt.sessions) as s:
        return audit.verify(s)


def _chain_of(rt, seq: int) -> int:
    with session_scope(rt.sessions) as s:
        return int(s.scalar(select(AuditEvent.chain).where(AuditEvent.seq == seq)))


def test_spread_chains_verify_and_export_in_order(runtime):
    _spread(runtime)
    r = _verify(runtime)
    assert r.ok and r.checked == 12 and r.chains == audit.CHAINS
    with session_scope(runtime.sessions) as s:
        rows = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert [r.seq for r in rows] == list(range(1, 13))
        for c in SPREAD:
            mine = [r for r in rows if r.chain == c]
            assert mine[0].prev_hash == GENESIS_HASH and mine[0].prev_seq == 0
            assert all(
                b.prev_hash == a.hash and b.prev_seq == a.seq for a, b in zip(mine, mine[1:], strict=False)
            )
        heads = audit.heads(s)
        assert len(heads) == audit.CHAINS
        assert heads[2] == (11, rows[10].hash) and heads[4] == (0, GENESIS_HASH)
        out = io.StringIO()
        assert audit.export_jsonl(s, out) == 12
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, 13))
    assert [x["chain"] for x in lines[:4]] == [1, 2, 3, 1]
    # the export carries what is needed to re-check every chain outside the database
    by_chain: dict[int, str] = {}
    for x in lines:
        assert x["prev_hash"] == by_chain.get(x["chain"], GENESIS_HASH)
        by_chain[x["chain"]] = x["hash"]


@pytest.mark.parametrize("seq", [2, 6, 11])
def test_a_changed_record_is_named_in_any_chain(runtime, seq):
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == seq).values(actor="mallory"))
    r = _verify(runtime)
    assert not r.ok and (r.problem.seq, r.problem.kind, r.problem.chain) == (
        seq,
        "changed",
        _chain_of(runtime, seq),
    )


def test_the_first_problem_over_all_chains_is_named(runtime):
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 9).values(detail={"i": 0}))  # chain 3
        s.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(detail={"i": 0}))  # chain 2
    r = _verify(runtime)
    assert (r.problem.seq, r.problem.kind, r.problem.chain) == (5, "changed", 2)


def test_a_removed_record_is_named_in_any_chain(runtime):
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = 6"))  # chain 3, between 3 and 9
    r = _verify(runtime)
    assert (r.problem.seq, r.problem.kind, r.problem.chain) == (6, "removed", 3), r.problem


def test_a_removed_first_record_is_named(runtime):
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    r = _verify(runtime)
    assert (r.problem.seq, r.problem.kind, r.problem.chain) == (2, "removed", 2)


@pytest.mark.parametrize("seq", [10, 11, 12])
def test_a_removed_tail_is_caught_by_its_chains_head(runtime, seq):
    """The last record of each chain (10, 11, 12) is guarded by that chain's head."""
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == seq))
    r = _verify(runtime)
    assert (r.problem.seq, r.problem.kind) == (seq, "removed"), r.problem


def test_removing_the_tail_of_every_chain_names_the_earliest(runtime):
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq >= 10))
    r = _verify(runtime)
    assert (r.problem.seq, r.problem.kind, r.problem.chain) == (10, "removed", 1)


def test_a_truncated_chain_with_its_head_rewound_is_still_caught_by_the_numbering(runtime):
    """Tail truncation is as evident as before: a forger who deletes the last two records of
    chain 2 and rewinds its head to the new last record is caught only by an outside copy of the
    heads -- exactly as with one chain -- but rewinding the head to a record that is gone is not
    enough to hide a middle gap."""
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 8))  # chain 2: 2, 5, [8], 11
        last = s.scalar(select(AuditEvent).where(AuditEvent.seq == 5))
        s.execute(update(AuditHead).where(AuditHead.id == 2).values(seq=last.seq, hash=last.hash))
    r = _verify(runtime)
    # record 11 still links to 8
    assert (r.problem.seq, r.problem.kind, r.problem.chain) == (8, "removed", 2)
    with session_scope(runtime.sessions) as s:
        before = audit.heads(s)
    with session_scope(runtime.sessions) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 11))
    r = _verify(runtime)
    assert r.ok  # the whole tail and the head were rewritten: only an outside copy tells
    with session_scope(runtime.sessions) as s:
        assert audit.heads(s) == before  # ... such as the heads kept with the last export


def test_an_inserted_record_is_named_in_its_chain(runtime):
    """A forger slips a well-formed record into chain 2 after seq 5 and renumbers the rest of
    that chain's links (numbers 13.. are free, so no global renumbering is needed)."""
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        prev = s.scalar(select(AuditEvent).where(AuditEvent.seq == 5))
        forged = AuditEventData(action=AuditAction.PROJECT_DELETE, actor="mallory")
        at = prev.at + timedelta(microseconds=1)
        s.add(
            AuditEvent(
                seq=6_5,
                at=at,
                actor_id=None,
                actor="mallory",
                ip="",
                action=str(forged.action),
                object_type="",
                object_id="",
                project_id=None,
                outcome="success",
                detail={},
                prev_hash=prev.hash,
                hash=content_hash(prev.hash, at, forged),
                chain=2,
                prev_seq=5,
            )
        )
    # seq 65 sorts after the real chain 2 records: give it a number between 5 and 8 instead
    with session_scope(runtime.sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 8).values(seq=100))
        s.execute(update(AuditEvent).where(AuditEvent.seq == 6_5).values(seq=8))
        s.execute(update(AuditEvent).where(AuditEvent.seq == 100).values(seq=13, prev_seq=8))
        s.execute(update(AuditEvent).where(AuditEvent.seq == 11).values(seq=14, prev_seq=13))
        s.execute(update(AuditHead).where(AuditHead.id == 2).values(seq=14))
    r = _verify(runtime)
    assert (r.problem.seq, r.problem.kind, r.problem.chain) == (8, "inserted", 2), r.problem


def test_a_record_moved_to_another_chain_is_caught(runtime):
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(chain=2))
    r = _verify(runtime)
    assert not r.ok and r.problem.seq == 4, r.problem


def test_a_record_in_a_chain_without_head_and_a_missing_head_are_caught(runtime):
    _spread(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 12).values(chain=999))
    r = _verify(runtime)
    assert not r.ok  # chain 3 lost its last record, and chain 999 has no head
    with session_scope(runtime.sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 12).values(chain=3))
        s.execute(delete(AuditHead).where(AuditHead.id == audit.CHAINS))
    r = _verify(runtime)
    assert not r.ok and r.problem.kind == "head" and r.problem.chain == audit.CHAINS


def test_one_transaction_keeps_to_one_chain(runtime):
    _spread(runtime, 3)
    with session_scope(runtime.sessions) as s:
        a = audit.record(s, _ev(100), chain=3)
        b = audit.record(s, _ev(101))  # no chain asked: the one this transaction holds
        c = audit.record(s, _ev(102), chain=1)  # asked for another: still the one it holds
    assert a.chain == b.chain == c.chain == 3
    assert b.prev_seq == a.seq and c.prev_seq == b.seq and c.prev_hash == b.hash
    with session_scope(runtime.sessions) as s:
        assert audit.record(s, _ev(103)).chain == 1  # a new transaction picks afresh
    assert _verify(runtime).ok


def test_a_rolled_back_append_leaves_no_trace(runtime):
    _spread(runtime, 3)
    with pytest.raises(RuntimeError), session_scope(runtime.sessions) as s:
        audit.record(s, _ev(100))
        raise RuntimeError("boom")
    _spread(runtime, 3)
    r = _verify(runtime)
    assert r.ok and r.checked == 6


def test_concurrent_appends_spread_and_verify(runtime):
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(15):
                with session_scope(runtime.sessions) as s:
                    audit.record(
                        s, AuditEventData(action=AuditAction.PROJECT_READ, actor=f"t{k}", detail={"i": i})
                    )
                    audit.record(
                        s, AuditEventData(action=AuditAction.PROJECT_READ, actor=f"t{k}", detail={"j": i})
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    r = _verify(runtime)
    assert r.ok and r.checked == 180, r.problem
    with session_scope(runtime.sessions) as s:
        seqs = s.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
        assert len(set(seqs)) == 180
        # both records of a transaction are adjacent in their chain
        pairs = s.execute(select(AuditEvent.prev_seq, AuditEvent.seq, AuditEvent.detail)).all()
        by_seq = {seq: (prev, d) for prev, seq, d in pairs}
        for prev, d in by_seq.values():
            if "j" in d:
                assert by_seq[prev][1] == {"i": d["j"]}


def test_postgresql_transactions_take_free_chains_without_waiting(runtime):
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: every append goes to chain 1")
    first = runtime.sessions()
    second = runtime.sessions()
    try:
        first.execute(text("SET LOCAL lock_timeout = '2s'"))
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        a = audit.record(first, _ev(1))
        b = audit.record(second, _ev(2))  # would time out if it waited for ``first``
        assert a.chain == 1 and b.chain == 2
        second.commit()
        first.commit()
    finally:
        first.close()
        second.close()
    with session_scope(runtime.sessions) as s:
        assert audit.record(s, _ev(3)).chain == 1
    r = _verify(runtime)
    assert r.ok and r.checked == 3


def test_postgresql_waits_for_a_chain_when_all_are_busy(runtime):
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    big = sa.create_engine(runtime.engine.url, pool_size=audit.CHAINS + 2)  # one connection per chain
    sessions = make_sessionmaker(big)
    holders = [sessions() for _ in range(audit.CHAINS)]
    try:
        for i, s in enumerate(holders):
            assert audit.record(s, _ev(i)).chain == i + 1
        done: list[int] = []

        def late() -> None:
            with session_scope(runtime.sessions) as s:
                done.append(audit.record(s, _ev(99)).chain)

        t = threading.Thread(target=late)
        t.start()
        t.join(0.5)
        assert t.is_alive() and not done  # queued behind a holder
        for s in holders:
            s.commit()
        t.join(10)
        assert len(done) == 1
    finally:
        for s in holders:
            s.close()
        big.dispose()
    r = _verify(runtime)
    assert r.ok and r.checked == audit.CHAINS + 1


def test_a_single_chain_log_migrates_and_keeps_verifying(db_url):
    """A log written by the one-chain design (revision 0004) verifies after the upgrade, and new
    records continue its numbering."""
    from medlabel.storage.migrate import upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0004_merge")
    prev, t0 = GENESIS_HASH, clock.now()
    old = sa.table(  # the table as revision 0004 has it
        "audit_events",
        *(sa.column(n, sa.String) for n in ("actor", "ip", "action", "object_type", "object_id", "outcome")),
        *(sa.column(n, sa.String) for n in ("prev_hash", "hash")),
        sa.column("seq", sa.BigInteger),
        sa.column("actor_id", sa.Integer),
        sa.column("project_id", sa.Integer),
        sa.column("at", UTCDateTime),
        sa.column("detail", sa.JSON),
    )
    with engine.begin() as conn:
        for i in range(1, 6):
            at = t0 + timedelta(seconds=i)
            ev = _ev(i)
            h = content_hash(prev, at, ev)
            conn.execute(
                old.insert().values(
                    seq=i,
                    at=at,
                    actor_id=None,
                    actor=ev.actor,
                    ip="",
                    action=str(ev.action),
                    object_type="",
                    object_id=ev.object_id,
                    project_id=None,
                    outcome="success",
                    detail=ev.detail,
                    prev_hash=prev,
                    hash=h,
                )
            )
            prev = h
        conn.execute(text("UPDATE audit_head SET seq = 5, hash = :h WHERE id = 1"), {"h": prev})
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as s:
        r = audit.verify(s)
        assert r.ok and r.checked == 5, r.problem
        assert audit.record(s, _ev(6)).seq == 6
    with session_scope(sessions) as s:
        assert audit.verify(s).ok
        s.execute(text("DELETE FROM audit_events WHERE seq = 3"))
        r = audit.verify(s)
        assert (r.problem.seq, r.problem.kind) == (3, "removed")
    engine.dispose()
