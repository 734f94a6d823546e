"""Quality: the project's agreement/KPI report as JSON, and report files built by a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from medlabel import clock
from medlabel.api.deps import ActorDep, RuntimeDep, SessionDep, project_permission
from medlabel.api.schemas import JobRead
from medlabel.errors import NotFound
from medlabel.jobs import service as jobs
from medlabel.projects.service import ProjectAccess
from medlabel.quality.jobs import period_from_params
from medlabel.quality.records import Targets
from medlabel.quality.service import project_report, set_targets, targets_for
from medlabel.security.rbac import Permission
from medlabel.storage.models import Job

router = APIRouter(tags=["quality"])
CanRead = Annotated[ProjectAccess, Depends(project_permission(Permission.QUALITY_READ))]
CanUpdate = Annotated[ProjectAccess, Depends(project_permission(Permission.PROJECT_UPDATE))]

_MEDIA = {"html": "text/html; charset=utf-8", "csv": "text/csv; charset=utf-8", "json": "application/json"}


class ReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    week: str | None = Field(default=None, pattern=r"^\d{4}-W\d{2}$", examples=["2026-W48"])
    start: str | None = None
    end: str | None = None
    bootstrap_n: int = Field(default=1000, ge=0, le=5000)


class TargetsBody(BaseModel):
    """The project's quality targets; a rolling window below a target raises an alert."""

    model_config = ConfigDict(extra="forbid")
    kappa: float = Field(default=0.8, ge=-1, le=1, description="agreement (kappa/alpha) target")
    dice: float = Field(default=0.8, ge=0, le=1, description="mask Dice target")
    window_days: int = Field(default=7, ge=1, le=366, description="rolling window length")
    min_items: int = Field(default=10, ge=1, description="overlap items a window needs to raise an alert")
    surface_tolerance_mm: float = Field(default=2.0, ge=0, description="surface Dice tolerance")


@router.get("/projects/{project_id}/quality/targets", response_model=TargetsBody)
def get_targets(access: CanRead) -> TargetsBody:
    return TargetsBody.model_validate(targets_for(access.project).to_dict())


@router.put("/projects/{project_id}/quality/targets", response_model=TargetsBody)
def put_targets(body: TargetsBody, access: CanUpdate, actor: ActorDep, session: SessionDep) -> TargetsBody:
    """Set the kappa and Dice targets (defaults 0.8), the window and the alert threshold."""
    t = set_targets(session, actor, access.project, Targets(**body.model_dump()))
    return TargetsBody.model_validate(t.to_dict())


@router.get("/projects/{project_id}/quality")
def quality_report(
    access: CanRead,
    session: SessionDep,
    week: Annotated[str | None, Query(pattern=r"^\d{4}-W\d{2}$", examples=["2026-W48"])] = None,
    start: str | None = None,
    end: str | None = None,
    bootstrap_n: Annotated[int, Query(ge=0, le=2000)] = 200,
) -> dict[str, Any]:
    """Agreement, per-annotator accuracy, error rates, throughput and alerts for a period
    (an ISO week, or ISO ``start``/``end`` times; the current week by default), as JSON."""
    if not (week or start or end):
        year, number, _ = clock.now().isocalendar()
        week = f"{year}-W{number:02d}"
    period = period_from_params({"week": week, "start": start, "end": end})
    report = project_report(session, access.project, period=period, bootstrap_n=bootstrap_n)
    return report.to_dict()


@router.post("/projects/{project_id}/quality/reports", response_model=JobRead, status_code=202)
def create_report(
    body: ReportCreate, access: CanRead, actor: ActorDep, session: SessionDep, rt: RuntimeDep
) -> JobRead:
    """Queue a report job; its result names the HTML, CSV and JSON files."""
    params = {"project_id": access.project.id, **body.model_dump(exclude_none=True)}
    period_from_params(params)  # refuse a bad period now, not in the worker
    job = jobs.create_job(session, actor, "quality.report", params, project_id=access.project.id)
    session.commit()
    rt.enqueue(job.id)
    return JobRead.model_validate(job)


@router.get("/projects/{project_id}/quality/reports/{job_id}/{fmt}")
def report_file(
    job_id: str, fmt: Literal["html", "csv", "json"], access: CanRead, session: SessionDep, rt: RuntimeDep
) -> Response:
    """A finished report as a self-contained HTML page, CSV or JSON."""
    job = session.get(Job, job_id)
    if job is None or job.kind != "quality.report" or job.project_id != access.project.id:
        raise NotFound(f"no report {job_id!r} in this project")
    if job.state != jobs.SUCCEEDED or not job.result or fmt not in job.result:
        raise NotFound(f"report {job_id!r} is {job.state}, not ready")
    data = rt.blobs.get(str(job.result[fmt]))
    filename = f"quality-{job_id[:8]}.{fmt}"
    return Response(
        data, media_type=_MEDIA[fmt], headers={"Content-Disposition": f'inline; filename="{filename}"'}
    )
