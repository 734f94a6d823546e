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
