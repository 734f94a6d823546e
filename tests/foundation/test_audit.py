"""The audit chain catches a changed, a removed and an inserted record; CLI verify and export."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from medlabel import clock
from medlabel.audit import service as audit
from medlabel.audit.events import GENESIS_HASH, AuditAction, AuditEventData, content_hash
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent


def _fill(rt, n: int = 6) -> None:
    for i in range(n):
        with session_scope(rt.sessions) as s:
            audit.record(
                s,
                AuditEventData(
                    action=AuditAction.PROJECT_READ, actor=f"user{i}", object_id=str(i), detail={"i": i}
                ),
            )


def _verify(rt):
    with session_scope(rt.sessions) as s:
        return audit.verify(s)


def test_intact_chain_verifies(runtime):
    _fill(runtime)
    r = _verify(runtime)
    assert r.ok and r.checked == 6
    with session_scope(runtime.sessions) as s:
        rows = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert rows[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))


def test_edited_record_is_named(runtime):
    _fill(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="mallory"))
    r = _verify(runtime)
    assert not r.ok and r.problem.seq == 3 and r.problem.kind == "changed"


def test_edited_detail_is_named(runtime):
    _fill(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(detail={"i": 99}))
    r = _verify(runtime)
    assert r.problem.seq == 5 and r.problem.kind == "changed"


def test_deleted_record_is_named(runtime):
    _fill(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = 4"))
    r = _verify(runtime)
    assert not r.ok and r.problem.seq == 4 and r.problem.kind == "removed"


def test_deleted_last_record_is_caught_by_the_head(runtime):
    _fill(runtime)
    with session_scope(runtime.sessions) as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = 6"))
    r = _verify(runtime)
    assert r.problem.seq == 6 and r.problem.kind == "removed"


def test_inserted_record_is_named(runtime):
    """A forger shifts records 4.. up by one (numbers and links) and slips a well-formed record
    in at 4, in the same chain, and moves that chain's head."""
    _fill(runtime)
    with session_scope(runtime.sessions) as s:
        rows = s.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).all()
        for row in rows:
            if row.seq >= 4:
                s.execute(
                    update(AuditEvent)
                    .where(AuditEvent.id == row.id)
                    .values(seq=row.seq + 1, prev_seq=row.prev_seq + (1 if row.prev_seq >= 4 else 0))
                )
        prev = s.scalar(select(AuditEvent).where(AuditEvent.seq == 3))
        forged = AuditEventData(action=AuditAction.PROJECT_DELETE, actor="mallory")
        at = prev.at + timedelta(milliseconds=1)
        s.add(
            AuditEvent(
                seq=4,
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
                chain=prev.chain,
                prev_seq=3,
            )
        )
        s.execute(text("UPDATE audit_head SET seq = seq + 1 WHERE id = :c"), {"c": prev.chain})
    r = _verify(runtime)
    assert not r.ok and r.problem.seq == 4 and r.problem.kind == "inserted", r.problem


def test_concurrent_appends_keep_one_chain(runtime):
    import threading

    def worker(k: int) -> None:
        for i in range(10):
            with session_scope(runtime.sessions) as s:
                audit.record(
                    s, AuditEventData(action=AuditAction.PROJECT_READ, actor=f"t{k}", detail={"i": i})
                )

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = _verify(runtime)
    assert r.ok and r.checked == 40


def test_login_and_changes_are_audited_with_address(client, runtime):
    from .helpers import PASSWORD, make_user

    make_user(runtime, "root", "admin")
    r = client.post("/api/v1/auth/login", json={"username": "root", "password": PASSWORD})
    h = {"Authorization": f"Bearer {r.json()['token']}"}
    client.post("/api/v1/projects", json={"name": "Lungs"}, headers=h)
    with session_scope(runtime.sessions) as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    actions = [(e.action, e.actor, e.outcome) for e in events]
    assert ("auth.login", "root", "success") in actions
    assert ("project.create", "root", "success") in actions
    login = next(e for e in events if e.action == "auth.login")
    assert login.ip == "testclient" and login.at is not None


@pytest.fixture
def cli_env(tmp_path, monkeypatch, db_url):
    monkeypatch.setenv("MEDLABEL_HOME", str(tmp_path / "clihome"))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", db_url.replace("postgresql://", "postgresql+psycopg://"))
    return tmp_path


def test_cli_verify_exit_codes_and_export(cli_env):
    from typer.testing import CliRunner

    from medlabel.cli.main import app

    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    r = runner.invoke(
        app, ["user", "add", "alice", "--role", "admin", "--password-stdin"], input="a-very-long-password\n"
    )
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["project", "create", "Chest"]).exit_code == 0
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "intact" in ok.output
    out = cli_env / "audit.jsonl"
    r = runner.invoke(app, ["audit", "export", "--since", "2000-01-01", "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["action"] for x in lines] == ["user.create", "project.create"]
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    clock.set_offset(timedelta(days=2))
    future = (clock.now() - timedelta(days=1)).date().isoformat()
    r = runner.invoke(app, ["audit", "export", "--since", future])
    assert r.exit_code == 0 and r.output.strip() == ""
    clock.reset()
    # now tamper, and verify must fail naming the record
    from medlabel.config import load_settings
    from medlabel.storage.db import make_engine

    engine = make_engine(load_settings().database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 2"))
    engine.dispose()
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "record 2" in bad.output and "changed" in bad.output
