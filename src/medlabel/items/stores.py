"""The de-identification stores over the database, and the per-project de-identification secret.

Both stores insert on conflict (do nothing) and then read the row back, each call in its own short
transaction, so two imports of the same patient running at once agree on one pseudonym and one
date offset on SQLite and PostgreSQL alike. Pseudonyms are derived (HMAC of the project secret),
so concurrent writers even propose the same value.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from medlabel import clock
from medlabel.deid import derive_offset_days
from medlabel.errors import ConfigurationError
from medlabel.items.models import DateOffsetEntry, PseudonymEntry

__all__ = ["project_secret", "DbPseudonymStore", "DbDateOffsetStore", "PSEUDONYM_PREFIX"]

PSEUDONYM_PREFIX = "ANON-"


def project_secret(secret_key: bytes, project_id: int) -> bytes:
    """HMAC-SHA256(server secret, ``deid:<project id>``): derived on demand, never stored."""
    if not secret_key:
        raise ConfigurationError("the server secret key is not loaded; cannot derive a project secret")
    return hmac.new(secret_key, b"deid:" + str(project_id).encode(), hashlib.sha256).digest()


def _insert(session: Session, table: Any, values: dict[str, Any], conflict: list[str] | None) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = (
            postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict or None)
        )
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict or None)
    else:  # pragma: no cover - other backends are not supported
        raise ConfigurationError(f"database dialect {dialect!r} is not supported")
    session.execute(stmt)


class DbPseudonymStore:
    """``PseudonymStore`` over the ``pseudonyms`` table of one project."""

    def __init__(self, sessions: sessionmaker[Session], project_id: int, secret: bytes) -> None:
        self._sessions = sessions
        self._project_id = project_id
        self._secret = secret
        self._cache: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _derive(self, original_patient_id: str, issuer: str, attempt: int) -> str:
        msg = f"pseudonym\x00{original_patient_id}\x00{issuer}\x00{attempt}".encode()
        return PSEUDONYM_PREFIX + hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:16].upper()

    def get_or_create(self, original_patient_id: str, issuer: str) -> str:
        key = (original_patient_id[:200], issuer[:200])
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        for attempt in range(4):
            with self._sessions() as s, s.begin():
                _insert(
                    s,
                    PseudonymEntry.__table__,
                    {
                        "project_id": self._project_id,
                        "original_patient_id": key[0],
                        "issuer": key[1],
                        "pseudonym": self._derive(key[0], key[1], attempt),
                        "created_at": clock.now(),
                    },
                    None,  # any unique violation (either direction) is a conflict; read back below
                )
                found = s.scalar(
                    select(PseudonymEntry.pseudonym).where(
                        PseudonymEntry.project_id == self._project_id,
                        PseudonymEntry.original_patient_id == key[0],
                        PseudonymEntry.issuer == key[1],
                    )
                )
            if found is not None:
                with self._lock:
                    self._cache[key] = found
                return found
        raise ConfigurationError(  # pragma: no cover - four HMAC collisions in a row
            f"could not allocate a unique pseudonym for a patient in project {self._project_id}"
        )


class DbDateOffsetStore:
    """``DateOffsetStore`` over the ``date_offsets`` table of one project."""

    def __init__(self, sessions: sessionmaker[Session], project_id: int, secret: bytes) -> None:
        self._sessions = sessions
        self._project_id = project_id
        self._secret = secret
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()

    def get_or_create(self, pseudonym: str) -> int:
        with self._lock:
            if pseudonym in self._cache:
                return self._cache[pseudonym]
        with self._sessions() as s, s.begin():
            _insert(
                s,
                DateOffsetEntry.__table__,
                {
                    "project_id": self._project_id,
                    "pseudonym": pseudonym,
                    "days": derive_offset_days(self._secret, pseudonym),
                    "created_at": clock.now(),
                },
                ["project_id", "pseudonym"],
            )
            days = s.scalar(
                select(DateOffsetEntry.days).where(
                    DateOffsetEntry.project_id == self._project_id, DateOffsetEntry.pseudonym == pseudonym
                )
            )
        assert days is not None
        with self._lock:
            self._cache[pseudonym] = int(days)
        return int(days)
