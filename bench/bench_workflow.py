"""Task claims and annotation saves under contention, on SQLite and PostgreSQL.

Run: .venv/bin/python bench/bench_workflow.py [--quick] [--workers 50] [--processes N] [--pg URL] [--no-pg]

* claims: ``--workers`` threads (one user each) loop "claim the next annotate task, submit it"
  through the real services (``task_service.claim_next``, ``review_service.submit``), each step
  its own transaction, until the pool is empty. Reports claims/s and duplicate claims (a task
  handed to two people; must be 0). ``--processes N`` repeats it with the workers split over N
  processes (each with its own engine), as several server processes would share the work.
* saves: the same threads each hold one task and save their item's annotation set repeatedly
  (``annotation_service.save_annotations``: validation, If-Match, version history, audit event).
  Reports saves/s and latency percentiles.

PostgreSQL: a scratch database is created on the server ``--pg`` names (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped afterwards.
Goals (issue 4): >= 1000 claims/s on PostgreSQL; >= 200 saves/s with p95 <= 150 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.config import Settings, normalize_database_url
from medlabel.items.models import Item
from medlabel.labeling import annotation_service, review_service, schema_service, task_service
from medlabel.projects import service as projects
from medlabel.projects.service import require_project
from medlabel.runtime import Runtime, create_runtime
from medlabel.security.rbac import Permission
from medlabel.storage.db import session_scope
from medlabel.storage.models import Project, User
from medlabel.workflow import WorkflowConfig

SCHEMA = {
    "name": "bench",
    "version": 1,
    "classes": [{"id": "lesion", "name": "Lesion", "types": ["bbox", "polygon"]}],
    "questions": [{"id": "quality", "text": "Quality", "kind": "single", "options": ["good", "poor"]}],
}
ADMIN = Actor(None, "bench", "admin")


def _setup(rt: Runtime, workers: int, n_items: int) -> tuple[int, list[Actor]]:
    with session_scope(rt.sessions) as s:
        project = projects.create_project(s, ADMIN, f"bench-{time.time_ns()}")
        schema_service.put_schema(s, ADMIN, project, schema=schema_service.parse_schema_document(SCHEMA))
        task_service.set_workflow(
            s, ADMIN, project, config=WorkflowConfig(review=False, lease_seconds=3600), error_categories=[]
        )
        pid = project.id
        actors = []
        for i in range(workers):
            name = f"bench{pid}_{i}"
            user = User(
                username=name,
                display_name=name,
                password_hash="x",
                role="user",
                is_active=True,
                failed_logins=0,
                created_at=clock.now(),
            )
            s.add(user)
            s.flush()
            projects.add_member(s, ADMIN, project, name, "annotator")
            actors.append(Actor(user.id, name, "user"))
        now = clock.now()
        s.add_all(
            Item(
                project_id=pid,
                kind="image",
                name=f"i{i}",
                dedup_key=f"b{i}",
                width=1024,
                height=1024,
                frames=1,
                created_at=now,
                meta={},
            )
            for i in range(n_items)
        )
    with session_scope(rt.sessions) as s:
        task_service.sync_tasks(s, ADMIN, s.get(Project, pid), seed=1)
    return pid, actors


def _run_threads(workers: int, target: Any) -> float:
    barrier = threading.Barrier(workers + 1)
    threads = [threading.Thread(target=target, args=(i, barrier)) for i in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def _claim_loop(
    rt: Runtime, pid: int, actor: Actor, out: list[int], errors: list[str], waits: list[int]
) -> None:
    """One worker: claim the next task, submit it (two transactions), until the pool is empty."""
    task_id: int | None = None
    try:
        while True:
            try:
                if task_id is None:
                    with session_scope(rt.sessions) as s:
                        access = require_project(s, actor, pid, Permission.TASK_ANNOTATE)
                        task = task_service.claim_next(s, actor, access, stage=None)
                        if task is None:
                            return
                        task_id = task.id
                    out.append(task_id)
                with session_scope(rt.sessions) as s:
                    access = require_project(s, actor, pid, Permission.TASK_ANNOTATE)
                    review_service.submit(s, actor, access, task_id)
                task_id = None
            except PoolTimeout:  # more workers than pooled connections: wait and retry
                waits.append(1)
    except Exception as exc:  # noqa: BLE001 - counted and shown
        errors.append(repr(exc)[:200])


def _summary(
    claims: list[int], elapsed: float, n_items: int, errors: list[str], waits: int
) -> dict[str, Any]:
    dup = sum(n - 1 for n in Counter(claims).values() if n > 1)
    return {
        "claims": len(claims),
        "seconds": elapsed,
        "per_s": len(claims) / elapsed,
        "duplicates": dup,
        "errors": errors[:3],
        "missed": n_items - len(set(claims)),
        "pool_timeouts": waits,
    }


def bench_claims(rt: Runtime, workers: int, n_items: int) -> dict[str, Any]:
    pid, actors = _setup(rt, workers, n_items)
    results: list[list[int]] = [[] for _ in actors]
    errors: list[str] = []
    waits: list[int] = []

    def work(i: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        _claim_loop(rt, pid, actors[i], results[i], errors, waits)

    elapsed = _run_threads(workers, work)
    return _summary([t for r in results for t in r], elapsed, n_items, errors, len(waits))


def _claim_process(
    url: str, home: str, pid: int, actors: list[Actor], ready: Any, start: Any, out: Any
) -> None:
    rt = create_runtime(Settings(home=Path(home), database_url=url), migrate=False)
    results: list[list[int]] = [[] for _ in actors]
    errors: list[str] = []
    waits: list[int] = []
    threads = [
        threading.Thread(target=_claim_loop, args=(rt, pid, a, results[i], errors, waits))
        for i, a in enumerate(actors)
    ]
    ready.put(1)
    start.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rt.close()
    out.put(([t for r in results for t in r], errors, len(waits)))


def bench_claims_processes(rt: Runtime, workers: int, n_items: int, processes: int) -> dict[str, Any]:
    """The same work split over ``processes`` processes (as several server processes would)."""
    import multiprocessing as mp

    pid, actors = _setup(rt, workers, n_items)
    ctx = mp.get_context("spawn")
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    url = rt.settings.database_url
    procs = [
        ctx.Process(
            target=_claim_process,
            args=(url, str(rt.settings.home), pid, actors[k::processes], ready, start, out),
        )
        for k in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get()
    t0 = time.perf_counter()
    start.set()
    claims: list[int] = []
    errors: list[str] = []
    waits = 0
    for _ in procs:
        c, e, w = out.get()
        claims.extend(c)
        errors.extend(e)
        waits += w
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return _summary(claims, elapsed, n_items, errors, waits)


def bench_saves(rt: Runtime, workers: int, saves_each: int) -> dict[str, Any]:
    pid, actors = _setup(rt, workers, workers)
    held: dict[int, int] = {}
    for actor in actors:
        with session_scope(rt.sessions) as s:
            access = require_project(s, actor, pid, Permission.TASK_ANNOTATE)
            task = task_service.claim_next(s, actor, access, stage=None)
            assert task is not None
            held[actor.user_id or 0] = task.item_id
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def body(actor: Actor, n: int) -> dict[str, Any]:
        anns = [
            {
                "id": f"{actor.username}-{n}-{k}",
                "type": "bbox",
                "class_id": "lesion",
                "geometry": {"x": 10.0 + 5 * k, "y": 20.0, "width": 30.0, "height": 30.0},
                "provenance": {"created_at": clock.now().isoformat(), "created_by_user": actor.username},
            }
            for k in range(5)
        ]
        return {"annotations": anns, "answers": {"quality": "good"}}

    def work(i: int, barrier: threading.Barrier) -> None:
        actor = actors[i]
        item_id = held[actor.user_id or 0]
        version = 0
        barrier.wait()
        mine: list[float] = []
        n = 0
        t0 = time.perf_counter()
        try:
            while n < saves_each:
                try:
                    with session_scope(rt.sessions) as s:
                        access = require_project(s, actor, pid, Permission.ANNOTATION_WRITE)
                        item = s.get(Item, item_id)
                        stored = annotation_service.save_annotations(
                            s, actor, access, item, body=body(actor, n), if_match=version or None
                        )
                        version = stored.aset.version
                except PoolTimeout:
                    continue  # counted in the latency of the save that follows
                mine.append((time.perf_counter() - t0) * 1000)
                n += 1
                t0 = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - counted and shown
            errors.append(repr(exc)[:200])
        with lock:
            latencies.extend(mine)

    elapsed = _run_threads(workers, work)
    latencies.sort()
    pct = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "saves": len(latencies),
        "seconds": elapsed,
        "per_s": len(latencies) / elapsed,
        "p50_ms": pct[49],
        "p95_ms": pct[94],
        "errors": errors[:3],
    }


def _report(backend: str, c: dict[str, Any], s: dict[str, Any], workers: int) -> None:
    print(
        f"[{backend}] claims: {c['claims']} in {c['seconds']:.2f} s = {c['per_s']:.0f}/s with {workers} workers; "
        f"duplicate claims {c['duplicates']}; unclaimed {c['missed']}; pool timeouts {c['pool_timeouts']}"
        + (f"; errors {c['errors']}" if c["errors"] else "")
    )
    print(
        f"[{backend}] saves: {s['saves']} in {s['seconds']:.2f} s = {s['per_s']:.0f}/s; "
        f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms"
        + (f"; errors {s['errors']}" if s["errors"] else "")
    )


def _run(
    backend: str, url: str, home: Path, workers: int, n_items: int, saves_each: int, processes: int
) -> None:
    rt = create_runtime(Settings(home=home, database_url=url))
    try:
        c = bench_claims(rt, workers, n_items)
        s = bench_saves(rt, workers, saves_each)
        _report(backend, c, s, workers)
        if processes > 1:
            p = bench_claims_processes(rt, workers, n_items, processes)
            print(
                f"[{backend}] claims over {processes} processes: {p['claims']} in {p['seconds']:.2f} s = "
                f"{p['per_s']:.0f}/s with {workers} workers; duplicate claims {p['duplicates']}; "
                f"unclaimed {p['missed']}" + (f"; errors {p['errors']}" if p["errors"] else "")
            )
    finally:
        rt.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run (CI smoke)")
    ap.add_argument("--workers", type=int, default=50)
    ap.add_argument(
        "--pg", default=os.environ.get("MEDLABEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--processes", type=int, default=0, help="also run the claims split over N processes")
    args = ap.parse_args()
    n_items, saves_each = (500, 10) if args.quick else (5000, 40)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sqlite:
            _run(
                "sqlite",
                f"sqlite:///{tmp}/bench.db",
                Path(tmp) / "h1",
                args.workers,
                n_items,
                saves_each,
                args.processes,
            )
        if not args.no_pg:
            base = make_url(normalize_database_url(args.pg))
            name = f"medlabel_bench_{os.getpid()}"
            admin = create_engine(base, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = base.set(database=name).render_as_string(hide_password=False)
                _run("postgresql", url, Path(tmp) / "h2", args.workers, n_items, saves_each, args.processes)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


if __name__ == "__main__":
    main()
