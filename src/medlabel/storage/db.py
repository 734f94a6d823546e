"""Engines and sessions for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

SQLITE_LOCK_TIMEOUT = 30.0
_LOCK_KEY = "medlabel_sqlite_write_turn"
READONLY = "medlabel_readonly"
"""Execution option and session-info flag of read-only sessions (:func:`make_read_sessionmaker`)."""

__all__ = [
    "Base",
    "UTCDateTime",
    "make_engine",
    "make_sessionmaker",
    "make_read_sessionmaker",
    "session_scope",
    "is_sqlite",
]


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; medlabel stores UTC-aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine. SQLite gets WAL, foreign keys, a busy timeout and sane transactions."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=10,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling is off; SQLAlchemy emits BEGIN (below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # One writer at a time in this process, queued on a Python lock: waiting threads wake the
        # moment the lock is free, instead of sleeping in SQLite's busy handler (which backs off up
        # to 100 ms a try and made tail latency under load long). Other processes (a separate
        # worker) still meet on SQLite's own lock and busy timeout.
        writer = threading.Lock()

        def _release(conn: Any) -> None:
            if conn.info.pop(_LOCK_KEY, False):
                writer.release()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            if conn.get_execution_options().get(READONLY):
                # A read-only session (it cannot flush): a deferred transaction, a WAL snapshot
                # at its first read, no write turn -- readers never queue behind writers.
                conn.exec_driver_sql("BEGIN")
                return
            # IMMEDIATE takes the write lock up front: a transaction that reads and then writes
            # can never fail half-way with SQLITE_BUSY_SNAPSHOT under WAL. PostgreSQL gets real
            # row-level concurrency.
            if not writer.acquire(timeout=SQLITE_LOCK_TIMEOUT):
                raise OperationalError(
                    "BEGIN IMMEDIATE",
                    None,
                    TimeoutError(f"database is locked: no write turn within {SQLITE_LOCK_TIMEOUT} s"),
                )
            conn.info[_LOCK_KEY] = True
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release(conn)
                raise

        event.listen(engine, "commit", _release)
        event.listen(engine, "rollback", _release)

        @event.listens_for(engine, "checkin")
        def _checkin(_dbapi_conn: Any, record: Any) -> None:  # safety net: never leak the turn
            if record.info.pop(_LOCK_KEY, False):
                writer.release()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for work that only reads (access checks of pixel requests). On SQLite they begin
    a plain deferred transaction instead of ``BEGIN IMMEDIATE`` and never take the in-process
    write turn; a flush with pending changes raises. Same pool as ``engine``."""
    return sessionmaker(
        engine.execution_options(**{READONLY: True}), expire_on_commit=False, info={READONLY: True}
    )


@event.listens_for(Session, "before_flush")
def _refuse_writes(session: Session, _ctx: Any, _instances: Any) -> None:
    if session.info.get(READONLY) and (session.new or session.dirty or session.deleted):
        raise RuntimeError("a read-only session (make_read_sessionmaker) cannot write")


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
