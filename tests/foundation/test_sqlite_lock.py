"""SQLite writers in one process take turns on a lock: no lost updates, no leaked turn, and a
nested transaction on the same thread fails after the timeout instead of hanging."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from medlabel.storage import db
from medlabel.storage.db import make_engine, make_sessionmaker, session_scope


@pytest.fixture
def factory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO counter VALUES (0)"))
    yield make_sessionmaker(engine)
    engine.dispose()


def _count(factory) -> int:
    with session_scope(factory) as s:
        return int(s.execute(text("SELECT n FROM counter")).scalar_one())


def test_threads_never_lose_an_update(factory):
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                with session_scope(factory) as s:
                    n = s.execute(text("SELECT n FROM counter")).scalar_one()  # read, then write
                    s.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and _count(factory) == 200


def test_failed_transactions_release_the_turn(factory):
    for _ in range(3):
        with pytest.raises(ZeroDivisionError), session_scope(factory) as s:
            s.execute(text("UPDATE counter SET n = n + 1"))
            1 / 0  # noqa: B018
    assert _count(factory) == 0  # rolled back, and the turn came back each time


def test_nested_transaction_on_one_thread_times_out(factory, monkeypatch):
    monkeypatch.setattr(db, "SQLITE_LOCK_TIMEOUT", 0.3)
    with session_scope(factory) as outer:
        outer.execute(text("UPDATE counter SET n = 5"))
        with pytest.raises(OperationalError, match="no write turn"), session_scope(factory) as inner:
            inner.execute(text("SELECT 1"))
    assert _count(factory) == 5
