"""Accounts: users, login with lockout and rate limits, sessions with idle and absolute expiry.

Failures that must be remembered (failed attempts, lockouts, expiries) are committed before
the error is raised, so the caller's rollback cannot erase them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import func, select
from sqlalchemy.orm import Session

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
    row = session.scalar(select(UserSession).where(UserSession.token_hash == hash_token(token)))
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
    return user, row


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
