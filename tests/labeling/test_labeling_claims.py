"""Claiming under contention (service level, many threads), and the labeling CLI."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import select
from typer.testing import CliRunner

from medlabel.accounts.service import Actor
from medlabel.labeling import task_service
from medlabel.projects.service import require_project
from medlabel.security.rbac import Permission
from medlabel.storage.db import session_scope
from medlabel.storage.models import User

from .helpers import ROOT, make_items, setup_project

WORKERS = 12
ITEMS = 60


def test_concurrent_claims_never_hand_a_task_to_two_people(runtime):
    team = {f"w{i}": ["annotator"] for i in range(WORKERS)}
    pid, items = setup_project(runtime, "Contention", team, n_items=ITEMS)
    with session_scope(runtime.sessions) as s:
        ids = dict(s.execute(select(User.username, User.id)).all())
    got: list[tuple[int, str]] = []
    lock = threading.Lock()
    failures: list[BaseException] = []
    start = threading.Barrier(WORKERS)

    def worker(name: str) -> None:
        actor = Actor(ids[name], name, "user")
        try:
            start.wait()
            while True:
                with session_scope(runtime.sessions) as s:
                    access = require_project(s, actor, pid, Permission.PROJECT_READ)
                    task = task_service.claim_next(s, actor, access, stage=None)
                    if task is None:
                        return
                    # finish it at once so the next claim looks for a new task
                    task.state = "done"
                    with lock:
                        got.append((task.id, name))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in team]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[:3]
    counts = Counter(task_id for task_id, _ in got)
    assert len(counts) == ITEMS and set(counts.values()) == {1}


def test_cli_project_schema_and_tasks_status(tmp_path, monkeypatch):
    from medlabel.cli.main import app

    monkeypatch.setenv("MEDLABEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDLABEL_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["project", "create", "CXR"]).exit_code == 0
    schema = ROOT / "src" / "medlabel" / "annotations" / "examples" / "chest_xray.yaml"
    r = runner.invoke(app, ["project", "schema", "CXR", str(schema)])
    assert r.exit_code == 0, r.output
    assert "version 1" in r.output
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(schema.read_text().replace("  - id: pneumothorax", "  - id: pneumothorax_x"))
    r = runner.invoke(app, ["project", "schema", "CXR", str(smaller)])
    assert r.exit_code == 1 and "code" in r.output  # same code under a new id is refused
    from medlabel.config import load_settings
    from medlabel.runtime import create_runtime

    rt = create_runtime(load_settings())
    try:
        make_items(rt, 1, 3)
    finally:
        rt.close()
    r = runner.invoke(app, ["tasks", "sync", "CXR"])
    assert r.exit_code == 0 and "3 new item(s), 3 task(s)" in r.output, r.output
    r = runner.invoke(app, ["tasks", "status", "CXR"])
    assert r.exit_code == 0, r.output
    assert [ln.split() for ln in r.output.splitlines() if ln.startswith(("annotate", "done"))] == [
        ["annotate", "3", "3", "0"],
        ["done", "0", "0", "0"],
    ]
    assert runner.invoke(app, ["tasks", "status", "Nope"]).exit_code == 1


def _claim(rt, actor: Actor, pid: int):
    with session_scope(rt.sessions) as s:
        access = require_project(s, actor, pid, Permission.PROJECT_READ)
        return task_service.claim_next(s, actor, access, stage=None)


def test_claim_order_leases_and_reclaims_in_one_statement(runtime):
    """The one-statement claim keeps the step-by-step order: the caller's own task (a live hold
    comes back unchanged), a task reserved for them, an abandoned task, then the open pool by
    priority; others' reservations are never taken."""
    from datetime import timedelta

    from sqlalchemy import event, update

    from medlabel import clock
    from medlabel.labeling.models import Task

    pid, items = setup_project(
        runtime,
        "Order",
        {"a1": ["annotator"], "a2": ["annotator"]},
        n_items=5,
        workflow={"lease_seconds": 60},
    )
    with session_scope(runtime.sessions) as s:
        ids = dict(s.execute(select(User.username, User.id)).all())
        tasks = {t.item_id: t.id for t in s.scalars(select(Task).where(Task.project_id == pid))}
        # item 0 is the most urgent; item 4 is reserved for a2 (rework), item 3 for a1
        s.execute(update(Task).where(Task.id == tasks[items[0]]).values(priority=9.0))
        s.execute(update(Task).where(Task.id == tasks[items[4]]).values(reserved=True, assignee_id=ids["a2"]))
        s.execute(update(Task).where(Task.id == tasks[items[3]]).values(reserved=True, assignee_id=ids["a1"]))
    a1, a2 = Actor(ids["a1"], "a1", "user"), Actor(ids["a2"], "a2", "user")

    statements: list[str] = []

    def listen(_c, _cur, st, *_a) -> None:
        statements.append(st)

    event.listen(runtime.engine, "before_cursor_execute", listen)
    try:
        first = _claim(runtime, a1, pid)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", listen)
    assert first.id == tasks[items[3]]  # reserved for a1 beats the more urgent open task
    assert first.claim_count == 1 and first.lease_expires_at == first.claimed_at + timedelta(seconds=60)
    assert sum(st.startswith("UPDATE tasks ") for st in statements) == 1
    assert not any(st.startswith("SELECT") and "FROM tasks" in st for st in statements)

    again = _claim(runtime, a1, pid)  # a live hold: idempotent, nothing changes
    assert (again.id, again.claimed_at, again.lease_expires_at, again.claim_count) == (
        first.id,
        first.claimed_at,
        first.lease_expires_at,
        1,
    )
    assert _claim(runtime, a2, pid).id == tasks[items[4]]  # a2's reservation, not a1's or the pool's

    clock.set_offset(timedelta(seconds=61))  # both leases run out
    later = _claim(runtime, a1, pid)  # own expired hold: renewed, counted as a new claim
    assert later.id == first.id and later.claim_count == 2 and later.claimed_at > first.claimed_at
    with session_scope(runtime.sessions) as s:
        s.execute(update(Task).where(Task.id == first.id).values(state="done"))
    # a2's task is reserved for a2 even with its lease over: a1 gets the open pool
    assert _claim(runtime, a1, pid).id == tasks[items[0]]  # the most urgent open task
    with session_scope(runtime.sessions) as s:
        s.execute(update(Task).where(Task.id == tasks[items[4]]).values(reserved=False))
        s.execute(update(Task).where(Task.id == tasks[items[0]]).values(state="done"))
    assert _claim(runtime, a1, pid).id == tasks[items[4]]  # abandoned by a2, before items 1 and 2
