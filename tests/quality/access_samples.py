"""Sample requests for the quality routes (see tests/foundation/test_access_table.py)."""

from __future__ import annotations

from typing import Any

from medlabel.accounts.service import Actor
from medlabel.jobs import service as jobs
from medlabel.storage.db import session_scope


def _report_job(ctx: Any) -> str:
    if "quality_job" not in ctx.cache:
        with session_scope(ctx.rt.sessions) as s:
            job = jobs.create_job(
                s,
                Actor(None, "t", "admin"),
                "quality.report",
                {"project_id": ctx.project_id, "week": "2026-W47"},
                project_id=ctx.project_id,
            )
            job.state, job.result = (
                "succeeded",
                {
                    "html": ctx.rt.blobs.put(b"<!doctype html><p>r</p>"),
                    "csv": ctx.rt.blobs.put(b"a"),
                    "json": ctx.rt.blobs.put(b"{}"),
                },
            )
            ctx.cache["quality_job"] = job.id
    return ctx.cache["quality_job"]


SAMPLES = {
    ("GET", "/api/v1/projects/{project_id}/quality/targets"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/quality/targets"
    },
    ("PUT", "/api/v1/projects/{project_id}/quality/targets"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/quality/targets",
        "json": {"kappa": 0.7},
    },
    ("GET", "/api/v1/projects/{project_id}/quality"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/quality",
        "params": {"week": "2026-W47", "bootstrap_n": 0},
    },
    ("POST", "/api/v1/projects/{project_id}/quality/reports"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/quality/reports",
        "json": {"week": "2026-W47", "bootstrap_n": 0},
    },
    ("GET", "/api/v1/projects/{project_id}/quality/reports/{job_id}/{fmt}"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/quality/reports/{_report_job(c)}/html"
    },
}
