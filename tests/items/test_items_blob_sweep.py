"""The blob sweep: orphans go, anything a row names stays, nothing moves while imports are in
flight, and every removal is re-checked (``medlabel.items.blob_sweep``)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.errors import InvalidInput
from medlabel.items import blob_sweep
from medlabel.items.blob_sweep import SweepReport, sweep_blobs
from medlabel.items.models import Instance, Item, QuarantineEntry
from medlabel.jobs import service as jobs
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent, Job

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import ct_series, import_via_api, run_job

ADMIN = Actor(None, "sweeper", "admin")
DAY = timedelta(hours=24)


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Sweep", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def _age(path: Path, hours: float = 48) -> None:
    t = time.time() - hours * 3600
    os.utime(path, (t, t))


def _age_blobs(rt: Any, digests: list[str], hours: float = 48) -> None:
    for d in digests:
        _age(rt.blobs.path(d), hours)


def _sweep(rt: Any, **kw: Any) -> SweepReport:
    kw.setdefault("older_than", DAY)
    kw.setdefault("dry_run", False)
    return sweep_blobs(rt.sessions, rt.blobs, actor=ADMIN, **kw)


def _imported(client, rt, h, pid, tmp_path) -> tuple[int, list[str]]:
    paths, _ = ct_series(tmp_path / "ct", slices=3, rows=8, cols=8)
    report = import_via_api(client, rt, h, pid, paths)
    (item_id,) = {f["item_id"] for f in report["files"]}
    with session_scope(rt.sessions) as s:
        digests = list(s.scalars(select(Instance.blob_sha256).where(Instance.item_id == item_id)))
    assert len(digests) == 3
    return item_id, digests


def _orphan(rt: Any, hours: float = 48) -> str:
    d = rt.blobs.put(f"orphan {uuid.uuid4()}".encode())
    if hours:
        _age(rt.blobs.path(d), hours)
    return str(d)


def _sweep_events(rt: Any) -> list[AuditEvent]:
    with session_scope(rt.sessions) as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "blob.sweep")))


def _job(rt: Any, kind: str, state: str, **values: Any) -> str:
    with session_scope(rt.sessions) as s:
        job = jobs.create_job(s, ADMIN, kind, {})
        job.state = state
        for k, v in values.items():
            setattr(job, k, v)
        return job.id


def test_old_orphans_go_referenced_and_fresh_blobs_stay(client, runtime, team, tmp_path):
    pid, h = team
    item_id, referenced = _imported(client, runtime, h, pid, tmp_path)
    _age_blobs(runtime, referenced)  # as old as the orphan: only the references keep them
    old, fresh = _orphan(runtime), _orphan(runtime, hours=0)
    size = runtime.blobs.path(old).stat().st_size

    report = _sweep(runtime)

    assert not runtime.blobs.exists(old)
    assert runtime.blobs.exists(fresh)
    assert all(runtime.blobs.exists(d) for d in referenced)
    assert (report.blobs_scanned, report.referenced, report.orphaned, report.too_new) == (5, 3, 1, 1)
    assert (report.deleted, report.bytes_freed, report.digests, report.skipped) == (1, size, (old,), "")
    r = client.get(f"/api/v1/items/{item_id}/frames/0/rendered", headers=h)
    assert r.status_code == 200, r.text
    # one audit record with the counts
    (event,) = _sweep_events(runtime)
    assert event.actor == "sweeper" and event.outcome == "success"
    assert event.detail["deleted"] == 1 and event.detail["digests"] == [old]
    assert event.detail["dry_run"] is False


def test_a_dry_run_deletes_nothing_and_says_what_would_go(runtime):
    old = _orphan(runtime)
    tmp = runtime.blobs.tmp_dir / "tmpabc123"
    tmp.write_bytes(b"partial")
    _age(tmp)
    runtime.blobs.reserve("ab" * 32)
    _age(runtime.blobs.path("ab" * 32).parent)

    report = _sweep(runtime, dry_run=True)

    assert runtime.blobs.exists(old) and tmp.exists() and runtime.blobs.path("ab" * 32).parent.is_dir()
    assert report.dry_run and report.deleted == 1 and report.digests == (old,)
    assert report.tmp_files_removed == 1 and report.dirs_removed == 1  # ab/ab (ab/ itself is fresh)
    (event,) = _sweep_events(runtime)
    assert event.detail["dry_run"] is True and event.detail["deleted"] == 1


def test_every_kind_of_reference_counts(runtime, team):
    """Item file, instance, quarantine entry, slide levels in item meta, job parameters and
    results: each keeps its blob; a control orphan beside them goes."""
    pid, _h = team
    named = {k: _orphan(runtime) for k in ("item", "instance", "quarantine", "meta", "result", "params")}
    control = _orphan(runtime)
    now = clock.now()
    with session_scope(runtime.sessions) as s:
        single = Item(
            project_id=pid,
            kind="image",
            dedup_key="sweep:single",
            status="rejected",  # rows of rejected items count too
            created_at=now,
            blob_sha256=named["item"],
            meta={},
        )
        slide = Item(
            project_id=pid,
            kind="slide",
            dedup_key="sweep:slide",
            created_at=now,
            source_format="dicom",
            meta={"instance_blobs": [named["meta"]]},  # levels, with no instance rows here
        )
        s.add_all([single, slide])
        s.flush()
        s.add(
            Instance(
                project_id=pid, item_id=single.id, sop_instance_uid="1.2.3", blob_sha256=named["instance"]
            )
        )
        s.add(
            QuarantineEntry(
                project_id=pid, item_id=single.id, blob_sha256=named["quarantine"], reasons=[], created_at=now
            )
        )
    _job(runtime, "quality.report", "succeeded", result={"html": named["result"], "alerts": 0})
    _job(runtime, "system.selftest", "succeeded", params={"nested": [{"blob": named["params"]}]})

    report = _sweep(runtime)

    assert {k: runtime.blobs.exists(d) for k, d in named.items()} == dict.fromkeys(named, True)
    assert not runtime.blobs.exists(control)
    assert report.referenced == len(named) and report.digests == (control,)


def test_digest_columns_are_found_from_the_tables():
    found = {f"{c.table.name}.{c.name}" for c in blob_sweep.digest_columns()}
    assert {"items.blob_sha256", "instances.blob_sha256", "quarantine.blob_sha256"} <= found


def test_whole_slide_level_blobs_are_kept(client, runtime, team, tmp_path):
    pytest.importorskip("wsidicom")
    from .test_items_dicom_wsi import write_slide

    pid, h = team
    levels, _label, _overview, _ = write_slide(tmp_path / "slide")
    report = import_via_api(client, runtime, h, pid, levels)
    item_id = report["files"][0]["item_id"]
    with session_scope(runtime.sessions) as s:
        item = s.get(Item, item_id)
        assert item is not None and item.kind == "slide"
        level_blobs = list(item.meta["instance_blobs"])
    assert len(level_blobs) == 3
    _age_blobs(runtime, list(runtime.blobs.digests()))
    old = _orphan(runtime)

    swept = _sweep(runtime)

    assert swept.digests == (old,)
    assert all(runtime.blobs.exists(d) for d in level_blobs)
    for level in (11, 9, 8):  # full resolution (ceil(log2(1300))) down to the smallest stored level
        r = client.get(f"/api/v1/items/{item_id}/tiles/{level}/0_0.jpeg", headers=h)
        assert r.status_code == 200, (level, r.text)


@pytest.mark.parametrize("state", ["queued", "running"])
def test_nothing_is_touched_while_an_import_is_in_flight(runtime, state):
    old = _orphan(runtime)
    tmp = runtime.blobs.tmp_dir / "tmpstale"
    tmp.write_bytes(b"x")
    _age(tmp)
    job_id = _job(runtime, "items.import", state)

    report = _sweep(runtime)

    assert runtime.blobs.exists(old) and tmp.exists()
    assert report.deleted == 0 and report.tmp_files_removed == 0
    assert report.blocking_jobs == (f"items.import {job_id}",)
    assert "queued or running" in report.skipped
    (event,) = _sweep_events(runtime)
    assert event.detail["blocking_jobs"] == [f"items.import {job_id}"]
    # once the import has finished, the sweep runs
    with session_scope(runtime.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(state="failed", finished_at=clock.now()))
    assert _sweep(runtime).digests == (old,)
    assert not runtime.blobs.exists(old)


def test_an_import_in_flight_also_keeps_tmp_files_and_directories(runtime):
    tmp = runtime.blobs.tmp_dir / "tmpstale"
    tmp.write_bytes(b"x")
    _age(tmp)
    runtime.blobs.reserve("cd" * 32)
    reserved = runtime.blobs.path("cd" * 32).parent
    _age(reserved)
    _age(reserved.parent)
    _job(runtime, "quality.report", "running")

    report = _sweep(runtime)

    assert tmp.exists() and reserved.is_dir()
    assert "nothing was touched" in report.skipped and report.blobs_scanned == 0


def test_a_job_of_its_own_kind_does_not_block(runtime):
    old = _orphan(runtime)
    _job(runtime, blob_sweep.SWEEP_JOB, "running")
    assert _sweep(runtime).digests == (old,)


def test_a_reference_missed_by_the_first_read_is_caught_before_deleting(
    client, runtime, team, tmp_path, monkeypatch
):
    pid, h = team
    _item_id, referenced = _imported(client, runtime, h, pid, tmp_path)
    _age_blobs(runtime, referenced)
    # as if the rows were committed just after the first read
    monkeypatch.setattr(blob_sweep, "referenced_digests", lambda session: set())
    offered: list[str] = []
    real = blob_sweep._set_aside

    def spy(blobs: Any, batch: Any, *args: Any) -> Any:
        batch = list(batch)
        offered.extend(e.digest for e in batch)
        return real(blobs, batch, *args)

    monkeypatch.setattr(blob_sweep, "_set_aside", spy)

    report = _sweep(runtime)

    assert all(runtime.blobs.exists(d) for d in referenced)
    assert offered == []  # caught by the check before the batch, never moved
    assert (report.orphaned, report.kept_in_use, report.deleted) == (3, 3, 0)


def _after_set_aside(monkeypatch, then) -> None:
    real = blob_sweep._set_aside

    def wrapped(*args: Any, **kw: Any) -> Any:
        moved = real(*args, **kw)
        assert moved, "the test expects blobs to be moved aside"
        then([e.digest for e, _ in moved])
        return moved

    monkeypatch.setattr(blob_sweep, "_set_aside", wrapped)


def test_a_blob_named_while_set_aside_is_put_back(runtime, team, monkeypatch):
    pid, _h = team
    named, unnamed = _orphan(runtime), _orphan(runtime)

    def commit_an_item(_moved: list[str]) -> None:
        assert not runtime.blobs.exists(named)  # really moved aside
        with session_scope(runtime.sessions) as s:
            s.add(
                Item(
                    project_id=pid, kind="image", dedup_key="late", created_at=clock.now(), blob_sha256=named
                )
            )

    _after_set_aside(monkeypatch, commit_an_item)
    report = _sweep(runtime)

    assert runtime.blobs.exists(named) and runtime.blobs.get(named).startswith(b"orphan ")
    assert not runtime.blobs.exists(unnamed)
    assert (report.deleted, report.kept_in_use, report.digests) == (1, 1, (unnamed,))
    assert not any(runtime.blobs.tmp_dir.iterdir())  # the sweep's folder is gone


def test_an_import_that_starts_during_the_sweep_gets_the_batch_back(runtime, monkeypatch):
    a, b = _orphan(runtime), _orphan(runtime)
    _after_set_aside(monkeypatch, lambda moved: _job(runtime, "items.import_session", "running"))

    report = _sweep(runtime)

    assert runtime.blobs.exists(a) and runtime.blobs.exists(b)
    assert report.deleted == 0 and report.kept_in_use == 2
    assert report.skipped and report.blocking_jobs[0].startswith("items.import_session ")
    assert not any(runtime.blobs.tmp_dir.iterdir())


def test_blobs_left_aside_by_an_interrupted_sweep_are_put_back(client, runtime, team, tmp_path):
    pid, h = team
    _item_id, referenced = _imported(client, runtime, h, pid, tmp_path)
    aside = runtime.blobs.tmp_dir / "sweep-deadbeef"
    aside.mkdir()
    os.rename(runtime.blobs.path(referenced[0]), aside / referenced[0])
    _age(aside)

    report = _sweep(runtime)

    assert runtime.blobs.exists(referenced[0]) and not aside.exists()
    assert report.restored == 1 and report.deleted == 0


def test_stale_tmp_files_and_old_empty_directories_go(client, runtime, team, tmp_path):
    pid, h = team
    _item_id, referenced = _imported(client, runtime, h, pid, tmp_path)
    stale, fresh = runtime.blobs.tmp_dir / "tmpold", runtime.blobs.tmp_dir / "tmpnew"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    _age(stale)
    # a fan-out directory no blob of the import lies under (their names are content hashes: a
    # fixed "f0" collided with one of the three about once in a hundred runs)
    used = {p.name for p in runtime.blobs.root.iterdir()}
    top = next(f"{i:02x}" for i in range(0xF0, 0x100) if f"{i:02x}" not in used)
    old_dir, new_dir = top * 32, "e0" * 32
    runtime.blobs.reserve(old_dir)
    runtime.blobs.reserve(new_dir)
    _age(runtime.blobs.path(old_dir).parent)
    _age(runtime.blobs.path(old_dir).parent.parent)
    busy = runtime.blobs.path(referenced[0]).parent
    _age(busy)
    _age(busy.parent)

    report = _sweep(runtime)

    assert not stale.exists() and fresh.exists()
    assert not runtime.blobs.path(old_dir).parent.parent.exists()  # e.g. f0/f0 and then f0
    assert runtime.blobs.path(new_dir).parent.is_dir()
    assert busy.is_dir() and runtime.blobs.exists(referenced[0])
    assert (report.tmp_files_removed, report.dirs_removed) == (1, 2)


def test_older_than_has_a_floor(runtime):
    with pytest.raises(InvalidInput, match="found 0:05:00"):
        _sweep(runtime, older_than=timedelta(minutes=5))
    assert _sweep_events(runtime) == []


def test_the_job_runs_the_sweep(runtime):
    old = _orphan(runtime)
    with session_scope(runtime.sessions) as s:
        job_id = blob_sweep.start_sweep(s, ADMIN, older_than=DAY, dry_run=False).id
    result = run_job(runtime, job_id)
    assert result["deleted"] == 1 and result["digests"] == [old]
    assert not runtime.blobs.exists(old)
    (event,) = _sweep_events(runtime)
    assert event.object_id == job_id


def test_cli_sweep_prints_the_report(runtime, settings, monkeypatch):
    from typer.testing import CliRunner

    from medlabel.cli.main import app

    old = _orphan(runtime)
    monkeypatch.setenv("MEDLABEL_HOME", str(settings.home))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", settings.database_url)
    res = CliRunner().invoke(app, ["blobs", "sweep", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "would delete 1 blobs" in res.output and old in res.output
    assert runtime.blobs.exists(old)
    res = CliRunner().invoke(app, ["blobs", "sweep", "--older-than-hours", "30"])
    assert res.exit_code == 0, res.output
    assert "deleted 1 blobs" in res.output and not runtime.blobs.exists(old)
    res = CliRunner().invoke(app, ["blobs", "sweep", "--older-than-hours", "0.1"])
    assert res.exit_code == 1 and "found 0:06:00" in res.output


def test_report_digest_list_is_capped(runtime, monkeypatch):
    monkeypatch.setattr(blob_sweep, "DIGEST_CAP", 2)
    for _ in range(3):
        _orphan(runtime)
    report = _sweep(runtime)
    assert report.deleted == 3 and len(report.digests) == 2 and report.digests_truncated


def test_admins_queue_a_sweep_through_the_api(client, runtime, team):
    _pid, manager = team
    admin = session_headers(runtime, make_user(runtime, "root", role="admin"))
    old = _orphan(runtime)
    r = client.post("/api/v1/admin/blobs/sweep", headers=manager, json={})
    assert r.status_code == 403, r.text
    r = client.post("/api/v1/admin/blobs/sweep", headers=admin, json={"older_than_hours": 0.5})
    assert r.status_code == 422 and "found 0:30:00" in r.text, r.text
    r = client.post("/api/v1/admin/blobs/sweep", headers=admin, json={"dry_run": True})
    assert r.status_code == 202 and r.json()["kind"] == "items.sweep_blobs", r.text
    result = run_job(runtime, r.json()["id"])
    assert result["dry_run"] is True and result["digests"] == [old]
    assert runtime.blobs.exists(old)


def test_storing_bytes_already_stored_makes_the_blob_young_again(runtime, tmp_path):
    """An import that finds its bytes already in the store (put, put_stream, adopt) refreshes
    the blob's mtime, so a sweep by age never takes a blob an import is about to name."""
    import io
    import os
    import time

    store = runtime.blobs
    for way in ("put", "stream", "adopt"):
        data = f"same bytes, {way}".encode()
        digest = store.put(data)
        old = time.time() - 3 * 86400
        os.utime(store.path(digest), (old, old))
        if way == "put":
            store.put(data)
        elif way == "stream":
            store.put_stream(io.BytesIO(data))
        else:
            src = tmp_path / way
            src.write_bytes(data)
            store.adopt(src, digest)
        assert store.path(digest).stat().st_mtime > time.time() - 60, way
