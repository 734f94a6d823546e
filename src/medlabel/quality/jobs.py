"""The ``quality.report`` job: build a project's report and store HTML, CSV and JSON as blobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from medlabel.errors import InvalidInput, NotFound
from medlabel.jobs.registry import JobContext, job_kind
from medlabel.quality.report import build_report, iso_week_period
from medlabel.quality.service import load_records, render_report_files, targets_for
from medlabel.storage.db import session_scope
from medlabel.storage.models import Project

__all__ = ["report_job", "period_from_params"]


def period_from_params(params: dict[str, Any]) -> tuple[datetime, datetime]:
    if params.get("week"):
        return iso_week_period(str(params["week"]))
    try:
        start = datetime.fromisoformat(str(params["start"]))
        end = datetime.fromisoformat(str(params["end"]))
    except (KeyError, ValueError):
        raise InvalidInput(
            f"give a week such as '2026-W48' or ISO 'start' and 'end' times, found {params!r}"
        ) from None
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput(
            f"'start' and 'end' need a timezone (e.g. 2026-11-23T00:00:00+00:00), found {params!r}"
        )
    return start, end


@job_kind("quality.report")
def report_job(ctx: JobContext) -> dict[str, Any]:
    project_id = int(ctx.params["project_id"])
    period = period_from_params(ctx.params)
    ctx.progress(5, "loading annotations, reviews and tasks")
    with session_scope(ctx.runtime.sessions) as s:  # load in one transaction ...
        project = s.get(Project, project_id)
        if project is None:
            raise NotFound(f"no project with id {project_id}")
        name, targets = project.name, targets_for(project)
        records = load_records(s, project_id, start=period[0], end=period[1])
    ctx.progress(20, "computing agreement and per-annotator figures")  # ... compute outside it
    bootstrap_n = int(ctx.params.get("bootstrap_n", 1000))
    report = build_report(records, period=period, targets=targets, bootstrap_n=bootstrap_n)
    ctx.progress(85, "rendering HTML, CSV and JSON")
    label = ctx.params.get("week") or f"{period[0].date()} – {period[1].date()}"
    files = render_report_files(report, title=f"{name}: quality {label}")
    blobs = ctx.runtime.blobs
    result = {
        "html": blobs.put(files.html.encode()),
        "csv": blobs.put(files.csv.encode()),
        "json": blobs.put(files.json.encode()),
        "alerts": len(report.alerts),
        "period": [period[0].isoformat(), period[1].isoformat()],
    }
    ctx.progress(100, "done")
    return result
