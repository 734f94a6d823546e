"""Jobs through real Huey consumers (SQLite and Redis storage): progress, failure, retry, worker death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from medlabel.accounts.service import Actor
from medlabel.jobs import service as jobs
from medlabel.runtime import create_runtime
from medlabel.storage.db import session_scope

from ..conftest import REDIS_URL, REQUIRE_SERVICES
from . import jobplugin  # noqa: F401  (registers the test job kinds)

ROOT = Path(__file__).resolve().parents[2]
ADMIN = Actor(None, "test", "admin")


def _submit(rt, kind: str, params: dict | None = None, max_attempts: int = 3) -> str:
    with session_scope(rt.sessions) as s:
        job_id = jobs.create_job(s, ADMIN, kind, params or {}, max_attempts=max_attempts).id
    rt.enqueue(job_id)
    return job_id


def _wait(rt, job_id: str, states=("succeeded", "failed"), timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(rt.sessions) as s:
            job = jobs.get_job(s, job_id)
            if job.state in states:
                return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout}s: {job.message}")


def _redis_available() -> bool:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except redis.RedisError:
        return False


@pytest.fixture(params=["sqlite-queue", "redis-queue"])
def queue_runtime(request, settings):
    if request.param == "redis-queue":
        if not _redis_available():
            if REQUIRE_SERVICES:
                pytest.fail(f"Redis is required in CI but {REDIS_URL} does not answer")
            pytest.skip(f"no Redis at {REDIS_URL}")
        import uuid

        # a queue of this test's own: concurrent runs sharing the Redis never take each other's jobs
        settings = settings.with_(redis_url=REDIS_URL, queue_name=f"medlabel-test-{uuid.uuid4().hex[:12]}")
    rt = create_runtime(settings)
    rt.start_worker(workers=2)
    yield rt
    rt.close()


def test_job_reports_progress_and_result(queue_runtime):
    job = _wait(queue_runtime, _submit(queue_runtime, "test.progress"))
    assert job.state == "succeeded" and job.progress == 100 and job.attempts == 1
    assert job.result == {"seen_progress": 50, "attempt": 1}


def test_invalid_input_fails_without_retry(queue_runtime):
    job = _wait(queue_runtime, _submit(queue_runtime, "test.invalid"))
    assert job.state == "failed" and job.attempts == 1
    assert "has no images (found 0 files)" in job.message and "InvalidInput" in job.error


def test_crash_is_retried_then_recorded(queue_runtime):
    job = _wait(queue_runtime, _submit(queue_runtime, "test.crash", max_attempts=2), timeout=90)
    assert job.state == "failed" and job.attempts == 2
    assert "disk on fire (attempt 2)" in job.message and "RuntimeError" in job.error


def test_unknown_kind_is_refused(runtime):
    from medlabel.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown job kind 'nope'"), session_scope(runtime.sessions) as s:
        jobs.create_job(s, ADMIN, "nope")


def test_job_api_shows_progress(client, runtime):
    from .helpers import login, make_user

    make_user(runtime, "root", "admin")
    h = login(client, "root")
    r = client.post("/api/v1/system/selftest", json={"steps": 3, "delay": 0}, headers=h)
    assert r.status_code == 202 and r.json()["state"] == "queued"
    job_id = r.json()["id"]
    runtime.start_worker(workers=1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/jobs/{job_id}", headers=h).json()
        if body["state"] == "succeeded":
            break
        time.sleep(0.1)
    assert body["state"] == "succeeded" and body["progress"] == 100 and body["result"] == {"steps": 3}


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "medlabel.cli.main", "worker", "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def test_job_whose_worker_dies_is_retried(runtime, tmp_path):
    """SIGKILL the worker mid-job; a new worker finds the stale job and runs it again."""
    settings = runtime.settings
    env = {
        **os.environ,
        "MEDLABEL_HOME": str(settings.home),
        "MEDLABEL_DATABASE_URL": settings.database_url,
        "MEDLABEL_PLUGINS": "tests.foundation.jobplugin",
        "MEDLABEL_JOB_STALE_SECONDS": "4",
        "MEDLABEL_JOB_HEARTBEAT_SECONDS": "0.5",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("MEDLABEL_REDIS_URL", None)
    gate, started = tmp_path / "gate", tmp_path / "started"
    job_id = _submit(runtime, "test.wait_for_file", {"path": str(gate), "started": str(started)})
    first = _worker(env)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert first.poll() is None, first.stdout.read().decode() if first.stdout else ""
            assert time.monotonic() < deadline, "the first worker never started the job"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    gate.write_text("go")
    with session_scope(runtime.sessions) as s:
        assert jobs.get_job(s, job_id).state == "running"  # nobody finished it
    second = _worker(env)
    try:
        job = _wait(runtime, job_id, timeout=60)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(15)
        except subprocess.TimeoutExpired:
            second.kill()
    assert job.state == "succeeded", job.message
    assert job.attempts == 2 and job.result == {"attempt": 2}


def test_reaper_gives_up_after_max_attempts(runtime):
    from medlabel import clock
    from medlabel.storage.models import Job

    with session_scope(runtime.sessions) as s:
        job = jobs.create_job(s, ADMIN, "test.progress", max_attempts=1)
        job.state, job.attempts, job.heartbeat_at = "running", 1, clock.now() - timedelta(minutes=5)
        job_id = job.id
    assert jobs.reap_stale_jobs(runtime, timedelta(seconds=60)) == []
    with session_scope(runtime.sessions) as s:
        job = s.get(Job, job_id)
        assert job.state == "failed" and "giving up" in job.message


def test_progress_inside_a_transaction_does_not_deadlock(queue_runtime):
    job = _wait(queue_runtime, _submit(queue_runtime, "test.progress_in_transaction"), timeout=30)
    assert job.state == "succeeded" and job.result == {"ok": True}


def test_a_short_job_writes_its_progress_once_not_per_step(runtime, monkeypatch):
    """Progress is written from the heartbeat thread at most once per PROGRESS_EVERY (0.25 s),
    and not again once the job has ended (its final state follows): a job of 200 steps in half a
    second costs the database a few writes, not one per step competing with the job's own."""
    from medlabel.storage.models import Job

    writes: list[dict] = []
    real = jobs._set

    def spy(rt, job_id, **values):  # type: ignore[no-untyped-def]
        writes.append(values)
        real(rt, job_id, **values)

    monkeypatch.setattr(jobs, "_set", spy)
    with session_scope(runtime.sessions) as s:
        job_id = jobs.create_job(s, ADMIN, "test.many_steps", max_attempts=1).id
    jobs.execute_job(runtime, job_id)
    progress_writes = [w for w in writes if "state" not in w]
    assert 1 <= len(progress_writes) <= 4, writes
    assert writes[-1]["state"] == "succeeded" and writes[-1]["progress"] == 100
    with session_scope(runtime.sessions) as s:
        job = s.get(Job, job_id)
        assert job.state == "succeeded" and job.result == {"steps": 200} and job.message == "done"
