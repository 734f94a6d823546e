"""``medlabel serve --workers 2``: two server processes answer, the session cache of one process
never keeps a logout made through the other beyond the TTL, and the job worker runs (once, in
the supervising process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from medlabel.accounts import service as accounts
from medlabel.accounts.service import Actor
from medlabel.config import Settings
from medlabel.jobs import service as jobs
from medlabel.runtime import create_runtime
from medlabel.storage.db import session_scope
from medlabel.storage.models import Job

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_two_workers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    rt = create_runtime(Settings(home=home, database_url=db))
    with session_scope(rt.sessions) as s:
        accounts.create_user(s, "wendy", "a-long-enough-password", role="admin")
    port = _free_port()
    env = {
        **os.environ,
        "MEDLABEL_HOME": str(home),
        "MEDLABEL_DATABASE_URL": db,
        "MEDLABEL_ACCESS_CACHE_SECONDS": "0.5",
    }
    log = tmp_path / "serve.log"
    exe = Path(sys.executable).with_name("medlabel")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), "--workers", "2"], env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while log.read_bytes().count(b"Application startup complete") < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert b"2 server processes" in log.read_bytes()
        r = httpx.post(
            base + "/api/v1/auth/login", json={"username": "wendy", "password": "a-long-enough-password"}
        )
        assert r.status_code == 200, r.text
        h = {"Authorization": f"Bearer {r.json()['token']}"}
        # many fresh connections: both processes serve, each resolving the session on its own
        for _ in range(12):
            with httpx.Client(base_url=base) as c:
                assert c.get("/api/v1/auth/me", headers=h).status_code == 200
        # the job worker runs in the supervisor: a queued job completes
        with session_scope(rt.sessions) as s:
            job_id = jobs.create_job(
                s, Actor(None, "test", "admin"), "system.selftest", {"steps": 2, "delay": 0}
            ).id
        rt.enqueue(job_id)
        deadline = time.monotonic() + 60
        while True:
            with session_scope(rt.sessions) as s:
                state = s.get(Job, job_id).state
            if state in (jobs.SUCCEEDED, jobs.FAILED):
                break
            assert time.monotonic() < deadline, f"job still {state}: {log.read_text()[-2000:]}"
            time.sleep(0.1)
        assert state == jobs.SUCCEEDED
        # logout through one process; every process refuses the token within the TTL
        with httpx.Client(base_url=base) as c:
            assert c.post("/api/v1/auth/logout", headers=h).status_code == 204
        time.sleep(0.6)
        for _ in range(12):
            with httpx.Client(base_url=base) as c:
                assert c.get("/api/v1/auth/me", headers=h).status_code == 401
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        rt.close()
