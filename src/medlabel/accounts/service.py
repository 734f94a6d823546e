"""Accounts: users, login with lockout and rate limits, sessions with idle and absolute expiry.

Failures that must be remembered (failed attempts, lockouts, expiries) are committed before
the error is raised, so the caller's rollback cannot erase them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NoReturn, cast

from sqlalchemy import Engine, Table, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from medlabel import clock
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction, AuditEventData, Outcome
from medlabel.config import Settings
from medlabel.errors import Conflict, InvalidInput, Locked, NotFound, RateLimited, Unauthorized
from medlabel.security.passwords import (
    DUMMY_HASH,
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from medlabel.security.rbac import GlobalRole
from medlabel.storage.cache import RowCache, engine_of
from medlabel.storage.db import session_scope
from medlabel.storage.models import LoginAttempt, User, UserSession

__all__ = [
    "Actor",
    "LoginResult",
    "create_user",
    "get_user_by_name",
    "list_users",
    "set_password",
    "login",
    "logout",
    "resolve_session",
    "resolve_actor",
    "SessionCheck",
    "cached_session",
    "cached_actor",
    "peek_session",
    "claim_touch",
    "touch_session",
    "hash_token",
]

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")
_TOUCH_EVERY = timedelta(seconds=10)


@dataclass(frozen=True)
class Actor:
    """Who is acting, as services need it (no ORM objects leak past the service ring)."""

    user_id: int | None
    username: str
    role: str
    ip: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == GlobalRole.ADMIN

    def event(self, action: AuditAction, **kw: object) -> AuditEventData:
        return AuditEventData(action=action, actor_id=self.user_id, actor=self.username, ip=self.ip, **kw)  # type: ignore[arg-type]


SYSTEM = Actor(user_id=None, username="system", role=GlobalRole.ADMIN)


@dataclass(frozen=True)
class LoginResult:
    token: str
    user_id: int
    username: str
    role: str
    expires_idle_at: datetime
    expires_at: datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(
    session: Session,
    username: str,
    password: str,
    *,
    role: str = GlobalRole.USER,
    display_name: str = "",
    actor: Actor = SYSTEM,
) -> User:
    if not _USERNAME.match(username):
        raise InvalidInput(
            f"username {username!r} is not allowed: use 2–64 letters, digits, '.', '_', '@' or '-'",
            detail={"field": "username"},
        )
    if role not in (GlobalRole.ADMIN, GlobalRole.USER):
        raise InvalidInput(f"role must be 'admin' or 'user', found {role!r}", detail={"field": "role"})
    check_password_policy(password)
    if session.scalar(select(User.id).where(func.lower(User.username) == username.lower())) is not None:
        raise Conflict(f"a user named {username!r} already exists", detail={"field": "username"})
    user = User(
        username=username,
        display_name=display_name or username,
        password_hash=hash_password(password),
        role=str(role),
        is_active=True,
        failed_logins=0,
        created_at=clock.now(),
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor.event(
            AuditAction.USER_CREATE,
            object_type="user",
            object_id=str(user.id),
            detail={"username": username, "role": str(role)},
        ),
    )
    return user


def get_user_by_name(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def set_password(session: Session, user: User, password: str, *, actor: Actor = SYSTEM) -> None:
    check_password_policy(password)
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    audit.record(
        session,
        actor.event(
            AuditAction.USER_UPDATE,
            object_type="user",
            object_id=str(user.id),
            detail={"changed": ["password"]},
        ),
    )


def _fail(session: Session, event: AuditEventData, error: Exception) -> NoReturn:
    audit.record(session, event)
    session.commit()
    raise error


def login(
    session: Session, settings: Settings, username: str, password: str, *, ip: str = "", user_agent: str = ""
) -> LoginResult:
    now = clock.now()
    recent_failures = (
        session.scalar(
            select(func.count(LoginAttempt.id)).where(
                LoginAttempt.ip == ip,
                LoginAttempt.success.is_(False),
                LoginAttempt.at >= now - settings.login_window,
            )
        )
        or 0
    )
    base = AuditEventData(
        action=AuditAction.LOGIN, outcome=Outcome.FAILURE, actor=username[:200], ip=ip, object_type="user"
    )
    if recent_failures >= settings.login_rate:
        _fail(
            session,
            replace(base, outcome=Outcome.DENIED, detail={"reason": "rate_limited"}),
            RateLimited(
                f"too many failed logins from {ip or 'this address'}: {recent_failures} in the last "
                f"{int(settings.login_window.total_seconds() // 60)} minutes; try again later"
            ),
        )
    user = session.scalar(select(User).where(User.username == username))
    invalid = Unauthorized("invalid username or password")
    if user is None or not user.is_active:
        verify_password(DUMMY_HASH, password)
        session.add(LoginAttempt(username=username[:64], ip=ip, at=now, success=False))
        _fail(session, replace(base, detail={"reason": "unknown_or_inactive_user"}), invalid)
    if user.locked_until is not None and user.locked_until > now:
        session.add(LoginAttempt(username=username, ip=ip, at=now, success=False))
        _fail(
            session,
            replace(
                base,
                actor_id=user.id,
                object_id=str(user.id),
                outcome=Outcome.DENIED,
                detail={"reason": "locked"},
            ),
            Locked(
                f"account {username!r} is locked after repeated failed logins until "
                f"{user.locked_until.isoformat(timespec='seconds')}",
                detail={"locked_until": user.locked_until.isoformat()},
            ),
        )
    if not verify_password(user.password_hash, password):
        user.failed_logins += 1
        session.add(LoginAttempt(username=username, ip=ip, at=now, success=False))
        detail: dict[str, object] = {"reason": "bad_password", "consecutive_failures": user.failed_logins}
        if user.failed_logins >= settings.lockout_failures:
            user.locked_until = now + settings.lockout_duration
            user.failed_logins = 0
            detail["locked_until"] = user.locked_until.isoformat()
            audit.record(
                session,
                AuditEventData(
                    action=AuditAction.ACCOUNT_LOCKED,
                    actor_id=user.id,
                    actor=username,
                    ip=ip,
                    object_type="user",
                    object_id=str(user.id),
                    detail=detail,
                ),
            )
        _fail(session, replace(base, actor_id=user.id, object_id=str(user.id), detail=detail), invalid)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    token = secrets.token_urlsafe(32)
    row = UserSession(
        token_hash=hash_token(token),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        ip=ip,
        user_agent=user_agent[:300],
    )
    session.add(row)
    session.add(LoginAttempt(username=username, ip=ip, at=now, success=True))
    session.flush()
    audit.record(
        session,
        AuditEventData(
            action=AuditAction.LOGIN,
            actor_id=user.id,
            actor=username,
            ip=ip,
            object_type="session",
            object_id=str(row.id),
        ),
    )
    return LoginResult(
        token=token,
        user_id=user.id,
        username=user.username,
        role=user.role,
        expires_idle_at=now + settings.idle_timeout,
        expires_at=now + settings.absolute_timeout,
    )


def _expire(session: Session, row: UserSession, user: User | None, reason: str, ip: str) -> NoReturn:
    row.revoked_at = clock.now()
    row.revoked_reason = reason
    audit.record(
        session,
        AuditEventData(
            action=AuditAction.SESSION_EXPIRED,
            actor_id=row.user_id,
            actor=user.username if user else "",
            ip=ip,
            object_type="session",
            object_id=str(row.id),
            detail={"reason": reason},
        ),
    )
    session.commit()
    raise Unauthorized(f"session expired ({reason}); log in again", code="session_expired")


def resolve_session(
    session: Session, settings: Settings, token: str, *, ip: str = ""
) -> tuple[User, UserSession]:
    """The user behind a session token, enforcing idle and absolute expiry."""
    token_hash = hash_token(token)
    row = session.scalar(select(UserSession).where(UserSession.token_hash == token_hash))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("not logged in, or the session was ended")
    user = session.get(User, row.user_id)
    now = clock.now()
    if user is None or not user.is_active:
        _expire(session, row, user, "user_inactive", ip)
    if now - row.last_seen_at > settings.idle_timeout:
        _expire(session, row, user, "idle", ip)
    if now - row.created_at > settings.absolute_timeout:
        _expire(session, row, user, "absolute", ip)
    if now - row.last_seen_at > _TOUCH_EVERY:
        row.last_seen_at = now
    else:
        _remember(session, token_hash, _facts(user, row))
    return user, row


# ---------------------------------------------------------------- session cache
#
# Every request resolves its token; the facts needed for that are cached for a couple of
# seconds (``medlabel.storage.cache``). Expiry is computed from the cached timestamps: the cached
# ``last_seen_at`` is never newer than the database's, so a session the cache finds neither idle
# nor past its absolute lifetime is not expired in the database either; anything else goes to
# the database (which records the expiry). Logout, expiry, and any change of the session row or
# of its user (role, deactivation) drop the entry at once in this process; other processes see
# such a change at most one TTL later. ``last_seen_at`` is still written at most every
# ``_TOUCH_EVERY``: by the request path that finds it due, or -- for pixel requests -- by one
# request per session and process (``claim_touch`` / ``touch_session``) while the others go on.


@dataclass(frozen=True, slots=True)
class _SessionFacts:
    user_id: int
    username: str
    role: str
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class SessionCheck:
    """A session found valid: the actor, and whether its ``last_seen_at`` is due a refresh."""

    actor: Actor
    token_hash: str
    touch_due: bool
    facts: _SessionFacts


_sessions_cache = RowCache(
    "sessions",
    {
        UserSession: lambda row: [row.token_hash],
        User: lambda user: lambda _key, facts: facts.user_id == user.id,
    },
)
_touch_lock = threading.Lock()
_touch_claims: dict[str, float] = {}


def _facts(user: User, row: UserSession) -> _SessionFacts:
    return _SessionFacts(user.id, user.username, user.role, row.created_at, row.last_seen_at)


def _remember(session: Session, token_hash: str, facts: _SessionFacts) -> None:
    """Cache a session found valid (committed facts only: see RowCache.put)."""
    _sessions_cache.put(session, token_hash, facts)


def _check(settings: Settings, token_hash: str, facts: _SessionFacts, ip: str) -> SessionCheck | None:
    """Valid (neither idle nor past its absolute lifetime, from these timestamps), or None."""
    now = clock.now()
    if now - facts.last_seen_at > settings.idle_timeout or now - facts.created_at > settings.absolute_timeout:
        return None
    actor = Actor(user_id=facts.user_id, username=facts.username, role=facts.role, ip=ip)
    return SessionCheck(actor, token_hash, now - facts.last_seen_at > _TOUCH_EVERY, facts)


def cached_session(
    engine: Engine | None, settings: Settings, token: str, *, ip: str = ""
) -> SessionCheck | None:
    """A valid session from the in-process cache, or None when the database must be asked (not
    cached, or maybe expired). Never touches the database."""
    token_hash = hash_token(token)
    facts: _SessionFacts | None = _sessions_cache.get(engine, token_hash)
    return None if facts is None else _check(settings, token_hash, facts, ip)


def cached_actor(engine: Engine | None, settings: Settings, token: str, *, ip: str = "") -> Actor | None:
    """The actor of ``token`` from the in-process cache, or None when the database must be asked
    (not cached, maybe expired, or ``last_seen_at`` due). Never touches the database."""
    found = cached_session(engine, settings, token, ip=ip)
    return found.actor if found is not None and not found.touch_due else None


def resolve_actor(session: Session, settings: Settings, token: str, *, ip: str = "") -> Actor:
    """:func:`resolve_session` as an :class:`Actor`, answered from the cache when it can be."""
    found = cached_actor(engine_of(session), settings, token, ip=ip)
    if found is not None:
        return found
    user, _row = resolve_session(session, settings, token, ip=ip)
    return Actor(user_id=user.id, username=user.username, role=user.role, ip=ip)


def peek_session(session: Session, settings: Settings, token: str, *, ip: str = "") -> SessionCheck | None:
    """Check ``token`` without writing (read-only sessions): the valid session (cached for the
    next requests), or None when :func:`resolve_session` must run in a writing transaction to
    record an expiry. Unknown or ended sessions raise ``Unauthorized`` as there."""
    token_hash = hash_token(token)
    row = session.scalar(select(UserSession).where(UserSession.token_hash == token_hash))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("not logged in, or the session was ended")
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    facts = _facts(user, row)
    found = _check(settings, token_hash, facts, ip)
    if found is not None:
        _remember(session, token_hash, facts)
    return found


def claim_touch(check: SessionCheck) -> bool:
    """Whether this request should write the session's ``last_seen_at`` (one request per session
    and process at a time; the others go on with the session as checked)."""
    if not check.touch_due:
        return False
    now = time.monotonic()
    with _touch_lock:
        claimed = _touch_claims.get(check.token_hash)
        if claimed is not None and now - claimed < 30:
            return False
        _touch_claims[check.token_hash] = now
        return True


def touch_session(sessions: sessionmaker[Session], check: SessionCheck) -> None:
    """Write ``last_seen_at = now`` for a claimed session (:func:`claim_touch`), unless another
    process did in the last ``_TOUCH_EVERY``; then move the cached entry on."""
    now = clock.now()
    table = cast(Table, UserSession.__table__)
    try:
        with session_scope(sessions) as s:
            # Core, not the ORM: the cached entry is moved on below instead of being dropped
            done = s.connection().execute(
                update(table)
                .where(
                    table.c.token_hash == check.token_hash,
                    table.c.revoked_at.is_(None),
                    table.c.last_seen_at < now - _TOUCH_EVERY,
                )
                .values(last_seen_at=now)
            )
            engine = engine_of(s)
        if done.rowcount == 1:
            _sessions_cache.swap(
                engine, check.token_hash, check.facts, replace(check.facts, last_seen_at=now)
            )
        else:  # revoked, or touched by another process: read it again next time
            _sessions_cache.invalidate(engine, [check.token_hash])
    finally:
        with _touch_lock:
            _touch_claims.pop(check.token_hash, None)


def logout(session: Session, token: str, *, ip: str = "") -> None:
    row = session.scalar(select(UserSession).where(UserSession.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return
    row.revoked_at = clock.now()
    row.revoked_reason = "logout"
    user = session.get(User, row.user_id)
    audit.record(
        session,
        AuditEventData(
            action=AuditAction.LOGOUT,
            actor_id=row.user_id,
            actor=user.username if user else "",
            ip=ip,
            object_type="session",
            object_id=str(row.id),
        ),
    )
