"""Rendered 512x512 CT slice, warm, 20 concurrent clients: medlabel vs Orthanc ``/rendered``.

Both servers run on loopback over real HTTP in their own processes (medlabel: ``medlabel serve``,
with one server process and again with ``--workers 2``; Orthanc: the Debian package with a
temporary configuration). "Warm" means after one pass over the slices. medlabel is measured
twice: *decoded-warm* (every request has a different window, so each one windows and PNG-encodes
from the cached volume) and *response-warm* (the same URLs again, served from the
encoded-response cache). Orthanc renders ``/instances/{id}/rendered`` (PNG) each time.

The client is 20 threads, each with one keep-alive ``http.client`` connection (about 0.3 ms of
CPU per request; httpx needs about 1 ms, and on a small machine the client shares the CPU with
the server it measures). "server CPU" is the user+system CPU time of the server's processes
(all of them) divided by the requests of the pass.

Run: .venv/bin/python bench/bench_render.py [--quick] [--workers 1,2]
(``MEDLABEL_BENCH_DATABASE_URL=postgresql://...`` runs medlabel on PostgreSQL instead of SQLite;
the database must be empty.)
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from bench_ingest import ct_series, free_port, orthanc  # type: ignore[import-not-found]

CLIENTS = 20


def _percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


def hammer(base: str, urls: list[str], headers: dict[str, str]) -> tuple[float, float, float]:
    """GET every URL from CLIENTS threads, each with one keep-alive connection opened before the
    clock starts (as a browser that already talks to the server); return p50 and p95 latency
    (ms) and requests/s. Every response must be 200."""
    lat: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    where = urlsplit(base)
    todo = queue.SimpleQueue[str]()
    for u in urls:
        todo.put(u)
    ready = threading.Barrier(CLIENTS + 1)

    def client() -> None:
        c = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=60)
        try:
            c.connect()
            ready.wait()
            while True:
                try:
                    u = todo.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                c.request("GET", u, headers=headers)
                r = c.getresponse()
                r.read()
                dt = (time.perf_counter() - t0) * 1000
                if r.status != 200:
                    raise RuntimeError(f"GET {u}: HTTP {r.status}")
                with lock:
                    lat.append(dt)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            with lock:
                errors.append(exc)
            ready.abort()
        finally:
            c.close()

    gc.collect()
    gc.freeze()  # the client's own full collections would stall every thread (and any server)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    p50, p95 = _percentiles(lat)
    return p50, p95, len(urls) / wall


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu(pid: int) -> float | None:
    """User+system CPU seconds of ``pid`` and all its descendants (Linux /proc), else None."""
    try:
        children: dict[int, list[int]] = {}
        own: dict[int, float] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            f = stat[stat.rindex(")") + 2 :].split()
            own[int(d)] = (int(f[11]) + int(f[12])) / _TICK
            children.setdefault(int(f[1]), []).append(int(d))
    except OSError:
        return None
    if pid not in own:
        return None
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += own.get(p, 0.0)
        stack.extend(children.get(p, ()))
    return total


@dataclass
class Server:
    base: str
    headers: dict[str, str]
    item_id: int
    pid: int
    stop: Callable[[], None]

    def measure(self, urls: list[str]) -> tuple[float, float, float, float | None]:
        """hammer() plus the server's CPU milliseconds per request."""
        c0 = tree_cpu(self.pid)
        p50, p95, rps = hammer(self.base, urls, self.headers)
        c1 = tree_cpu(self.pid)
        cpu = (c1 - c0) * 1000 / len(urls) if c0 is not None and c1 is not None else None
        return p50, p95, rps, cpu


@dataclass
class Prepared:
    """A medlabel home with the files imported, an admin and a bearer token."""

    tmp: Path
    env: dict[str, str]
    token: str
    item_id: int

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def prepare_medlabel(paths: list[Path]) -> Prepared:
    """Import ``paths`` into a fresh home (one item) and log in."""
    from medlabel.accounts import service as accounts
    from medlabel.config import Settings, normalize_database_url
    from medlabel.items.ingest import new_upload_dir, run_import
    from medlabel.projects import service as projects
    from medlabel.runtime import create_runtime
    from medlabel.storage.db import session_scope

    tmp = Path(tempfile.mkdtemp(prefix="medlabel-bench-"))
    db_url = normalize_database_url(
        os.environ.get("MEDLABEL_BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'db.sqlite'}"
    )
    rt = create_runtime(Settings(home=tmp / "home", database_url=db_url))
    with session_scope(rt.sessions) as s:
        user = accounts.create_user(s, "bench", "a-long-enough-password", role="admin")
        actor = accounts.Actor(user.id, user.username, user.role)
        pid = projects.create_project(s, actor, "bench").id
    up = new_upload_dir(rt.settings.home)
    for i, p in enumerate(paths):
        shutil.copyfile(p, up / f"{i:06d}-{p.name}")
    report = run_import(
        sessions=rt.sessions,
        blobs=rt.blobs,
        secret_key=rt.settings.secret_key,
        actor=actor,
        project_id=pid,
        upload_dir=up,
    )
    with session_scope(rt.sessions) as s:
        login = accounts.login(s, rt.settings, "bench", "a-long-enough-password", ip="127.0.0.1")
    rt.close()
    env = {**os.environ, "MEDLABEL_HOME": str(tmp / "home"), "MEDLABEL_DATABASE_URL": db_url}
    return Prepared(tmp, env, login.token, report.items[0])


def start_server(prepared: Prepared, workers: int = 1) -> Server:
    """``medlabel serve --no-worker [--workers N]`` on a free loopback port, in its own process."""
    port = free_port()
    exe = Path(sys.executable).with_name("medlabel")
    cmd = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    log = prepared.tmp / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=prepared.env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {prepared.token}"}
    # ready when every server process has started (uvicorn logs it once per process)
    for _ in range(1200):
        if log.read_bytes().count(b"Application startup complete") >= workers:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"medlabel serve exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    httpx.get(base + "/api/v1/auth/me", headers=headers, timeout=10).raise_for_status()

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return Server(base, headers, prepared.item_id, proc.pid, stop)


def start_medlabel(paths: list[Path], workers: int = 1) -> tuple[Server, Prepared]:
    """Import ``paths`` into a fresh home, then run ``medlabel serve`` in its own process."""
    prepared = prepare_medlabel(paths)
    return start_server(prepared, workers), prepared


def _fmt(label: str, r: tuple[float, float, float, float | None]) -> str:
    p50, p95, rps, cpu = r
    cpu_s = f", server CPU {cpu:.2f} ms/req" if cpu is not None else ""
    return f"{label:52s} p50 {p50:6.1f} ms, p95 {p95:6.1f} ms, {rps:5.0f} req/s{cpu_s}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 slices, 100 requests per pass")
    ap.add_argument("--workers", default="1,2", help="server process counts to measure (default 1,2)")
    args = ap.parse_args()
    slices, requests = (10, 100) if args.quick else (40, 400)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    results: dict[str, tuple[float, float, float, float | None]] = {}
    with tempfile.TemporaryDirectory() as d:
        paths = ct_series(Path(d) / "series", slices)
        prepared = prepare_medlabel(paths)
        try:
            for workers in counts:
                server = start_server(prepared, workers)
                item_id = server.item_id
                tag = f"medlabel {workers} process{'es' if workers > 1 else ''}"
                try:
                    first = [f"/api/v1/items/{item_id}/frames/{k % slices}/rendered" for k in range(slices)]
                    # warm: every server process decodes the volume (connections land on any)
                    hammer(server.base, first * 2 * workers, server.headers)
                    varied = [
                        f"/api/v1/items/{item_id}/frames/{k % slices}/rendered?window={300 + k}&level={40 + workers}"
                        for k in range(requests)
                    ]
                    r = results[f"{tag} decoded-warm"] = server.measure(varied)
                    print(_fmt(f"{tag} decoded-warm (window+PNG per request):", r), flush=True)
                    hammer(server.base, first * 4 * workers, server.headers)  # each caches the PNGs
                    again = [first[k % slices] for k in range(requests)]
                    r = results[f"{tag} response-warm"] = server.measure(again)
                    print(_fmt(f"{tag} response-warm (cached PNG):", r), flush=True)
                finally:
                    server.stop()
        finally:
            prepared.cleanup()
        with orthanc() as url:
            if url is None:
                print("Orthanc: not available (apt-get install -y orthanc); no ratio")
                return
            ids = []
            with httpx.Client(base_url=url, timeout=60) as c:
                for p in paths:
                    r = c.post(
                        "/instances", content=p.read_bytes(), headers={"Content-Type": "application/dicom"}
                    )
                    ids.append(r.json()["ID"])
            urls = [f"/instances/{ids[k % slices]}/rendered" for k in range(requests)]
            accept = {"Accept": "image/png"}
            hammer(url, urls[:slices], accept)
            # Orthanc's process: the newest child of ours running Orthanc
            o_pid = _child_pid("Orthanc")
            c0 = tree_cpu(o_pid) if o_pid else None
            o50, o95, orps = hammer(url, urls, accept)
            c1 = tree_cpu(o_pid) if o_pid else None
            ocpu = (c1 - c0) * 1000 / len(urls) if c0 is not None and c1 is not None else None
            print(_fmt("Orthanc /instances/{id}/rendered (PNG):", (o50, o95, orps, ocpu)))
            for key, (p50, p95, _rps, _cpu) in results.items():
                print(f"ratio medlabel/Orthanc, {key}: p50 {p50 / o50:.2f}, p95 {p95 / o95:.2f}")


def _child_pid(name: str) -> int | None:
    """The pid of our newest child process whose command is ``name``."""
    me = os.getpid()
    found = None
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm == name[:15]:
            found = int(d) if found is None else max(found, int(d))
    return found


if __name__ == "__main__":
    main()
