"""Pydantic models at the HTTP edge (``XCreate``, ``XUpdate``, ``XRead``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "HealthRead",
    "LoginIn",
    "LoginOut",
    "UserRead",
    "UserCreate",
    "ProjectCreate",
    "ProjectUpdate",
    "ProjectRead",
    "MemberAdd",
    "MemberRead",
    "JobRead",
    "SelftestIn",
    "AuditVerifyRead",
    "AuditEventRead",
]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthRead(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: str


class LoginIn(_In):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserRead(_Out):
    id: int
    username: str
    display_name: str
    role: str
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None = None


class LoginOut(BaseModel):
    token: str
    user: UserRead
    idle_expires_at: datetime
    expires_at: datetime


class UserCreate(_In):
    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: Literal["admin", "user"] = "user"
    display_name: str = Field(default="", max_length=200)


class ProjectCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)


class ProjectUpdate(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)


class ProjectRead(_Out):
    id: int
    name: str
    description: str
    created_at: datetime
    version: int
    my_roles: list[str] = []


class MemberAdd(_In):
    username: str = Field(min_length=1, max_length=64)
    role: Literal["manager", "annotator", "reviewer", "validator", "auditor"]


class MemberRead(BaseModel):
    user_id: int
    username: str
    display_name: str
    role: str


class JobRead(_Out):
    id: str
    kind: str
    state: str
    progress: int
    message: str
    project_id: int | None
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class SelftestIn(_In):
    steps: int = Field(default=5, ge=1, le=1000)
    delay: float = Field(default=0.2, ge=0, le=10)


class AuditProblemRead(BaseModel):
    seq: int
    kind: str
    message: str


class AuditVerifyRead(BaseModel):
    ok: bool
    checked: int
    problem: AuditProblemRead | None


class AuditEventRead(_Out):
    seq: int
    at: datetime
    actor_id: int | None
    actor: str
    ip: str
    action: str
    object_type: str
    object_id: str
    project_id: int | None
    outcome: str
    detail: dict[str, Any]
    hash: str
