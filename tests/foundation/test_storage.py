"""Configuration, migrations from empty on both databases, and the blob store."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pytest
from sqlalchemy import inspect

from medlabel.config import Settings, ensure_home, load_settings
from medlabel.errors import ConfigurationError, InvalidInput, NotFound
from medlabel.storage.blobs import LocalBlobStore
from medlabel.storage.db import make_engine
from medlabel.storage.migrate import current_revisions, head_revisions, upgrade


def test_migrations_from_empty(db_url):
    engine = make_engine(db_url)
    assert current_revisions(engine) == frozenset()
    upgrade(engine)
    assert current_revisions(engine) == head_revisions()
    tables = set(inspect(engine).get_table_names())
    assert {"users", "sessions", "projects", "memberships", "audit_events", "audit_head", "jobs"} <= tables
    upgrade(engine)  # idempotent: running on every start is safe
    if db_url.startswith("sqlite"):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_models_match_migrations(db_url):
    """Autogenerate against a migrated database finds nothing to do."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from medlabel.storage import all_models  # noqa: F401
    from medlabel.storage.db import Base

    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], diff


def test_secret_key_is_generated_once_with_0600(tmp_path):
    s = Settings(home=tmp_path / "h", database_url="sqlite://")
    a = ensure_home(s)
    key_file = tmp_path / "h" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(a.secret_key) == 32
    assert ensure_home(s).secret_key == a.secret_key
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigurationError, match="0600"):
        ensure_home(s)


def test_settings_from_environment(tmp_path):
    s = load_settings(
        {
            "MEDLABEL_HOME": str(tmp_path),
            "MEDLABEL_IDLE_TIMEOUT_MIN": "5",
            "MEDLABEL_DATABASE_URL": "postgresql://u@h/db",
        }
    )
    assert s.home == tmp_path and s.idle_timeout.total_seconds() == 300
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert load_settings({"MEDLABEL_HOME": str(tmp_path)}).database_url.startswith("sqlite:///")
    with pytest.raises(
        ConfigurationError, match="MEDLABEL_LOCKOUT_FAILURES must be a whole number, found 'many'"
    ):
        load_settings({"MEDLABEL_LOCKOUT_FAILURES": "many"})


def test_blob_store_is_content_addressed_and_atomic(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    data = b"\x00DICM" * 1000
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data and store.exists(digest)
    assert store.put(data) == digest
    assert store.put_stream(io.BytesIO(data)) == digest
    assert list(store.digests()) == [digest]
    assert not any((tmp_path / "blobs" / "tmp").iterdir())  # no temp files left behind
    with pytest.raises(InvalidInput, match="64 lowercase hex"):
        store.get("../../etc/passwd")
    with pytest.raises(NotFound):
        store.get("0" * 64)

    class Exploding(io.BytesIO):
        def read(self, n=-1):
            raise OSError("network dropped")

    with pytest.raises(OSError):
        store.put_stream(Exploding(b"x"))
    assert not any((tmp_path / "blobs" / "tmp").iterdir())
    store.delete(digest)
    assert not store.exists(digest)
