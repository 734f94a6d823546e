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
from medlabel.errors import PreconditionFailed
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


def _db_cpu(url: str) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend serving ``url``'s database, read from
    /proc (the server runs on this machine in the bench setup); empty for SQLite or elsewhere."""
    if not url.startswith("postgresql"):
        return {}
    tag = f" {make_url(url).database} ".encode()
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
            if not cmd.startswith(b"postgres: ") or tag not in cmd:
                continue
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(d)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return out


def _db_cpu_since(url: str, before: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in _db_cpu(url).items())


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
    claims: list[int],
    elapsed: float,
    n_items: int,
    errors: list[str],
    waits: int,
    app_cpu: float = 0.0,
    db_cpu: float = 0.0,
) -> dict[str, Any]:
    dup = sum(n - 1 for n in Counter(claims).values() if n > 1)
    return {
        "app_cpu_ms": 1000 * app_cpu / max(1, len(claims)),
        "db_cpu_ms": 1000 * db_cpu / max(1, len(claims)),
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

    url = rt.settings.database_url
    db0, cpu0 = _db_cpu(url), time.process_time()
    elapsed = _run_threads(workers, work)
    app_cpu, db_cpu = time.process_time() - cpu0, _db_cpu_since(url, db0)
    return _summary([t for r in results for t in r], elapsed, n_items, errors, len(waits), app_cpu, db_cpu)


def _claim_process(
    url: str, home: str, pid: int, actors: list[Actor], ready: Any, start: Any, out: Any, done: Any
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
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(([t for r in results for t in r], errors, len(waits), time.process_time() - cpu0))
    done.wait()  # keep the connections (and their backends' CPU counters) until measured
    rt.close()


def bench_claims_processes(rt: Runtime, workers: int, n_items: int, processes: int) -> dict[str, Any]:
    """The same work split over ``processes`` processes (as several server processes would)."""
    import multiprocessing as mp

    pid, actors = _setup(rt, workers, n_items)
    ctx = mp.get_context("spawn")
    ready, out, start, done = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    url = rt.settings.database_url
    procs = [
        ctx.Process(
            target=_claim_process,
            args=(url, str(rt.settings.home), pid, actors[k::processes], ready, start, out, done),
        )
        for k in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get()
    db0 = _db_cpu(url)
    t0 = time.perf_counter()
    start.set()
    claims: list[int] = []
    errors: list[str] = []
    waits = 0
    app_cpu = 0.0
    for _ in procs:
        c, e, w, cpu = out.get()
        claims.extend(c)
        errors.extend(e)
        waits += w
        app_cpu += cpu
    elapsed = time.perf_counter() - t0
    db_cpu = _db_cpu_since(url, db0)
    done.set()
    for p in procs:
        p.join()
    return _summary(claims, elapsed, n_items, errors, waits, app_cpu, db_cpu)


def _body(actor: Actor, n: int) -> dict[str, Any]:
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


def _save_loop(
    rt: Runtime, pid: int, actor: Actor, item_id: int, n_saves: int, start: float, interval: float
) -> tuple[list[float], list[str], int]:
    """One worker saving its item ``n_saves`` times with ``If-Match``. ``interval`` > 0 paces the
    saves (one every ``interval`` s from ``start``, a ``time.time()``) and measures each from its
    scheduled time, so a save that starts late because the one before was slow counts the delay
    (no coordinated omission). Returns (latencies in ms, errors, 412 retries)."""
    version, n, stale = 0, 0, 0
    out: list[float] = []
    errors: list[str] = []
    t0 = time.time()
    while n < n_saves:
        if interval > 0:
            t0 = start + n * interval
            wait = t0 - time.time()
            if wait > 0:
                time.sleep(wait)
        try:
            with session_scope(rt.sessions) as s:
                access = require_project(s, actor, pid, Permission.ANNOTATION_WRITE)
                item = s.get(Item, item_id)
                stored = annotation_service.save_annotations(
                    s, actor, access, item, body=_body(actor, n), if_match=version or None
                )
                version = stored.aset.version
        except PoolTimeout:
            continue  # counted in the latency of the save that follows
        except PreconditionFailed:  # someone else saved first: re-read and try again
            stale += 1
            with session_scope(rt.sessions) as s:
                version = annotation_service.load_set(s, item_id, annotation_service.SetRef("main")).version
            continue
        except Exception as exc:  # noqa: BLE001 - counted and shown
            errors.append(repr(exc)[:200])
            break
        out.append((time.time() - t0) * 1000)
        n += 1
        if interval <= 0:
            t0 = time.time()
    return out, errors, stale


def _hold_items(rt: Runtime, pid: int, actors: list[Actor]) -> dict[int, int]:
    """Each actor claims one task; actor id -> the item they hold."""
    held: dict[int, int] = {}
    for actor in actors:
        with session_scope(rt.sessions) as s:
            access = require_project(s, actor, pid, Permission.TASK_ANNOTATE)
            task = task_service.claim_next(s, actor, access, stage=None)
            assert task is not None
            held[actor.user_id or 0] = task.item_id
    return held


def _lost_updates(rt: Runtime, expected: dict[int, int]) -> int:
    """Saves that left no trace: for each item, the set's version and its history must count
    every save that succeeded (versions 1..n, none missing, none twice)."""
    from sqlalchemy import select

    from medlabel.labeling.models import AnnotationSetRow, AnnotationSetVersion

    lost = 0
    with session_scope(rt.sessions) as s:
        for item_id, n in expected.items():
            row = s.scalar(
                select(AnnotationSetRow).where(
                    AnnotationSetRow.item_id == item_id, AnnotationSetRow.kind == "main"
                )
            )
            versions = (
                list(
                    s.scalars(
                        select(AnnotationSetVersion.version)
                        .where(AnnotationSetVersion.set_id == row.id)
                        .order_by(AnnotationSetVersion.version)
                    )
                )
                if row is not None
                else []
            )
            lost += abs(n - len(set(versions))) + (0 if versions == list(range(1, n + 1)) else 1)
            lost += 0 if row is not None and row.version == n else 1
    return lost


def _save_summary(
    latencies: list[float], elapsed: float, errors: list[str], stale: int, lost: int
) -> dict[str, Any]:
    latencies.sort()
    pct = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "saves": len(latencies),
        "seconds": elapsed,
        "per_s": len(latencies) / elapsed,
        "p50_ms": pct[49],
        "p95_ms": pct[94],
        "errors": errors[:3],
        "stale": stale,
        "lost": lost,
    }


def bench_saves(
    rt: Runtime, workers: int, saves_each: int, *, rate: float = 0.0, editors: int = 0
) -> dict[str, Any]:
    """``workers`` threads save their own item ``saves_each`` times; ``rate`` > 0 paces them to
    that many saves per second in all. ``editors`` extra threads (administrators, who need no
    task) save one shared item concurrently, re-reading on 412: the lost-update check."""
    pid, actors = _setup(rt, workers, workers + (1 if editors else 0))
    held = _hold_items(rt, pid, actors)
    shared: int | None = None
    if editors:
        with session_scope(rt.sessions) as s:
            from sqlalchemy import select

            taken = set(held.values())
            shared = next(
                i for i in s.scalars(select(Item.id).where(Item.project_id == pid)) if i not in taken
            )
    team: list[tuple[Actor, int]] = [(a, held[a.user_id or 0]) for a in actors]
    team += [(Actor(None, f"editor{k}", "admin"), shared) for k in range(editors) if shared is not None]
    results: list[tuple[list[float], list[str], int]] = [([], [], 0)] * len(team)
    interval = workers / rate if rate > 0 else 0.0
    start = time.time() + 1.0

    def work(i: int, barrier: threading.Barrier) -> None:
        actor, item_id = team[i]
        barrier.wait()
        offset = i * interval / max(1, workers) if i < workers else 0.0
        results[i] = _save_loop(
            rt, pid, actor, item_id, saves_each, start + offset, interval if i < workers else 0.0
        )

    url = rt.settings.database_url
    db0, cpu0 = _db_cpu(url), time.process_time()
    elapsed = _run_threads(len(team), work)
    app_cpu, db_cpu = time.process_time() - cpu0, _db_cpu_since(url, db0)
    if interval > 0:
        elapsed = max(elapsed - 1.0, 1e-9)  # the paced run starts a second after the barrier
    expected = {item_id: 0 for _a, item_id in team}
    for (_a, item_id), (lat, _e, _s) in zip(team, results, strict=True):
        expected[item_id] += len(lat)
    out = _save_summary(
        [x for lat, _e, _s in results[:workers] for x in lat],
        elapsed,
        [e for _l, errs, _s in results for e in errs],
        sum(st for _l, _e, st in results),
        _lost_updates(rt, expected),
    )
    n = max(1, sum(expected.values()))
    return {**out, "app_cpu_ms": 1000 * app_cpu / n, "db_cpu_ms": 1000 * db_cpu / n}


def _cpu_note(r: dict[str, Any]) -> str:
    """CPU per operation (this process or processes, and PostgreSQL's backends when readable), and
    the rate that CPU alone allows on this machine's cores."""
    total = r["app_cpu_ms"] + r["db_cpu_ms"]
    if total <= 0:
        return ""
    db = f" + PostgreSQL {r['db_cpu_ms']:.1f} ms" if r["db_cpu_ms"] > 0 else ""
    cores = os.cpu_count() or 1
    return f"; CPU per op: Python {r['app_cpu_ms']:.1f} ms{db} (at most {1000 * cores / total:.0f}/s on {cores} cores)"


def _report(
    backend: str, c: dict[str, Any] | None, s: dict[str, Any] | None, workers: int, label: str = ""
) -> None:
    if c is not None:
        print(
            f"[{backend}] claims{label}: {c['claims']} in {c['seconds']:.2f} s = {c['per_s']:.0f}/s with {workers} "
            f"workers; duplicate claims {c['duplicates']}; unclaimed {c['missed']}; pool timeouts "
            f"{c['pool_timeouts']}" + _cpu_note(c) + (f"; errors {c['errors']}" if c["errors"] else "")
        )
    if s is not None:
        print(
            f"[{backend}] saves{label}: {s['saves']} in {s['seconds']:.2f} s = {s['per_s']:.0f}/s; "
            f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms; lost updates {s['lost']}"
            + (f"; 412 retries {s['stale']}" if s["stale"] else "")
            + _cpu_note(s)
            + (f"; errors {s['errors']}" if s["errors"] else "")
        )


def _run(backend: str, url: str, home: Path, args: argparse.Namespace, n_items: int, saves_each: int) -> None:
    rt = create_runtime(Settings(home=home, database_url=url))
    w = args.workers
    try:
        if not args.no_claims:
            _report(backend, bench_claims(rt, w, n_items), None, w)
            if args.processes > 1:
                p = bench_claims_processes(rt, w, n_items, args.processes)
                _report(backend, p, None, w, f" over {args.processes} processes")
        if not args.no_saves:
            s = bench_saves(rt, w, saves_each, editors=args.editors)
            _report(backend, None, s, w, f" (as fast as they go, + {args.editors} editors on one item)")
            if args.save_rate > 0:
                s = bench_saves(rt, w, saves_each, rate=args.save_rate)
                _report(backend, None, s, w, f" (paced at {args.save_rate:.0f}/s offered)")
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
    ap.add_argument("--no-claims", action="store_true")
    ap.add_argument("--no-saves", action="store_true")
    ap.add_argument(
        "--save-rate",
        type=float,
        default=200.0,
        help="also run the saves paced at this many per second (0: no)",
    )
    ap.add_argument(
        "--editors", type=int, default=5, help="threads saving one shared item (lost-update check)"
    )
    args = ap.parse_args()
    n_items, saves_each = (500, 10) if args.quick else (5000, 40)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sqlite:
            _run("sqlite", f"sqlite:///{tmp}/bench.db", Path(tmp) / "h1", args, n_items, saves_each)
        if not args.no_pg:
            base = make_url(normalize_database_url(args.pg))
            name = f"medlabel_bench_{os.getpid()}"
            admin = create_engine(base, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = base.set(database=name).render_as_string(hide_password=False)
                _run("postgresql", url, Path(tmp) / "h2", args, n_items, saves_each)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


if __name__ == "__main__":
    main()
