"""Every role against every API route, from one table.

The test discovers the routes from the app. A route without an access rule, or without a
sample request below, fails the suite — so no route can be added without its access rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute

from medlabel.api.app import iter_api_routes
from medlabel.api.deps import Rule
from medlabel.jobs import service as jobs
from medlabel.security.rbac import ROLE_PERMISSIONS, Permission, ProjectRole
from medlabel.storage.db import session_scope

from .helpers import PASSWORD, make_project, make_user, session_headers

_counter = itertools.count()


@dataclass
class Ctx:
    """What a sample request may use: the runtime, the target project (every project role is a
    member), a job in it, user ids by principal, and a cache for objects samples create."""

    rt: Any
    project_id: int
    job_id: str
    users: dict[str, int]
    cache: dict[str, Any]


Sample = Callable[[Ctx], dict[str, Any]]  # returns kwargs for client.request (url, json, …)


def _fresh_member(ctx: Ctx) -> dict[str, Any]:
    from medlabel.accounts.service import Actor
    from medlabel.projects import service as projects
    from medlabel.storage.models import Project

    name = f"victim{next(_counter)}"
    make_user(ctx.rt, name)
    with session_scope(ctx.rt.sessions) as s:
        projects.add_member(s, Actor(None, "t", "admin"), s.get(Project, ctx.project_id), name, "annotator")
    return {"url": f"/api/v1/projects/{ctx.project_id}/members/{name}/annotator"}


SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/api/v1/health"): lambda c: {"url": "/api/v1/health"},
    ("POST", "/api/v1/auth/login"): lambda c: {
        "url": "/api/v1/auth/login",
        "json": {"username": "spare", "password": PASSWORD},
    },
    ("POST", "/api/v1/auth/logout"): lambda c: {"url": "/api/v1/auth/logout"},
    ("GET", "/api/v1/auth/me"): lambda c: {"url": "/api/v1/auth/me"},
    ("GET", "/api/v1/users"): lambda c: {"url": "/api/v1/users"},
    ("POST", "/api/v1/users"): lambda c: {
        "url": "/api/v1/users",
        "json": {"username": f"new{next(_counter)}", "password": PASSWORD},
    },
    ("GET", "/api/v1/projects"): lambda c: {"url": "/api/v1/projects"},
    ("POST", "/api/v1/projects"): lambda c: {
        "url": "/api/v1/projects",
        "json": {"name": f"P{next(_counter)}"},
    },
    ("GET", "/api/v1/projects/{project_id}"): lambda c: {"url": f"/api/v1/projects/{c.project_id}"},
    ("PATCH", "/api/v1/projects/{project_id}"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}",
        "json": {"description": f"d{next(_counter)}"},
    },
    ("GET", "/api/v1/projects/{project_id}/members"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/members"
    },
    ("POST", "/api/v1/projects/{project_id}/members"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/members",
        "json": {"username": "spare", "role": "annotator"},
    },
    ("DELETE", "/api/v1/projects/{project_id}/members/{username}/{role}"): _fresh_member,
    ("GET", "/api/v1/jobs/{job_id}"): lambda c: {"url": f"/api/v1/jobs/{c.job_id}"},
    ("GET", "/api/v1/jobs"): lambda c: {"url": "/api/v1/jobs"},
    ("POST", "/api/v1/system/selftest"): lambda c: {"url": "/api/v1/system/selftest", "json": {"steps": 1}},
    ("GET", "/api/v1/audit/events"): lambda c: {"url": "/api/v1/audit/events"},
    ("GET", "/api/v1/audit/verify"): lambda c: {"url": "/api/v1/audit/verify"},
}


def _domain_samples() -> dict[tuple[str, str], Sample]:
    """Domains keep their samples beside their tests: ``tests/<domain>/access_samples.py``
    defines ``SAMPLES`` with the same shape."""
    import importlib
    from pathlib import Path

    merged: dict[tuple[str, str], Sample] = {}
    root = Path(__file__).resolve().parents[1]
    for f in sorted(root.glob("*/access_samples.py")):
        mod = importlib.import_module(f"tests.{f.parent.name}.access_samples")
        clash = set(mod.SAMPLES) & (set(SAMPLES) | set(merged))
        assert not clash, f"{f} repeats samples: {clash}"
        merged.update(mod.SAMPLES)
    return merged


SAMPLES.update(_domain_samples())

PRINCIPALS = ["anonymous", "admin", "outsider", *[r.value for r in ProjectRole]]


def rules_of(route: APIRoute) -> set[Rule]:
    found: set[Rule] = set()
    stack = [route.dependant]
    while stack:
        d = stack.pop()
        rule = getattr(d.call, "medlabel_rule", None)
        if rule is not None:
            found.add(rule)
        stack.extend(d.dependencies)
    return found


def rule_of(route: APIRoute) -> Rule | None:
    rules = rules_of(route)
    strong = {r for r in rules if r.kind in ("global", "project", "object")}
    assert len(strong) <= 1, f"{route.path} declares several access rules: {strong}"
    if strong:
        return strong.pop()
    for kind in ("authenticated", "public"):
        for r in rules:
            if r.kind == kind:
                return r
    return None


def expected(rule: Rule, principal: str) -> str:
    """'allow', or the status a denial must have."""
    if rule.kind == "public":
        return "allow"
    if principal == "anonymous":
        return "401"
    if principal == "admin" or rule.kind == "authenticated":
        return "allow"
    if rule.kind == "global":
        return "403"
    if principal == "outsider":
        return "404"
    perms = ROLE_PERMISSIONS[ProjectRole(principal)]
    if rule.kind == "project":
        return "allow" if rule.permission in perms else "403"
    if rule.kind == "object":  # a job created by the admin in the project
        return "allow" if rule.permission in perms else "404"
    raise AssertionError(rule)


def api_routes(app: Any) -> list[tuple[str, str, APIRoute]]:
    routes = list(iter_api_routes())
    # cross-check with the published OpenAPI document: nothing under /api/v1 escapes the table
    published = {
        (method.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        if path.startswith("/api/v1")
        for method in ops
    }
    assert published == {(m, p) for m, p, _ in routes}, published ^ {(m, p) for m, p, _ in routes}
    return routes


def test_every_route_has_an_access_rule_and_a_sample(app):
    missing_rule = [f"{m} {p}" for m, p, r in api_routes(app) if rule_of(r) is None]
    assert not missing_rule, f"routes without an access rule: {missing_rule}"
    missing_sample = [f"{m} {p}" for m, p, _ in api_routes(app) if (m, p) not in SAMPLES]
    assert not missing_sample, f"add these routes to SAMPLES in {__file__}: {missing_sample}"
    stale = set(SAMPLES) - {(m, p) for m, p, _ in api_routes(app)}
    assert not stale, f"SAMPLES names routes that no longer exist: {stale}"


def test_every_role_against_every_route(client, runtime, app):
    ids = {"admin": make_user(runtime, "root", "admin"), "outsider": make_user(runtime, "outsider")}
    make_user(runtime, "spare")
    for role in ProjectRole:
        ids[role.value] = make_user(runtime, f"u_{role.value}")
    project_id = make_project(runtime, "Target", {f"u_{r.value}": [r.value] for r in ProjectRole})
    make_project(runtime, "Elsewhere", {"outsider": ["manager"]})
    with session_scope(runtime.sessions) as s:
        from medlabel.accounts.service import Actor

        job_id = jobs.create_job(
            s, Actor(ids["admin"], "root", "admin"), "system.selftest", {}, project_id=project_id
        ).id
    ctx = Ctx(runtime, project_id, job_id, ids, {})
    failures = []
    checked = 0
    for method, path, route in api_routes(app):
        rule = rule_of(route)
        assert rule is not None
        for principal in PRINCIPALS:
            headers = {} if principal == "anonymous" else session_headers(runtime, ids[principal])
            kwargs = SAMPLES[(method, path)](ctx)
            client.cookies.clear()
            resp = client.request(method, headers=headers, **kwargs)
            want = expected(rule, principal)
            got = resp.status_code
            ok = (got not in (401, 403, 404) and got < 500) if want == "allow" else str(got) == want
            checked += 1
            if not ok:
                failures.append(
                    f"{principal:10s} {method:6s} {path}: want {want}, got {got} {resp.text[:120]}"
                )
    assert not failures, "\n".join(failures)
    assert checked == len(api_routes(app)) * len(PRINCIPALS)


def test_denials_do_not_leak_or_write(client, runtime):
    """A member without the permission gets 403 and nothing changes; an outsider gets 404."""
    make_user(runtime, "ann")
    make_user(runtime, "stranger")
    pid = make_project(runtime, "Secret study", {"ann": ["annotator"]})
    make_project(runtime, "Other", {"stranger": ["manager"]})
    ann = session_headers(runtime, 1)
    r = client.patch(f"/api/v1/projects/{pid}", json={"name": "Renamed"}, headers=ann)
    assert (
        r.status_code == 403 and r.json()["error"]["detail"]["permission"] == Permission.PROJECT_UPDATE.value
    )
    stranger = session_headers(runtime, 2)
    for url in (f"/api/v1/projects/{pid}", f"/api/v1/projects/{pid}/members", "/api/v1/projects/99999"):
        r = client.get(url, headers=stranger)
        assert r.status_code == 404, url
        assert "Secret" not in r.text
    # the 404 for a real project reads exactly like the 404 for a project that does not exist
    a = client.get(f"/api/v1/projects/{pid}", headers=stranger).json()["error"]["message"]
    b = client.get("/api/v1/projects/99999", headers=stranger).json()["error"]["message"]
    assert a.replace(str(pid), "N") == b.replace("99999", "N")
    names = [p["name"] for p in client.get("/api/v1/projects", headers=stranger).json()]
    assert names == ["Other"]
    assert client.get(f"/api/v1/projects/{pid}", headers=ann).json()["name"] == "Secret study"
