"""Shared fixtures. Database-backed tests run on SQLite and again on PostgreSQL when
``MEDLABEL_TEST_DATABASE_URL`` is set (``.ci/run`` points it at the local server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from medlabel import clock
from medlabel.config import Settings

PG_URL = os.environ.get("MEDLABEL_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("MEDLABEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# In CI every service must be there: a missing one fails instead of skipping.
REQUIRE_SERVICES = os.environ.get("MEDLABEL_REQUIRE_SERVICES") == "1"

_BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _pg_url() -> str:
    from medlabel.config import normalize_database_url

    return normalize_database_url(PG_URL)


def reset_postgres(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of this test run's own on the server MEDLABEL_TEST_DATABASE_URL names, so
    concurrent runs (developers, CI) never drop each other's tables."""
    from sqlalchemy.engine import make_url

    base = make_url(_pg_url())
    name = f"medlabel_test_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=_BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'medlabel.db'}"
    url: str = request.getfixturevalue("pg_database")
    reset_postgres(url)
    return url


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    clock.reset()
    yield
    clock.reset()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=db_url)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[object]:
    from medlabel.runtime import create_runtime

    rt = create_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def app(runtime: object) -> object:
    from medlabel.api.app import create_app

    return create_app(runtime)  # type: ignore[arg-type]


@pytest.fixture
def client(app: object) -> Iterator[object]:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:  # type: ignore[arg-type]
        yield c
