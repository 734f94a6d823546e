from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from medlabel import clock
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent, UserSession

from .helpers import PASSWORD, error_of, login, make_user


def test_login_sets_httponly_cookie_and_token_works(client, runtime):
    make_user(runtime, "alice")
    r = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert (
        "medlabel_session=" in cookie
        and "HttpOnly" in cookie
        and "SameSite=strict" in cookie.replace("Strict", "strict")
    )
    token = r.json()["token"]
    assert client.get("/api/v1/auth/me").json()["username"] == "alice"  # cookie
    client.cookies.clear()
    assert client.get("/api/v1/auth/me").status_code == 401
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["username"] == "alice"
    with session_scope(runtime.sessions) as s:
        row = s.scalar(select(UserSession))
        assert row.token_hash != token and len(row.token_hash) == 64  # only the hash is stored


def test_wrong_password_and_unknown_user_look_the_same(client, runtime):
    make_user(runtime, "alice")
    a = client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-password!"})
    b = client.post("/api/v1/auth/login", json={"username": "nobody", "password": "wrong-password!"})
    assert a.status_code == b.status_code == 401
    assert error_of(a)["message"] == error_of(b)["message"] == "invalid username or password"
    with session_scope(runtime.sessions) as s:
        outcomes = [e.outcome for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login"))]
    assert outcomes == ["failure", "failure"]


def test_logout_revokes_the_token(client, runtime):
    make_user(runtime, "alice")
    h = login(client, "alice")
    assert client.post("/api/v1/auth/logout", headers=h).status_code == 204
    r = client.get("/api/v1/auth/me", headers=h)
    assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"


def test_idle_session_expires_and_activity_keeps_it_alive(client, runtime):
    make_user(runtime, "alice")
    h = login(client, "alice")
    clock.set_offset(timedelta(minutes=20))
    assert client.get("/api/v1/auth/me", headers=h).status_code == 200  # activity at +20 min
    clock.set_offset(timedelta(minutes=45))  # 25 min idle since: still alive
    assert client.get("/api/v1/auth/me", headers=h).status_code == 200
    clock.set_offset(timedelta(minutes=45 + 31))  # 31 min idle: ends
    r = client.get("/api/v1/auth/me", headers=h)
    assert r.status_code == 401 and error_of(r)["code"] == "session_expired"
    clock.set_offset(timedelta(minutes=45 + 32))
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401  # stays ended
    with session_scope(runtime.sessions) as s:
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "auth.session_expired"))
        assert ev is not None and ev.detail == {"reason": "idle"}


def test_absolute_session_lifetime(client, runtime):
    make_user(runtime, "alice")
    h = login(client, "alice")
    for minutes in range(20, 12 * 60, 20):  # keep active every 20 min
        clock.set_offset(timedelta(minutes=minutes))
        assert client.get("/api/v1/auth/me", headers=h).status_code == 200
    clock.set_offset(timedelta(hours=12, minutes=5))
    r = client.get("/api/v1/auth/me", headers=h)
    assert r.status_code == 401 and error_of(r)["code"] == "session_expired"


def test_lockout_after_repeated_failures(client, runtime):
    make_user(runtime, "alice")
    for _ in range(5):
        assert (
            client.post(
                "/api/v1/auth/login", json={"username": "alice", "password": "bad-password"}
            ).status_code
            == 401
        )
    r = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 423 and error_of(r)["code"] == "locked"
    assert "locked" in error_of(r)["message"]
    clock.set_offset(timedelta(minutes=16))
    assert (
        client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
    )
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "auth.account_locked")) is not None


def test_failed_logins_are_rate_limited_per_address(client, runtime):
    for i in range(20):
        r = client.post("/api/v1/auth/login", json={"username": f"guess{i}", "password": "whatever-123"})
        assert r.status_code == 401
    make_user(runtime, "alice")
    r = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 429 and error_of(r)["code"] == "rate_limited"
    clock.set_offset(timedelta(minutes=6))
    assert (
        client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
    )
