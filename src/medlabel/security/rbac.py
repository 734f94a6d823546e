"""Access control as an in-process table: roles → permissions, deny by default.

Global roles: ``admin`` (everything, every project) and ``user`` (only what project
memberships grant). Project roles: ``manager``, ``annotator``, ``reviewer``, ``validator``,
``auditor``; a user may hold several roles in one project. A user who is not a member of a
project must not learn that its objects exist: the API answers 404 there, 403 only to members
whose roles lack the permission.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = [
    "GlobalRole",
    "ProjectRole",
    "Permission",
    "GLOBAL_PERMISSIONS",
    "PROJECT_PERMISSIONS",
    "ROLE_PERMISSIONS",
    "permissions_for",
    "is_allowed",
]


class GlobalRole(StrEnum):
    ADMIN = "admin"
    USER = "user"


class ProjectRole(StrEnum):
    MANAGER = "manager"
    ANNOTATOR = "annotator"
    REVIEWER = "reviewer"
    VALIDATOR = "validator"
    AUDITOR = "auditor"


class Permission(StrEnum):
    # global (admin only)
    USER_MANAGE = "user.manage"
    PROJECT_CREATE = "project.create"
    AUDIT_READ = "audit.read"
    PHI_READ = "phi.read"
    # per project
    PROJECT_READ = "project.read"
    PROJECT_UPDATE = "project.update"
    PROJECT_DELETE = "project.delete"
    MEMBER_READ = "member.read"
    MEMBER_MANAGE = "member.manage"
    ITEM_READ = "item.read"
    ITEM_IMPORT = "item.import"
    ANNOTATION_READ = "annotation.read"
    ANNOTATION_WRITE = "annotation.write"
    TASK_ANNOTATE = "task.annotate"
    TASK_REVIEW = "task.review"
    TASK_VALIDATE = "task.validate"
    TASK_AUDIT = "task.audit"
    TASK_ASSIGN = "task.assign"
    SCHEMA_MANAGE = "schema.manage"
    GOLD_MANAGE = "gold.manage"
    QUALITY_READ = "quality.read"
    JOB_READ = "job.read"


GLOBAL_PERMISSIONS: frozenset[Permission] = frozenset(
    {Permission.USER_MANAGE, Permission.PROJECT_CREATE, Permission.AUDIT_READ, Permission.PHI_READ}
)
PROJECT_PERMISSIONS: frozenset[Permission] = frozenset(Permission) - GLOBAL_PERMISSIONS

_P = Permission
ROLE_PERMISSIONS: dict[ProjectRole, frozenset[Permission]] = {
    ProjectRole.MANAGER: frozenset(
        {
            _P.PROJECT_READ,
            _P.PROJECT_UPDATE,
            _P.PROJECT_DELETE,
            _P.MEMBER_READ,
            _P.MEMBER_MANAGE,
            _P.ITEM_READ,
            _P.ITEM_IMPORT,
            _P.ANNOTATION_READ,
            _P.TASK_ASSIGN,
            _P.SCHEMA_MANAGE,
            _P.GOLD_MANAGE,
            _P.QUALITY_READ,
            _P.JOB_READ,
        }
    ),
    ProjectRole.ANNOTATOR: frozenset(
        {
            _P.PROJECT_READ,
            _P.MEMBER_READ,
            _P.ITEM_READ,
            _P.ANNOTATION_READ,
            _P.ANNOTATION_WRITE,
            _P.TASK_ANNOTATE,
        }
    ),
    ProjectRole.REVIEWER: frozenset(
        {
            _P.PROJECT_READ,
            _P.MEMBER_READ,
            _P.ITEM_READ,
            _P.ANNOTATION_READ,
            _P.ANNOTATION_WRITE,
            _P.TASK_REVIEW,
            _P.QUALITY_READ,
        }
    ),
    ProjectRole.VALIDATOR: frozenset(
        {
            _P.PROJECT_READ,
            _P.MEMBER_READ,
            _P.ITEM_READ,
            _P.ANNOTATION_READ,
            _P.ANNOTATION_WRITE,
            _P.TASK_VALIDATE,
            _P.QUALITY_READ,
        }
    ),
    ProjectRole.AUDITOR: frozenset(
        {_P.PROJECT_READ, _P.MEMBER_READ, _P.ITEM_READ, _P.ANNOTATION_READ, _P.TASK_AUDIT, _P.QUALITY_READ}
    ),
}


def permissions_for(global_role: str, project_roles: Iterable[str] = ()) -> frozenset[Permission]:
    """Everything a user may do in one project (or globally, with no project roles)."""
    if global_role == GlobalRole.ADMIN:
        return frozenset(Permission)
    granted: set[Permission] = set()
    for role in project_roles:
        try:
            granted |= ROLE_PERMISSIONS[ProjectRole(role)]
        except ValueError:
            continue  # an unknown role grants nothing (deny by default)
    return frozenset(granted)


def is_allowed(global_role: str, project_roles: Iterable[str], permission: Permission) -> bool:
    return permission in permissions_for(global_role, project_roles)
