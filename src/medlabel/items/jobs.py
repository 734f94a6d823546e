"""Background work of the items domain: the ``items.import``, ``items.import_session`` and
``items.sweep_blobs`` jobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from medlabel.accounts.service import Actor
from medlabel.errors import ConfigurationError, InvalidInput
from medlabel.items import blob_sweep, upload_sessions
from medlabel.items.ingest import run_import, uploads_root
from medlabel.jobs.registry import JobContext, job_kind
from medlabel.storage.blobs import LocalBlobStore
from medlabel.storage.db import session_scope
from medlabel.storage.models import Job


@job_kind("items.import")
def import_files(ctx: JobContext) -> dict[str, Any]:
    """Import the files of one upload folder; the result is the per-file report."""
    rt = ctx.runtime
    name = str(ctx.params.get("upload", ""))
    root = uploads_root(rt.settings.home)
    upload = root / name
    if not name or "/" in name or name.startswith(".") or not upload.is_dir():
        raise InvalidInput(f"upload folder {name!r} is gone (already imported, or never uploaded)")
    with session_scope(rt.sessions) as s:
        job = s.get(Job, ctx.job_id)
        project_id = job.project_id if job is not None else None
    if project_id is None:
        raise InvalidInput("import job without a project")
    actor = _actor(ctx.params)
    report = run_import(
        sessions=rt.sessions,
        blobs=rt.blobs,
        secret_key=rt.settings.secret_key,
        actor=actor,
        project_id=project_id,
        upload_dir=upload,
        job_id=ctx.job_id,
        progress=ctx.progress,
    )
    return _with_tasks(ctx, report.as_dict(), actor, project_id)


def _actor(params: dict[str, Any]) -> Actor:
    a = params.get("actor") or {}
    return Actor(
        user_id=a.get("user_id"),
        username=str(a.get("username", "system")),
        role=str(a.get("role", "user")),
        ip=str(a.get("ip", "")),
    )


def _with_tasks(ctx: JobContext, result: dict[str, Any], actor: Actor, project_id: int) -> dict[str, Any]:
    # new ready items enter the workflow at once: annotate tasks (with overlap slots) are created
    from medlabel.labeling.task_service import sync_tasks
    from medlabel.storage.models import Project

    with session_scope(ctx.runtime.sessions) as s:
        project = s.get(Project, project_id)
        if project is not None:
            result["tasks_created"] = sync_tasks(s, actor, project)
    return result


@job_kind(upload_sessions.COMMIT_JOB)
def import_session(ctx: JobContext) -> dict[str, Any]:
    """Store what an upload session prepared; the result is the import report."""
    rt = ctx.runtime
    with session_scope(rt.sessions) as s:
        job = s.get(Job, ctx.job_id)
        project_id = job.project_id if job is not None else None
    if project_id is None:
        raise InvalidInput("import job without a project")
    actor = _actor(ctx.params)
    report = upload_sessions.run_commit(
        sessions=rt.sessions,
        blobs=rt.blobs,
        home=rt.settings.home,
        actor=actor,
        upload_id=str(ctx.params.get("upload_session", "")),
        job_id=ctx.job_id,
        progress=ctx.progress,
    )
    return _with_tasks(ctx, report.as_dict(), actor, project_id)


@job_kind(blob_sweep.SWEEP_JOB)
def sweep_blobs(ctx: JobContext) -> dict[str, Any]:
    """Sweep the blob store of orphans (``medlabel.items.blob_sweep``); the result is the report."""
    rt = ctx.runtime
    if not isinstance(rt.blobs, LocalBlobStore):
        raise ConfigurationError(f"the blob sweep needs a local blob store, found {type(rt.blobs).__name__}")
    try:
        older_than = timedelta(hours=float(ctx.params.get("older_than_hours", 24)))
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(
            f"older_than_hours must be a number of hours, found {ctx.params.get('older_than_hours')!r}"
        ) from None
    report = blob_sweep.sweep_blobs(
        rt.sessions,
        rt.blobs,
        older_than=older_than,
        dry_run=bool(ctx.params.get("dry_run", False)),
        actor=_actor(ctx.params),
        job_id=ctx.job_id,
        progress=ctx.progress,
    )
    return report.as_dict()
