"""Request dependencies: the runtime, a DB session per request, the actor, and access rules.

Every API route declares exactly one access rule through one of the dependencies below
(``public``, ``authenticated``, ``global_permission(...)``, ``project_permission(...)``,
``object_rule(...)``). The rule is attached to the dependency function as ``medlabel_rule``,
so tests can enumerate every route with its rule — a route without one fails the suite.

Dependencies that never block are ``async`` (no thread-pool hop). The actor, memberships and
item rows are read through short-lived in-process caches (``medlabel.storage.cache``), so a
request whose facts are cached makes no database query for its access check; pixel routes
(``item_pixels``) go further and use read-only sessions only on a cache miss.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from medlabel.accounts import service as accounts
from medlabel.accounts.service import Actor
from medlabel.errors import Forbidden, NotFound, Unauthorized
from medlabel.items import pixels, upload_sessions
from medlabel.items.models import Item
from medlabel.items.settings import DeidSettings, cached_deid_settings, remember_deid_settings
from medlabel.projects import service as projects
from medlabel.projects.service import ProjectAccess
from medlabel.runtime import Runtime
from medlabel.security.rbac import Permission, permissions_for
from medlabel.storage.db import make_read_sessionmaker, session_scope
from medlabel.storage.models import User

log = logging.getLogger(__name__)

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
    "upload_permission",
    "UploadAccess",
    "upload_put",
    "UploadPut",
    "item_pixels",
    "PixelAccess",
    "read_sessions",
    "warm_up",
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


async def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


_read_makers: weakref.WeakKeyDictionary[Engine, sessionmaker[Session]] = weakref.WeakKeyDictionary()


def read_sessions(rt: Runtime) -> sessionmaker[Session]:
    """Read-only sessions on the runtime's engine (see ``make_read_sessionmaker``)."""
    found = _read_makers.get(rt.engine)
    if found is None:
        found = _read_makers.setdefault(rt.engine, make_read_sessionmaker(rt.engine))
    return found


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


async def public() -> None:
    """No authentication needed."""


_mark(public, Rule("public"))


_NOT_LOGGED_IN = "not logged in: send the session cookie or 'Authorization: Bearer <token>'"


def authenticated(request: Request, rt: RuntimeDep, session: SessionDep) -> Actor:
    token = session_token(request)
    if not token:
        raise Unauthorized(_NOT_LOGGED_IN)
    return accounts.resolve_actor(session, rt.settings, token, ip=client_ip(request))


_mark(authenticated, Rule("authenticated"))
ActorDep = Annotated[Actor, Depends(authenticated)]


def global_permission(permission: Permission) -> Callable[..., Awaitable[Actor]]:
    async def dep(actor: ActorDep) -> Actor:
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


@dataclass(frozen=True)
class UploadAccess:
    upload: upload_sessions.SessionRef
    access: ProjectAccess


def upload_permission(permission: Permission) -> Callable[..., UploadAccess]:
    """Like ``project_permission`` for routes under ``/projects/{project_id}/uploads/{upload_id}``;
    then the upload session must be the actor's own (administrators: any) in that project, else
    the same 404 as for one that does not exist (or has expired)."""

    def dep(
        actor: ActorDep,
        session: SessionDep,
        rt: RuntimeDep,
        project_id: Annotated[int, Path(ge=1)],
        upload_id: Annotated[str, Path(min_length=1, max_length=64)],
    ) -> UploadAccess:
        access = projects.require_project(session, actor, project_id, permission)
        with read_sessions(rt)() as r:  # no write turn (SQLite) for a lookup on every PUT
            ref = upload_sessions.get_session(
                r, actor, project_id=project_id, upload_id=upload_id, home=rt.settings.home, writer=session
            )
        return UploadAccess(ref, access)

    dep.__name__ = f"upload_{permission.name.lower()}"
    return _mark(dep, Rule("project", permission))


def _cached_check(request: Request) -> tuple[Runtime, str, str, accounts.SessionCheck | None]:
    """The runtime, the session token (401 without one), the client address and the session as
    the in-process cache knows it (None: ask the database)."""
    rt: Runtime = request.app.state.runtime
    token = session_token(request)
    if not token:
        raise Unauthorized(_NOT_LOGGED_IN)
    ip = client_ip(request)
    return rt, token, ip, accounts.cached_session(rt.engine, rt.settings, token, ip=ip)


@dataclass(frozen=True)
class UploadPut:
    """What a PUT of a file into an upload session needs: the session, the actor and the
    project's de-identification settings (plain values)."""

    upload: upload_sessions.SessionRef
    actor: Actor
    settings: DeidSettings


def upload_put(permission: Permission) -> Callable[..., Awaitable[UploadPut]]:
    """``upload_permission`` for the PUT of a file, where per-file overhead is the cost: the same
    checks and answers (401; 404 for non-members, other users' and expired sessions; 403), from
    the in-process caches without a query or a write turn when the session token, the roles, the
    project's settings and the upload session are cached; otherwise in one thread-pool call with
    read-only sessions (a writing transaction only to record an expiry)."""

    async def dep(
        request: Request,
        project_id: Annotated[int, Path(ge=1)],
        upload_id: Annotated[str, Path(min_length=1, max_length=64)],
    ) -> UploadPut:
        rt, token, ip, check = _cached_check(request)
        found = _upload_put_cached(rt, check, project_id, upload_id, permission) if check is not None else None
        if found is None:
            return await run_in_threadpool(_upload_put_access, rt, token, ip, project_id, upload_id, permission)
        if check is not None and accounts.claim_touch(check):
            await run_in_threadpool(accounts.touch_session, rt.sessions, check)
        return found

    dep.__name__ = f"upload_put_{permission.name.lower()}"
    return _mark(dep, Rule("project", permission))


def _upload_put_cached(
    rt: Runtime, check: accounts.SessionCheck, project_id: int, upload_id: str, permission: Permission
) -> UploadPut | None:
    roles = projects.cached_roles(rt.engine, project_id, check.actor.user_id)
    if roles is None or projects.allowed(check.actor, roles, permission) is None:
        return None  # not cached, or a refusal: the database path words the answer
    settings = cached_deid_settings(rt.engine, project_id)
    ref = upload_sessions.cached_session_ref(rt.engine, check.actor, project_id=project_id, upload_id=upload_id)
    if settings is None or ref is None:
        return None
    return UploadPut(ref, check.actor, settings)


def _upload_put_access(
    rt: Runtime, token: str, ip: str, project_id: int, upload_id: str, permission: Permission
) -> UploadPut:
    reads = read_sessions(rt)
    with reads() as s:
        check = accounts.peek_session(s, rt.settings, token, ip=ip)
    if check is None:  # maybe expired: resolve_session records it and answers
        with session_scope(rt.sessions) as s:
            actor = accounts.resolve_actor(s, rt.settings, token, ip=ip)
    else:
        actor = check.actor
        if accounts.claim_touch(check):
            accounts.touch_session(rt.sessions, check)
    with reads() as s, rt.sessions() as writer:
        access = projects.require_project(s, actor, project_id, permission)
        settings = remember_deid_settings(s, access.project)
        ref = upload_sessions.get_session(
            s, actor, project_id=project_id, upload_id=upload_id, home=rt.settings.home, writer=writer
        )
    return UploadPut(ref, actor, settings)


def object_rule(permission: Permission) -> Callable[..., Awaitable[Actor]]:
    """Authenticated; the service checks access to the object itself (owner, or ``permission``
    in the object's project) and answers 404 otherwise."""

    async def dep(actor: ActorDep) -> Actor:
        return actor

    dep.__name__ = f"object_{permission.name.lower()}"
    return _mark(dep, Rule("object", permission))


@dataclass(frozen=True)
class PixelAccess:
    """What a pixel route needs: the item (a detached, shared row: read only), the actor, the
    actor's permissions in the item's project, the runtime and its read-only sessions."""

    item: Item
    actor: Actor
    permissions: frozenset[Permission]
    runtime: Runtime
    reads: sessionmaker[Session]


def item_pixels(permission: Permission) -> Callable[..., Awaitable[PixelAccess]]:
    """``item_permission`` for the pixel routes, where per-request overhead is the cost: the same
    checks and answers (401, 404 for non-members and missing items, 403), made from the
    in-process caches without a thread hop or a query when the session, the item and the
    membership are cached; otherwise in one thread-pool call with read-only sessions (a
    writing transaction only to record an expiry). A due ``last_seen_at`` refresh is written by
    one request of the session while the others go on."""

    async def dep(request: Request, item_id: Annotated[int, Path(ge=1)]) -> PixelAccess:
        rt, token, ip, check = _cached_check(request)
        found = _pixel_access_cached(rt, check, item_id, permission) if check is not None else None
        if found is None:
            return await _coalesced(
                (id(rt), token, ip, item_id, permission), rt, token, ip, item_id, permission
            )
        if check is not None and accounts.claim_touch(check):
            await run_in_threadpool(accounts.touch_session, rt.sessions, check)
        return found

    dep.__name__ = f"item_pixels_{permission.name.lower()}"
    return _mark(dep, Rule("project", permission))


_inflight: dict[tuple[Any, ...], asyncio.Future[PixelAccess]] = {}


async def _coalesced(
    key: tuple[Any, ...], rt: Runtime, token: str, ip: str, item_id: int, permission: Permission
) -> PixelAccess:
    """:func:`_pixel_access` once for concurrent identical requests (same token, address, item
    and permission -- a viewer fetching many tiles at once on cold caches): the others await the
    first one's answer, or its error, instead of each querying the database."""
    running = _inflight.get(key)
    if running is not None:
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            if not running.cancelled():
                raise  # this request was cancelled
        # the first request went away (client disconnected): resolve on our own
        return await run_in_threadpool(_pixel_access, rt, token, ip, item_id, permission)
    future: asyncio.Future[PixelAccess] = asyncio.get_running_loop().create_future()
    _inflight[key] = future
    try:
        found = await run_in_threadpool(_pixel_access, rt, token, ip, item_id, permission)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waited
        raise
    else:
        future.set_result(found)
        return found
    finally:
        _inflight.pop(key, None)


def warm_up(rt: Runtime, app: Any = None) -> None:
    """Pay one-time costs before the first request instead of during it (``medlabel serve``
    calls this once per server process): build the routes' dependency models (with ``app``,
    see ``_warm_routes``), compile the access queries of pixel requests, load the image codecs,
    then freeze the objects that exist now (the imported modules, about 300 000) out of the
    garbage collector's full collections -- otherwise each one walks them all and stalls every
    request in flight for 100 ms or more."""
    if app is not None:
        _warm_routes(app)
    with read_sessions(rt)() as s:
        try:
            accounts.peek_session(s, rt.settings, "warm-up: no such token")
        except Unauthorized:
            pass
        s.get(User, 0)
        pixels.fetch_item(s, 0)
        projects.fetch_roles(s, 0, 0)
    pixels.warm_codecs()
    gc.collect()
    gc.freeze()


#: Requests sent through the app by ``_warm_routes``: a path no route has (the router builds every
#: route's context on its way to the 404) and the health check. Neither reads or writes data.
_WARM_REQUESTS = (("GET", "/api/v1/__warm-up__"), ("GET", "/api/v1/health"))


def _warm_routes(app: Any) -> None:
    """FastAPI builds each route's dependency model (signatures, Pydantic adapters) when the
    first request is matched against it, not when the app is made: measured, the first request of
    a server process took ≈ 100–170 ms longer than the next (an upload session's creation 95 ms
    instead of 6). Send the app a few requests of its own here, on a thread of its own (the
    server's event loop may be running already: uvicorn makes the app of a server process
    inside it)."""

    async def one(method: str, path: str) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"localhost")],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        await app(scope, receive, send)

    async def all_of_them() -> None:
        for method, path in _WARM_REQUESTS:
            await one(method, path)

    def run() -> None:
        try:
            asyncio.run(all_of_them())
        except Exception:  # noqa: BLE001  (a warm-up that fails leaves the costs to the first request)
            log.warning("warming up the routes failed", exc_info=True)

    thread = threading.Thread(target=run, name="medlabel-warm-up")
    thread.start()
    thread.join()


def _pixel_access_cached(
    rt: Runtime, check: accounts.SessionCheck, item_id: int, permission: Permission
) -> PixelAccess | None:
    item = pixels.cached_item(rt.engine, item_id)
    if item is None:
        return None
    roles = projects.cached_roles(rt.engine, item.project_id, check.actor.user_id)
    if roles is None:
        return None
    perms = projects.allowed(check.actor, roles, permission)
    if perms is None:  # a refusal: the database path gives the exact answer
        return None
    return PixelAccess(item, check.actor, perms, rt, read_sessions(rt))


def _pixel_access(rt: Runtime, token: str, ip: str, item_id: int, permission: Permission) -> PixelAccess:
    """The database path (a cache miss, or the one request renewing the entries): the session,
    the item and the roles read afresh in one read-only session."""
    reads = read_sessions(rt)
    with reads() as s:
        check = accounts.peek_session(s, rt.settings, token, ip=ip)
        found = _item_access(s, check.actor, item_id, permission) if check is not None else None
    if check is None or found is None:  # maybe expired: resolve_session records it and answers
        with session_scope(rt.sessions) as s:
            actor = accounts.resolve_actor(s, rt.settings, token, ip=ip)
        with reads() as s:  # still valid after all (it changed meanwhile)
            item, perms = _item_access(s, actor, item_id, permission)
        return PixelAccess(item, actor, perms, rt, reads)
    if accounts.claim_touch(check):
        accounts.touch_session(rt.sessions, check)
    item, perms = found
    return PixelAccess(item, check.actor, perms, rt, reads)


def _item_access(
    s: Session, actor: Actor, item_id: int, permission: Permission
) -> tuple[Item, frozenset[Permission]]:
    item = pixels.fetch_item(s, item_id)
    if item is None:
        raise NotFound(f"no item with id {item_id}")
    perms = projects.allowed(actor, projects.fetch_roles(s, item.project_id, actor.user_id), permission)
    if perms is None:  # refused: require_project words the answer (404 or 403)
        try:
            perms = projects.require_project(s, actor, item.project_id, permission).permissions
        except NotFound:
            raise NotFound(f"no item with id {item_id}") from None
    return item, perms
