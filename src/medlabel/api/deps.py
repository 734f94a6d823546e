"""Request dependencies: the runtime, a DB session per request, the actor, and access rules.

Every API route declares exactly one access rule through one of the dependencies below
(``public``, ``authenticated``, ``global_permission(...)``, ``project_permission(...)``,
``object_rule(...)``). The rule is attached to the dependency function as ``medlabel_rule``,
so tests can enumerate every route with its rule — a route without one fails the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from medlabel.accounts import service as accounts
from medlabel.accounts.service import Actor
from medlabel.errors import Forbidden, NotFound, Unauthorized
from medlabel.items.models import Item
from medlabel.projects import service as projects
from medlabel.projects.service import ProjectAccess
from medlabel.runtime import Runtime
from medlabel.security.rbac import Permission, permissions_for

__all__ = [
    "COOKIE_NAME",
    "Rule",
    "get_runtime",
    "get_session",
    "RuntimeDep",
    "SessionDep",
    "public",
    "authenticated",
    "ActorDep",
    "global_permission",
    "project_permission",
    "object_rule",
    "item_permission",
    "ItemAccess",
    "client_ip",
    "session_token",
]

COOKIE_NAME = "medlabel_session"


@dataclass(frozen=True)
class Rule:
    kind: str  # public | authenticated | global | project | object
    permission: Permission | None = None


def _mark(fn: Callable[..., Any], rule: Rule) -> Callable[..., Any]:
    fn.medlabel_rule = rule  # type: ignore[attr-defined]
    return fn


def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(rt: RuntimeDep) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    session = rt.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def session_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(COOKIE_NAME) or None


def public() -> None:
    """No authentication needed."""


_mark(public, Rule("public"))


def authenticated(request: Request, rt: RuntimeDep, session: SessionDep) -> Actor:
    token = session_token(request)
    if not token:
        raise Unauthorized("not logged in: send the session cookie or 'Authorization: Bearer <token>'")
    ip = client_ip(request)
    user, _row = accounts.resolve_session(session, rt.settings, token, ip=ip)
    return Actor(user_id=user.id, username=user.username, role=user.role, ip=ip)


_mark(authenticated, Rule("authenticated"))
ActorDep = Annotated[Actor, Depends(authenticated)]


def global_permission(permission: Permission) -> Callable[..., Actor]:
    def dep(actor: ActorDep) -> Actor:
        if permission not in permissions_for(actor.role):
            raise Forbidden(
                f"only administrators may {permission.value}", detail={"permission": permission.value}
            )
        return actor

    dep.__name__ = f"global_{permission.name.lower()}"
    return _mark(dep, Rule("global", permission))


def project_permission(permission: Permission) -> Callable[..., ProjectAccess]:
    def dep(actor: ActorDep, session: SessionDep, project_id: Annotated[int, Path(ge=1)]) -> ProjectAccess:
        return projects.require_project(session, actor, project_id, permission)

    dep.__name__ = f"project_{permission.name.lower()}"
    return _mark(dep, Rule("project", permission))


@dataclass(frozen=True)
class ItemAccess:
    item: Item
    access: ProjectAccess


def item_permission(permission: Permission) -> Callable[..., ItemAccess]:
    """Like ``project_permission`` for routes under ``/items/{item_id}``: the item's project
    decides. Non-members get the same 404 as for an item that does not exist."""

    def dep(actor: ActorDep, session: SessionDep, item_id: Annotated[int, Path(ge=1)]) -> ItemAccess:
        item = session.get(Item, item_id)
        if item is None:
            raise NotFound(f"no item with id {item_id}")
        try:
            access = projects.require_project(session, actor, item.project_id, permission)
        except NotFound:
            raise NotFound(f"no item with id {item_id}") from None
        return ItemAccess(item, access)

    dep.__name__ = f"item_{permission.name.lower()}"
    return _mark(dep, Rule("project", permission))


def object_rule(permission: Permission) -> Callable[..., Actor]:
    """Authenticated; the service checks access to the object itself (owner, or ``permission``
    in the object's project) and answers 404 otherwise."""

    def dep(actor: ActorDep) -> Actor:
        return actor

    dep.__name__ = f"object_{permission.name.lower()}"
    return _mark(dep, Rule("object", permission))
