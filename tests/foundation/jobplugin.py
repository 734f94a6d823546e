"""Job kinds for the job tests, loaded by workers through MEDLABEL_PLUGINS (the plug-in path)."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from medlabel.errors import InvalidInput
from medlabel.jobs.registry import JobContext, job_kind
from medlabel.storage.db import session_scope
from medlabel.storage.models import Job


@job_kind("test.progress")
def progress_job(ctx: JobContext) -> dict:
    ctx.progress(50, "half way")
    deadline = time.monotonic() + 20
    seen = None
    while seen != 50 and time.monotonic() < deadline:  # progress is written by the heartbeat thread
        with session_scope(ctx.runtime.sessions) as s:
            seen = s.scalar(select(Job.progress).where(Job.id == ctx.job_id))
        time.sleep(0.05)
    ctx.progress(90, "nearly")
    return {"seen_progress": seen, "attempt": ctx.attempt}


@job_kind("test.invalid")
def invalid_job(ctx: JobContext) -> dict:
    raise InvalidInput("the archive has no images (found 0 files)")


@job_kind("test.crash")
def crash_job(ctx: JobContext) -> dict:
    raise RuntimeError(f"disk on fire (attempt {ctx.attempt})")


@job_kind("test.wait_for_file")
def wait_for_file(ctx: JobContext) -> dict:
    path = Path(ctx.params["path"])
    Path(ctx.params["started"]).write_text(str(ctx.attempt))
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.1)
    return {"attempt": ctx.attempt}


@job_kind("test.progress_in_transaction")
def progress_in_transaction(ctx: JobContext) -> dict:
    """Reports progress while holding a write transaction: must not wait on itself."""
    with session_scope(ctx.runtime.sessions) as s:
        job = s.get(Job, ctx.job_id)
        ctx.progress(30, "inside a transaction")
        job.message = "still inside"
    return {"ok": True}


@job_kind("test.many_steps")
def many_steps_job(ctx: JobContext) -> dict:
    """Reports progress 200 times in about half a second."""
    for i in range(200):
        ctx.progress(i // 2, f"step {i}")
        time.sleep(0.0025)
    return {"steps": 200}
