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
    with session_scope(ctx.runtime.sessions) as s:
        seen = s.scalar(select(Job.progress).where(Job.id == ctx.job_id))
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
