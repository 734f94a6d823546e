from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from medlabel.accounts.service import Actor
from medlabel.api.deps import ActorDep, SessionDep, global_permission, project_permission
from medlabel.api.schemas import MemberAdd, MemberRead, ProjectCreate, ProjectRead, ProjectUpdate
from medlabel.errors import InvalidInput
from medlabel.projects import service as projects
from medlabel.projects.service import ProjectAccess
from medlabel.security.rbac import Permission

router = APIRouter(prefix="/projects", tags=["projects"])

Creator = Annotated[Actor, Depends(global_permission(Permission.PROJECT_CREATE))]
CanRead = Annotated[ProjectAccess, Depends(project_permission(Permission.PROJECT_READ))]
CanUpdate = Annotated[ProjectAccess, Depends(project_permission(Permission.PROJECT_UPDATE))]
CanReadMembers = Annotated[ProjectAccess, Depends(project_permission(Permission.MEMBER_READ))]
CanManageMembers = Annotated[ProjectAccess, Depends(project_permission(Permission.MEMBER_MANAGE))]


def _read(p: object, roles: frozenset[str] | set[str]) -> ProjectRead:
    out = ProjectRead.model_validate(p)
    out.my_roles = sorted(roles)
    return out


def _parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    raw = value.strip().strip('"').removeprefix("W/").strip('"')
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(
            f'If-Match must be a version number such as "3", found {value!r}', detail={"field": "If-Match"}
        ) from None


@router.get("", response_model=list[ProjectRead])
def list_projects(actor: ActorDep, session: SessionDep) -> list[ProjectRead]:
    """Projects the caller is a member of (all of them for administrators)."""
    return [
        _read(p, projects.project_roles(session, p.id, actor.user_id))
        for p in projects.list_projects(session, actor)
    ]


@router.post("", response_model=ProjectRead, status_code=201)
def create_project(body: ProjectCreate, actor: Creator, session: SessionDep) -> ProjectRead:
    p = projects.create_project(session, actor, body.name, body.description)
    return _read(p, {"manager"})


@router.get("/{project_id}", response_model=ProjectRead)
def get_project(access: CanRead, response: Response) -> ProjectRead:
    response.headers["ETag"] = f'"{access.project.version}"'
    return _read(access.project, access.roles)


@router.patch("/{project_id}", response_model=ProjectRead)
def update_project(
    body: ProjectUpdate,
    access: CanUpdate,
    actor: ActorDep,
    session: SessionDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> ProjectRead:
    """Rename or describe a project. Send ``If-Match: "<version>"``; a stale version gets 412."""
    p = projects.update_project(
        session,
        actor,
        access.project,
        if_match=_parse_if_match(if_match),
        name=body.name,
        description=body.description,
    )
    response.headers["ETag"] = f'"{p.version}"'
    return _read(p, access.roles)


@router.get("/{project_id}/members", response_model=list[MemberRead])
def list_members(access: CanReadMembers, session: SessionDep) -> list[MemberRead]:
    return [
        MemberRead(user_id=u.id, username=u.username, display_name=u.display_name, role=r)
        for u, r in projects.list_members(session, access.project)
    ]


@router.post("/{project_id}/members", response_model=MemberRead, status_code=201)
def add_member(body: MemberAdd, access: CanManageMembers, actor: ActorDep, session: SessionDep) -> MemberRead:
    m = projects.add_member(session, actor, access.project, body.username, body.role)
    return MemberRead(
        user_id=m.user_id, username=body.username, display_name=m.user.display_name, role=m.role
    )


@router.delete("/{project_id}/members/{username}/{role}", status_code=204)
def remove_member(
    username: str, role: str, access: CanManageMembers, actor: ActorDep, session: SessionDep
) -> Response:
    projects.remove_member(session, actor, access.project, username, role)
    return Response(status_code=204)
