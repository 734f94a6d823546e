"""Malformed JSON, missing fields, wrong types, oversized bodies, unknown routes: a 4xx JSON error
naming the field, and nothing written."""

from __future__ import annotations

from sqlalchemy import func, select

from medlabel.storage.db import session_scope
from medlabel.storage.models import Project, User

from .helpers import error_of, login, make_user


def _counts(rt) -> tuple[int, int]:
    with session_scope(rt.sessions) as s:
        return s.scalar(select(func.count(User.id))), s.scalar(select(func.count(Project.id)))


def test_bad_bodies_are_named_and_write_nothing(client, runtime):
    make_user(runtime, "root", "admin")
    h = login(client, "root")
    before = _counts(runtime)
    cases = [
        (
            {"content": b"{not json", "headers": {**h, "Content-Type": "application/json"}},
            None,
            "not valid JSON",
        ),
        ({"json": {"password": "a-long-enough-password"}}, "username", None),
        ({"json": {"username": "bob", "password": 12345}}, "password", None),
        (
            {"json": {"username": "bob", "password": "a-long-enough-password", "role": "emperor"}},
            "role",
            None,
        ),
        (
            {"json": {"username": "bob", "password": "a-long-enough-password", "colour": "red"}},
            "colour",
            None,
        ),
        ({"json": ["not", "an", "object"]}, None, None),
        ({"json": {"username": "bob", "password": "short"}}, None, "at least 10 characters"),
        (
            {"json": {"username": "../etc", "password": "a-long-enough-password"}},
            None,
            "'../etc' is not allowed",
        ),
    ]
    for kwargs, field, text in cases:
        kwargs.setdefault("headers", h)
        r = client.post("/api/v1/users", **kwargs)
        assert r.status_code == 422, (kwargs, r.text)
        err = error_of(r)
        assert err["code"] == "invalid_input"
        if field:
            assert any(p["field"] == field for p in err["detail"]), err
            assert field in err["message"]
        if text:
            assert text in err["message"], err
    assert _counts(runtime) == before


def test_duplicate_is_a_conflict(client, runtime):
    make_user(runtime, "root", "admin")
    h = login(client, "root")
    assert client.post("/api/v1/projects", json={"name": "Lungs"}, headers=h).status_code == 201
    r = client.post("/api/v1/projects", json={"name": "Lungs"}, headers=h)
    assert r.status_code == 409 and error_of(r)["detail"] == {"field": "name"}


def test_stale_if_match_is_412_and_keeps_the_data(client, runtime):
    make_user(runtime, "root", "admin")
    h = login(client, "root")
    pid = client.post("/api/v1/projects", json={"name": "Lungs"}, headers=h).json()["id"]
    r = client.patch(
        f"/api/v1/projects/{pid}", json={"description": "first"}, headers={**h, "If-Match": '"1"'}
    )
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    r = client.patch(
        f"/api/v1/projects/{pid}", json={"description": "stale"}, headers={**h, "If-Match": '"1"'}
    )
    assert r.status_code == 412 and error_of(r)["detail"] == {"current_version": 2}
    assert client.get(f"/api/v1/projects/{pid}", headers=h).json()["description"] == "first"
    r = client.patch(
        f"/api/v1/projects/{pid}", json={"description": "x"}, headers={**h, "If-Match": "yesterday"}
    )
    assert r.status_code == 422 and "If-Match" in error_of(r)["message"]


def test_oversized_body_is_413(runtime):
    from fastapi.testclient import TestClient

    from medlabel.api.app import create_app

    rt = runtime
    rt.settings = rt.settings.with_(max_body_bytes=1000)
    with TestClient(create_app(rt)) as c:
        make_user(rt, "root", "admin")
        h = login(c, "root")
        before = _counts(rt)
        r = c.post("/api/v1/projects", json={"name": "x", "description": "y" * 5000}, headers=h)
        assert r.status_code == 413
        err = error_of(r)
        assert err["code"] == "too_large" and "1000" in err["message"]

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(10):
                yield b"y" * 500

        r = c.post("/api/v1/projects", content=chunks(), headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 413
        assert _counts(rt) == before


def test_unknown_routes_and_methods_are_json(client):
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    assert "/api/v1/nothing-here" in error_of(r)["message"]
    r = client.get("/totally/unknown")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = client.delete("/api/v1/health")
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
    r = client.get("/api/v1/projects/abc")
    assert r.status_code in (401, 422)


def test_path_parameters_are_validated(client, runtime):
    make_user(runtime, "root", "admin")
    h = login(client, "root")
    r = client.get("/api/v1/projects/abc", headers=h)
    assert r.status_code == 422 and error_of(r)["detail"][0]["field"] == "project_id"


def test_health_and_openapi(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["database"] == "ok"
    spec = client.get("/openapi.json").json()
    assert "/api/v1/auth/login" in spec["paths"] and "/api/v1/projects/{project_id}" in spec["paths"]
