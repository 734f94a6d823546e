from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session

from medlabel.accounts.service import Actor
from medlabel.api.deps import ActorDep, RuntimeDep, SessionDep, global_permission, object_rule
from medlabel.api.schemas import JobRead, SelftestIn
from medlabel.errors import NotFound
from medlabel.jobs import service as jobs
from medlabel.projects.service import project_roles
from medlabel.security.rbac import Permission, permissions_for
from medlabel.storage.models import Job

router = APIRouter(tags=["jobs"])
JobReader = Annotated[Actor, Depends(object_rule(Permission.JOB_READ))]
Admin = Annotated[Actor, Depends(global_permission(Permission.USER_MANAGE))]


def _visible(session: Session, actor: Actor, job: Job) -> bool:
    if actor.is_admin or job.created_by == actor.user_id:
        return True
    if job.project_id is None:
        return False
    roles = project_roles(session, job.project_id, actor.user_id)
    return Permission.JOB_READ in permissions_for(actor.role, roles)


@router.get("/jobs/{job_id}", response_model=JobRead)
def get_job(job_id: str, actor: JobReader, session: SessionDep) -> JobRead:
    """State, progress (0–100 with a message), result or error of a background job."""
    job = session.get(Job, job_id)
    if job is None or not _visible(session, actor, job):
        raise NotFound(f"no job with id {job_id!r}")
    return JobRead.model_validate(job)


@router.get("/jobs", response_model=list[JobRead])
def list_jobs(actor: ActorDep, session: SessionDep, limit: int = 50) -> list[JobRead]:
    """The caller's most recent jobs (every job for administrators)."""
    stmt = select(Job).order_by(Job.created_at.desc()).limit(max(1, min(limit, 500)))
    if not actor.is_admin:
        stmt = stmt.where(Job.created_by == actor.user_id)
    return [JobRead.model_validate(j) for j in session.scalars(stmt)]


@router.post("/system/selftest", response_model=JobRead, status_code=202)
def selftest(body: SelftestIn, actor: Admin, session: SessionDep, rt: RuntimeDep) -> JobRead:
    """Queue a self-test job that reports progress: shows the worker is alive."""
    job = jobs.create_job(session, actor, "system.selftest", body.model_dump())
    session.commit()
    rt.enqueue(job.id)
    return JobRead.model_validate(job)
