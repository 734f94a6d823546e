"""Projects: creation, listing, membership, and the access check every project route uses."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed
from medlabel.security.rbac import Permission, ProjectRole, permissions_for
from medlabel.storage.cache import RowCache
from medlabel.storage.models import Membership, Project, User

__all__ = [
    "ProjectAccess",
    "create_project",
    "list_projects",
    "project_roles",
    "cached_roles",
    "fetch_roles",
    "allowed",
    "require_project",
    "update_project",
    "add_member",
    "remove_member",
    "list_members",
]


@dataclass(frozen=True)
class ProjectAccess:
    project: Project
    roles: frozenset[str]
    permissions: frozenset[Permission]


_roles_cache = RowCache(
    "project_roles",
    {
        Membership: lambda m: [(m.project_id, m.user_id)],
        Project: lambda p: lambda key, _roles: key[0] == p.id,
        User: lambda u: lambda key, _roles: key[1] == u.id,
    },
)
"""(project id, user id) -> roles, for a couple of seconds (``medlabel.storage.cache``): any
membership change in this process drops the entry at once, other processes see it within the
TTL."""


def project_roles(session: Session, project_id: int, user_id: int | None) -> frozenset[str]:
    if user_id is None:
        return frozenset()
    found: frozenset[str] | None = _roles_cache.get_in(session, (project_id, user_id))
    return found if found is not None else fetch_roles(session, project_id, user_id)


def fetch_roles(session: Session, project_id: int, user_id: int | None) -> frozenset[str]:
    """:func:`project_roles` read from the database (and cached when committed state)."""
    if user_id is None:
        return frozenset()
    rows = session.scalars(
        select(Membership.role).where(Membership.project_id == project_id, Membership.user_id == user_id)
    )
    roles = frozenset(rows)
    _roles_cache.put(session, (project_id, user_id), roles)
    return roles


def cached_roles(engine: Engine | None, project_id: int, user_id: int | None) -> frozenset[str] | None:
    """The actor's roles in a project from the in-process cache (no database), or None."""
    if user_id is None:
        return frozenset()
    found: frozenset[str] | None = _roles_cache.get(engine, (project_id, user_id))
    return found


def allowed(actor: Actor, roles: frozenset[str], permission: Permission) -> frozenset[Permission] | None:
    """The actor's permissions in a project where they have ``roles``, when they include
    ``permission``; None when :func:`require_project` would refuse (404 or 403)."""
    if not roles and not actor.is_admin:
        return None
    perms = permissions_for(actor.role, roles)
    return perms if permission in perms else None


def require_project(session: Session, actor: Actor, project_id: int, permission: Permission) -> ProjectAccess:
    """Load a project the actor may use for ``permission``.

    Non-members get NotFound (they must not learn the project exists); members whose roles do
    not grant the permission get Forbidden.
    """
    project = session.get(Project, project_id)
    roles = project_roles(session, project_id, actor.user_id) if project else frozenset()
    if project is None or (not roles and not actor.is_admin):
        raise NotFound(f"no project with id {project_id}")
    perms = permissions_for(actor.role, roles)
    if permission not in perms:
        raise Forbidden(
            f"your roles in project {project.name!r} ({', '.join(sorted(roles)) or 'none'}) "
            f"do not allow {permission.value}",
            detail={"permission": permission.value, "roles": sorted(roles)},
        )
    return ProjectAccess(project, roles, perms)


def create_project(session: Session, actor: Actor, name: str, description: str = "") -> Project:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput(
            f"project name must have 1–200 characters, found {len(name)}", detail={"field": "name"}
        )
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists", detail={"field": "name"})
    project = Project(
        name=name, description=description, created_at=clock.now(), created_by=actor.user_id, settings={}
    )
    session.add(project)
    session.flush()
    if actor.user_id is not None:
        session.add(
            Membership(
                project_id=project.id, user_id=actor.user_id, role=ProjectRole.MANAGER, created_at=clock.now()
            )
        )
    audit.record(
        session,
        actor.event(
            AuditAction.PROJECT_CREATE,
            object_type="project",
            object_id=str(project.id),
            project_id=project.id,
            detail={"name": name},
        ),
    )
    return project


def list_projects(session: Session, actor: Actor) -> list[Project]:
    stmt = select(Project).order_by(Project.name)
    if not actor.is_admin:
        stmt = stmt.where(
            Project.id.in_(select(Membership.project_id).where(Membership.user_id == actor.user_id))
        )
    return list(session.scalars(stmt))


def update_project(
    session: Session,
    actor: Actor,
    project: Project,
    *,
    if_match: int | None,
    name: str | None,
    description: str | None,
) -> Project:
    if if_match is not None and if_match != project.version:
        raise PreconditionFailed(
            f"project {project.id} is at version {project.version}, not {if_match}; reload and retry",
            detail={"current_version": project.version},
        )
    changed: list[str] = []
    if name is not None and name.strip() != project.name:
        clash = session.scalar(
            select(Project.id).where(Project.name == name.strip(), Project.id != project.id)
        )
        if clash is not None:
            raise Conflict(f"a project named {name!r} already exists", detail={"field": "name"})
        project.name = name.strip()
        changed.append("name")
    if description is not None and description != project.description:
        project.description = description
        changed.append("description")
    if changed:
        project.version += 1
        audit.record(
            session,
            actor.event(
                AuditAction.PROJECT_UPDATE,
                object_type="project",
                object_id=str(project.id),
                project_id=project.id,
                detail={"changed": changed},
            ),
        )
    return project


def add_member(session: Session, actor: Actor, project: Project, username: str, role: str) -> Membership:
    try:
        prole = ProjectRole(role)
    except ValueError:
        raise InvalidInput(
            f"role must be one of {', '.join(r.value for r in ProjectRole)}, found {role!r}",
            detail={"field": "role"},
        ) from None
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user named {username!r}", detail={"field": "username"})
    exists = session.scalar(
        select(Membership).where(
            Membership.project_id == project.id, Membership.user_id == user.id, Membership.role == prole
        )
    )
    if exists is not None:
        return exists
    m = Membership(project_id=project.id, user_id=user.id, role=prole.value, created_at=clock.now())
    session.add(m)
    session.flush()
    audit.record(
        session,
        actor.event(
            AuditAction.MEMBER_ADD,
            object_type="membership",
            object_id=str(m.id),
            project_id=project.id,
            detail={"username": username, "role": prole.value},
        ),
    )
    return m


def remove_member(session: Session, actor: Actor, project: Project, username: str, role: str) -> None:
    user = session.scalar(select(User).where(User.username == username))
    m = None
    if user is not None:
        m = session.scalar(
            select(Membership).where(
                Membership.project_id == project.id, Membership.user_id == user.id, Membership.role == role
            )
        )
    if m is None:
        raise NotFound(f"{username!r} has no role {role!r} in project {project.name!r}")
    session.delete(m)
    audit.record(
        session,
        actor.event(
            AuditAction.MEMBER_REMOVE,
            object_type="membership",
            object_id=str(m.id),
            project_id=project.id,
            detail={"username": username, "role": role},
        ),
    )


def list_members(session: Session, project: Project) -> list[tuple[User, str]]:
    rows = session.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == project.id)
        .order_by(User.username, Membership.role)
    )
    return [(u, r) for u, r in rows]
