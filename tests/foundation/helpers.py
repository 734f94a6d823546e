"""Factories for foundation tests: users, logins, projects — through the real services."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from medlabel.accounts import service as accounts
from medlabel.accounts.service import Actor
from medlabel.projects import service as projects
from medlabel.runtime import Runtime
from medlabel.storage.db import session_scope

PASSWORD = "a-long-enough-password"


def make_user(rt: Runtime, username: str, role: str = "user") -> int:
    with session_scope(rt.sessions) as s:
        return accounts.create_user(s, username, PASSWORD, role=role).id


def make_project(rt: Runtime, name: str, members: dict[str, list[str]] | None = None) -> int:
    with session_scope(rt.sessions) as s:
        p = projects.create_project(s, Actor(None, "test", "admin"), name)
        for username, roles in (members or {}).items():
            for role in roles:
                projects.add_member(s, Actor(None, "test", "admin"), p, username, role)
        return p.id


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    client.cookies.clear()  # use the bearer token explicitly
    return {"Authorization": f"Bearer {r.json()['token']}"}


def error_of(resp: Any) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "detail"}, body
    return body["error"]


def session_headers(rt: Runtime, user_id: int) -> dict[str, str]:
    """A valid session for ``user_id`` without the cost of an Argon2 login (for big role tables)."""
    import secrets

    from medlabel import clock
    from medlabel.accounts.service import hash_token
    from medlabel.storage.models import UserSession

    token = secrets.token_urlsafe(16)
    with session_scope(rt.sessions) as s:
        now = clock.now()
        s.add(UserSession(token_hash=hash_token(token), user_id=user_id, created_at=now, last_seen_at=now))
    return {"Authorization": f"Bearer {token}"}
