"""The in-process caches of sessions and memberships (``medlabel.storage.cache``): every change
made in this process is seen by the very next request, expiry stays exact, ``last_seen_at`` is
still written at most every ``_TOUCH_EVERY``, a stale value can never be put back, and a change
made behind the ORM's back (another process) is seen within the TTL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from medlabel import clock
from medlabel.accounts import service as accounts
from medlabel.accounts.service import Actor
from medlabel.projects import service as projects
from medlabel.storage import cache
from medlabel.storage.db import make_read_sessionmaker, session_scope
from medlabel.storage.models import Membership, Project, User, UserSession

from .helpers import error_of, login, make_project, make_user, session_headers

ADMIN = Actor(None, "test", "admin")


@pytest.fixture(autouse=True)
def _long_ttl():
    """A TTL far longer than any test, so only invalidation can explain a fresh answer."""
    before = cache.cache_ttl()
    cache.set_cache_ttl(3600)
    yield
    cache.set_cache_ttl(before)


def _me(client, h):
    return client.get("/api/v1/auth/me", headers=h)


def test_logout_ends_a_cached_session_at_once(client, runtime):
    make_user(runtime, "alice")
    h = login(client, "alice")
    assert _me(client, h).status_code == 200
    assert _me(client, h).status_code == 200  # answered from the cache
    assert client.post("/api/v1/auth/logout", headers=h).status_code == 204
    r = _me(client, h)
    assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"


def test_deactivation_and_role_change_are_seen_at_once(client, runtime):
    uid = make_user(runtime, "bob", role="admin")
    h = session_headers(runtime, uid)
    assert client.get("/api/v1/users", headers=h).status_code == 200
    with session_scope(runtime.sessions) as s:
        s.get(User, uid).role = "user"
    assert client.get("/api/v1/users", headers=h).status_code == 403
    with session_scope(runtime.sessions) as s:
        s.get(User, uid).is_active = False
    r = _me(client, h)
    assert r.status_code == 401 and error_of(r)["code"] == "session_expired"


def test_membership_removal_denies_at_once(client, runtime):
    make_user(runtime, "boss")
    make_user(runtime, "carol")
    pid = make_project(runtime, "Cached", {"boss": ["manager"], "carol": ["annotator"]})
    boss, carol = login(client, "boss"), login(client, "carol")
    assert client.get(f"/api/v1/projects/{pid}", headers=carol).status_code == 200
    assert client.get(f"/api/v1/projects/{pid}", headers=carol).status_code == 200  # cached roles
    r = client.delete(f"/api/v1/projects/{pid}/members/carol/annotator", headers=boss)
    assert r.status_code == 204, r.text
    assert client.get(f"/api/v1/projects/{pid}", headers=carol).status_code == 404
    r = client.post(
        f"/api/v1/projects/{pid}/members", headers=boss, json={"username": "carol", "role": "reviewer"}
    )
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/projects/{pid}", headers=carol).status_code == 200


def test_idle_expiry_is_exact_with_the_cache(client, runtime):
    make_user(runtime, "dave")
    h = login(client, "dave")
    assert _me(client, h).status_code == 200
    with session_scope(runtime.sessions) as s:
        seen = s.scalar(
            select(UserSession.last_seen_at).where(
                UserSession.token_hash == accounts.hash_token(h["Authorization"].removeprefix("Bearer "))
            )
        )
    # the clock set from the session's own last-seen time, however long the machine took so far
    clock.set_offset(seen + runtime.settings.idle_timeout - timedelta(seconds=1) - datetime.now(UTC))
    assert _me(client, h).status_code == 200  # 1 s before the idle limit: refreshed
    clock.set_offset(3 * runtime.settings.idle_timeout)  # idle since the refresh: ended
    r = _me(client, h)
    assert r.status_code == 401 and error_of(r)["code"] == "session_expired"


def test_absolute_expiry_is_exact_with_the_cache(client, runtime):
    make_user(runtime, "erin")
    h = login(client, "erin")
    step = runtime.settings.idle_timeout / 2
    t = timedelta(0)
    while t + step < runtime.settings.absolute_timeout:
        t += step
        clock.set_offset(t)
        assert _me(client, h).status_code == 200
    clock.set_offset(runtime.settings.absolute_timeout + timedelta(seconds=1))
    r = _me(client, h)
    assert r.status_code == 401 and error_of(r)["code"] == "session_expired"


def _last_seen(runtime, token_header):
    token = token_header["Authorization"].removeprefix("Bearer ")
    with session_scope(runtime.sessions) as s:
        return s.scalar(
            select(UserSession.last_seen_at).where(UserSession.token_hash == accounts.hash_token(token))
        )


def test_last_seen_is_written_at_most_every_touch_interval(client, runtime):
    uid = make_user(runtime, "fay")
    h = session_headers(runtime, uid)
    first = _last_seen(runtime, h)
    for _ in range(5):
        assert _me(client, h).status_code == 200
    assert _last_seen(runtime, h) == first  # within _TOUCH_EVERY: no write
    clock.set_offset(accounts._TOUCH_EVERY + timedelta(seconds=1))
    assert _me(client, h).status_code == 200
    touched = _last_seen(runtime, h)
    assert touched > first
    for _ in range(3):
        assert _me(client, h).status_code == 200
    assert _last_seen(runtime, h) == touched


def test_a_change_behind_the_orm_is_seen_within_the_ttl(client, runtime):
    """What another process does (here: raw SQL, which no ORM event sees) is the TTL bound."""
    cache.set_cache_ttl(0.3)
    make_user(runtime, "gus")
    h = login(client, "gus")
    assert _me(client, h).status_code == 200
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE sessions SET revoked_at = last_seen_at"))
    time.sleep(0.35)
    assert _me(client, h).status_code == 401


def test_bulk_orm_update_drops_the_cache(client, runtime):
    make_user(runtime, "hal")
    h = login(client, "hal")
    assert _me(client, h).status_code == 200
    with session_scope(runtime.sessions) as s:
        s.execute(update(UserSession).values(revoked_at=clock.now()))
    assert _me(client, h).status_code == 401


def test_a_stale_read_is_never_put_back(runtime):
    """A transaction that began before an invalidation may not cache what it reads (on SQLite a
    read-only transaction keeps its snapshot: it still sees the removed membership)."""
    make_user(runtime, "ivy")
    pid = make_project(runtime, "Race", {"ivy": ["annotator"]})
    reads = make_read_sessionmaker(runtime.engine)
    reader = reads()
    try:
        uid = reader.scalar(select(User.id).where(User.username == "ivy"))  # transaction began
        with session_scope(runtime.sessions) as s:  # meanwhile: the membership goes
            s.delete(s.scalar(select(Membership).where(Membership.user_id == uid)))
        roles = projects.project_roles(reader, pid, uid)
        assert roles in (frozenset({"annotator"}), frozenset())  # old snapshot, or read committed
    finally:
        reader.close()
    assert projects.cached_roles(runtime.engine, pid, uid) in (None, frozenset())  # never the stale
    with session_scope(runtime.sessions) as s:
        assert projects.project_roles(s, pid, uid) == frozenset()


def test_a_transaction_reads_its_own_membership_changes(runtime):
    make_user(runtime, "jo")
    pid = make_project(runtime, "Own", {"jo": ["annotator"]})
    with session_scope(runtime.sessions) as s:
        uid = s.scalar(select(User.id).where(User.username == "jo"))
        assert projects.project_roles(s, pid, uid) == frozenset({"annotator"})
    with session_scope(runtime.sessions) as s:
        assert projects.project_roles(s, pid, uid) == frozenset({"annotator"})  # cached
        s.add(Membership(project_id=pid, user_id=uid, role="reviewer", created_at=clock.now()))
        assert projects.project_roles(s, pid, uid) == frozenset({"annotator", "reviewer"})
        s.rollback()
    with session_scope(runtime.sessions) as s:
        assert projects.project_roles(s, pid, uid) == frozenset({"annotator"})  # the rollback


def test_read_only_sessions_refuse_writes_and_do_not_queue_behind_writers(runtime):
    reads = make_read_sessionmaker(runtime.engine)
    with reads() as s, pytest.raises(RuntimeError, match="read-only"):
        s.add(Project(name="nope", description="", created_at=clock.now(), settings={}))
        s.flush()
    if not runtime.settings.database_url.startswith("sqlite"):
        return
    writer = runtime.sessions()
    try:
        writer.execute(text("SELECT 1"))  # holds the in-process write turn (BEGIN IMMEDIATE)
        done = threading.Event()

        def read() -> None:
            with reads() as s:
                s.execute(select(Project.id)).all()
            done.set()

        t = threading.Thread(target=read)
        t.start()
        assert done.wait(5), "a read-only session waited for the write turn"
        t.join()
    finally:
        writer.rollback()
        writer.close()


def test_caches_of_two_runtimes_never_mix(runtime, tmp_path):
    from medlabel.config import Settings
    from medlabel.runtime import create_runtime

    other = create_runtime(Settings(home=tmp_path / "other", database_url=f"sqlite:///{tmp_path / 'o.db'}"))
    try:
        for rt in (runtime, other):
            make_user(rt, "kim")
        pid = make_project(runtime, "One", {"kim": ["manager"]})
        with session_scope(runtime.sessions) as s:
            uid = s.scalar(select(User.id).where(User.username == "kim"))
            projects.project_roles(s, pid, uid)
        assert projects.cached_roles(runtime.engine, pid, uid) == frozenset({"manager"})
        assert projects.cached_roles(other.engine, pid, uid) is None
    finally:
        other.close()


def test_concurrent_identical_pixel_checks_query_once(monkeypatch):
    """Cold caches and a viewer asking for many tiles at once: one database check, shared
    (its answer or its error) by the identical requests waiting on it."""
    import asyncio

    from medlabel.api import deps
    from medlabel.errors import Unauthorized

    calls: list[str] = []

    def slow_access(rt, token, ip, item_id, permission):
        calls.append(token)
        time.sleep(0.05)
        if token == "bad":
            raise Unauthorized("not logged in, or the session was ended")
        return ("access", token, item_id)

    monkeypatch.setattr(deps, "_pixel_access", slow_access)

    async def burst(token: str, n: int) -> list[object]:
        key = (1, token, "ip", 7, "item.read")
        jobs = [deps._coalesced(key, None, token, "ip", 7, None) for _ in range(n)]  # type: ignore[arg-type]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(burst("good", 12))
    assert results == [("access", "good", 7)] * 12 and calls == ["good"]
    errors = asyncio.run(burst("bad", 5))
    assert all(isinstance(e, Unauthorized) for e in errors) and calls == ["good", "bad"]
    assert deps._inflight == {}
