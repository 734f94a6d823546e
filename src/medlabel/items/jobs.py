"""Background work of the items domain: the ``items.import`` job."""

from __future__ import annotations

from typing import Any

from medlabel.accounts.service import Actor
from medlabel.errors import InvalidInput
from medlabel.items.ingest import run_import, uploads_root
from medlabel.jobs.registry import JobContext, job_kind
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
    a = ctx.params.get("actor") or {}
    actor = Actor(
        user_id=a.get("user_id"),
        username=str(a.get("username", "system")),
        role=str(a.get("role", "user")),
        ip=str(a.get("ip", "")),
    )
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
    result = report.as_dict()
    # new ready items enter the workflow at once: annotate tasks (with overlap slots) are created
    from medlabel.labeling.task_service import sync_tasks
    from medlabel.storage.models import Project

    with session_scope(rt.sessions) as s:
        project = s.get(Project, project_id)
        if project is not None:
            result["tasks_created"] = sync_tasks(s, actor, project)
    return result
