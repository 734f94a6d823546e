"""The job table: create, run (with progress and heartbeats), retry, reap jobs whose worker died."""

from __future__ import annotations

import logging
import os
import threading
import traceback
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.errors import MedlabelError, NotFound
from medlabel.jobs.registry import JobContext, get_handler
from medlabel.storage.db import session_scope
from medlabel.storage.models import Job

if TYPE_CHECKING:
    from medlabel.runtime import Runtime

__all__ = [
    "create_job",
    "get_job",
    "execute_job",
    "reap_stale_jobs",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
]

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
HEARTBEAT_EVERY = float(os.environ.get("MEDLABEL_JOB_HEARTBEAT_SECONDS", "2"))
#: Seconds between two writes of a running job's progress (and heartbeat), at least.
PROGRESS_EVERY = 0.25


def create_job(
    session: Session,
    actor: Actor,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    project_id: int | None = None,
    max_attempts: int = 3,
) -> Job:
    """Insert a queued job. The caller enqueues it (``runtime.enqueue``) after committing."""
    get_handler(kind)  # refuse unknown kinds up front
    job = Job(
        id=uuid.uuid4().hex,
        kind=kind,
        project_id=project_id,
        created_by=actor.user_id,
        state=QUEUED,
        progress=0,
        message="queued",
        params=params or {},
        attempts=0,
        max_attempts=max_attempts,
        created_at=clock.now(),
    )
    session.add(job)
    session.flush()
    audit.record(
        session,
        actor.event(
            AuditAction.JOB_CREATE,
            object_type="job",
            object_id=job.id,
            project_id=project_id,
            detail={"kind": kind},
        ),
    )
    return job


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job


def _set(rt: Runtime, job_id: str, **values: Any) -> None:
    with session_scope(rt.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def execute_job(rt: Runtime, job_id: str) -> None:
    """Run one job to completion in this process. Called by the Huey task."""
    with session_scope(rt.sessions) as s:
        job = s.get(Job, job_id)
        if job is None:
            log.warning("job %s vanished before it ran", job_id)
            return
        if job.state != QUEUED:
            log.info("job %s is %s, not queued; skipping duplicate delivery", job_id, job.state)
            return
        job.state = RUNNING
        job.attempts += 1
        job.started_at = job.started_at or clock.now()
        job.heartbeat_at = clock.now()
        job.message = f"running (attempt {job.attempts})"
        kind, params, attempt, max_attempts = job.kind, dict(job.params or {}), job.attempts, job.max_attempts

    stop = threading.Event()
    wake = threading.Event()
    pending: dict[str, Any] = {}
    lock = threading.Lock()

    def beat() -> None:
        """Write heartbeats and the latest progress from a thread of its own, so a handler that
        reports progress while it holds a transaction never waits on itself (SQLite has one writer).
        At most one write per ``PROGRESS_EVERY`` (the latest progress wins: a short job's steps
        are not each a write competing with the job's own), and none once the job has ended: the
        final state is written right after, with its own progress and message."""
        while True:
            wake.wait(HEARTBEAT_EVERY)
            if stop.is_set():
                return
            wake.clear()
            with lock:
                values = {**pending, "heartbeat_at": clock.now()}
                pending.clear()
            try:
                _set(rt, job_id, **values)
            except Exception:  # noqa: BLE001  (a missed heartbeat must not kill the job)
                log.warning("heartbeat for job %s failed; retrying", job_id, exc_info=True)
                with lock:
                    for k, v in values.items():
                        pending.setdefault(k, v)
            if stop.wait(PROGRESS_EVERY):
                return

    def progress(pct: int, message: str) -> None:
        with lock:
            pending.update(progress=pct, message=message)
        wake.set()

    hb = threading.Thread(target=beat, name=f"job-heartbeat-{job_id[:8]}", daemon=True)
    hb.start()
    try:
        handler = get_handler(kind)
        result = handler(
            JobContext(job_id=job_id, params=params, attempt=attempt, runtime=rt, _progress=progress)
        )
    except Exception as exc:  # noqa: BLE001  (every failure is recorded on the job)
        stop.set()
        wake.set()
        hb.join()
        retryable = not isinstance(exc, MedlabelError) and attempt < max_attempts
        message = f"{type(exc).__name__}: {exc}"
        if retryable:
            _set(
                rt,
                job_id,
                state=QUEUED,
                message=f"attempt {attempt} failed ({message}); retrying",
                error=traceback.format_exc(limit=5),
            )
            rt.enqueue(job_id, delay=min(2**attempt, 60))
        else:
            _set(
                rt,
                job_id,
                state=FAILED,
                message=message[:2000],
                error=traceback.format_exc(limit=10),
                finished_at=clock.now(),
            )
        return
    stop.set()
    wake.set()
    hb.join()
    _set(
        rt,
        job_id,
        state=SUCCEEDED,
        progress=100,
        message="done",
        result=result or {},
        finished_at=clock.now(),
        error=None,
    )


def reap_stale_jobs(rt: Runtime, stale_after: timedelta) -> list[str]:
    """Jobs whose worker stopped heart-beating: re-queue them, or fail them after max attempts."""
    cutoff = clock.now() - stale_after
    requeued: list[str] = []
    with session_scope(rt.sessions) as s:
        stale = s.scalars(select(Job).where(Job.state == RUNNING, Job.heartbeat_at < cutoff)).all()
        for job in stale:
            if job.attempts < job.max_attempts:
                job.state = QUEUED
                job.message = f"worker stopped during attempt {job.attempts}; re-queued"
                requeued.append(job.id)
            else:
                job.state = FAILED
                job.message = f"worker stopped during attempt {job.attempts} of {job.max_attempts}; giving up"
                job.error = "worker lost"
                job.finished_at = clock.now()
    for job_id in requeued:
        rt.enqueue(job_id)
    return requeued
