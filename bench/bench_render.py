"""Rendered 512x512 CT slice, warm, 20 concurrent clients: medlabel vs Orthanc ``/rendered``.

Both servers run on loopback over real HTTP in their own processes (medlabel: ``medlabel serve``; Orthanc: the
Debian package with a temporary configuration). "Warm" means after one pass over the slices.
medlabel is measured twice: *decoded-warm* (every request has a different window, so each one
windows and PNG-encodes from the cached volume) and *response-warm* (the same URLs again, served
from the encoded-response cache). Orthanc renders ``/instances/{id}/rendered`` (PNG) each time.

Run: .venv/bin/python bench/bench_render.py [--quick]
(``MEDLABEL_BENCH_DATABASE_URL=postgresql://...`` runs medlabel on PostgreSQL instead of SQLite;
the database must be empty.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from bench_ingest import ct_series, free_port, orthanc  # type: ignore[import-not-found]

CLIENTS = 20


def _percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


def hammer(base: str, urls: list[str], headers: dict[str, str]) -> tuple[float, float, float]:
    """GET every URL from CLIENTS threads; return p50 and p95 latency (ms) and requests/s."""
    lat: list[float] = []
    lock = threading.Lock()
    with httpx.Client(
        base_url=base, headers=headers, timeout=60, limits=httpx.Limits(max_connections=CLIENTS)
    ) as c:

        def get(u: str) -> None:
            t0 = time.perf_counter()
            r = c.get(u)
            dt = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            with lock:
                lat.append(dt)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(get, urls))
        wall = time.perf_counter() - t0
    p50, p95 = _percentiles(lat)
    return p50, p95, len(urls) / wall


def start_medlabel(paths: list[Path]) -> tuple[str, dict[str, str], int, Callable[[], None]]:
    """Import ``paths`` into a fresh home, then run ``medlabel serve`` in its own process."""
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
    item_id = report.items[0]
    with session_scope(rt.sessions) as s:
        login = accounts.login(s, rt.settings, "bench", "a-long-enough-password", ip="127.0.0.1")
    rt.close()
    port = free_port()
    env = {**os.environ, "MEDLABEL_HOME": str(tmp / "home"), "MEDLABEL_DATABASE_URL": db_url}
    exe = Path(sys.executable).with_name("medlabel")
    proc = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(base + "/api/v1/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    headers = {"Authorization": f"Bearer {login.token}"}

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    return base, headers, item_id, stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 slices, 100 requests per pass")
    args = ap.parse_args()
    slices, requests = (10, 100) if args.quick else (40, 400)
    with tempfile.TemporaryDirectory() as d:
        paths = ct_series(Path(d) / "series", slices)
        base, headers, item_id, stop = start_medlabel(paths)
        try:
            first = [f"/api/v1/items/{item_id}/frames/{k % slices}/rendered" for k in range(slices)]
            hammer(base, first, headers)  # warm the decoded volume
            varied = [
                f"/api/v1/items/{item_id}/frames/{k % slices}/rendered?window={300 + k}&level=40"
                for k in range(requests)
            ]
            p50, p95, rps = hammer(base, varied, headers)
            print(
                f"medlabel decoded-warm (window+PNG per request): p50 {p50:.1f} ms, p95 {p95:.1f} ms, {rps:.0f} req/s"
            )
            hammer(base, first, headers)
            again = [first[k % slices] for k in range(requests)]
            q50, q95, qrps = hammer(base, again, headers)
            print(
                f"medlabel response-warm (cached PNG):        p50 {q50:.1f} ms, p95 {q95:.1f} ms, {qrps:.0f} req/s"
            )
        finally:
            stop()
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
            hammer(url, urls[:slices], {"Accept": "image/png"})
            o50, o95, orps = hammer(url, urls, {"Accept": "image/png"})
            print(
                f"Orthanc /instances/{{id}}/rendered (PNG):    p50 {o50:.1f} ms, p95 {o95:.1f} ms, {orps:.0f} req/s"
            )
            print(f"ratio p50 medlabel/Orthanc: decoded-warm {p50 / o50:.2f}, response-warm {q50 / o50:.2f}")
            print(f"ratio p95 medlabel/Orthanc: decoded-warm {p95 / o95:.2f}, response-warm {q95 / o95:.2f}")


if __name__ == "__main__":
    main()
