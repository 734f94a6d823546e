"""``api.deps.warm_up`` with the app: the routes' dependency models are built before the first
request (FastAPI builds them lazily, on the first match: ≈ 100 ms of a server process's first
request), by requests that touch no data."""

from __future__ import annotations

import fastapi.routing
import pytest
from sqlalchemy import func, select

from medlabel.api.deps import warm_up
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []
    real = fastapi.routing.get_dependant

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        built.append(kwargs.get("path", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "get_dependant", spy)
    return built


def test_first_requests_build_nothing_after_the_warm_up(runtime, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from medlabel.api.app import create_app

    built = _counting(monkeypatch)
    app = create_app(runtime)
    with session_scope(runtime.sessions) as s:
        events = s.scalar(select(func.count()).select_from(AuditEvent))
    warm_up(runtime, app)
    assert len(built) > 20  # every route's model, on the warm-up's way to its 404
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == events  # nothing recorded
    built.clear()
    with TestClient(app) as c:
        assert c.get("/api/v1/health").status_code == 200
        assert c.post("/api/v1/projects/1/uploads").status_code == 401
        assert c.get("/api/v1/projects").status_code == 401
    assert built == []


def test_without_the_warm_up_the_first_request_builds_them(runtime, monkeypatch) -> None:
    """The other side of the test above: what the warm-up saves the first request."""
    from fastapi.testclient import TestClient

    from medlabel.api.app import create_app

    built = _counting(monkeypatch)
    app = create_app(runtime)
    with TestClient(app) as c:
        assert c.post("/api/v1/projects/1/uploads").status_code == 401
    assert built
