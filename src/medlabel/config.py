"""Configuration from environment variables.

=============================  ==============================================  =========================
variable                       meaning                                         default
=============================  ==============================================  =========================
MEDLABEL_HOME                  data directory (DB, blobs, queue, secret key)   ``./medlabel-data``
MEDLABEL_DATABASE_URL          SQLAlchemy URL                                  SQLite file in the home
MEDLABEL_REDIS_URL             Redis URL for the job queue                     (none: SQLite queue)
MEDLABEL_IDLE_TIMEOUT_MIN      idle minutes before a session ends              30
MEDLABEL_SESSION_MAX_HOURS     absolute session lifetime in hours              12
MEDLABEL_MAX_BODY_BYTES        largest JSON request body                       1 MiB
MEDLABEL_MAX_UPLOAD_BYTES      largest upload (multipart) body                 4 GiB
MEDLABEL_LOCKOUT_FAILURES      consecutive failures before an account locks    5
MEDLABEL_LOCKOUT_MINUTES       how long a locked account stays locked          15
MEDLABEL_LOGIN_RATE            failed logins per address per window            20
MEDLABEL_LOGIN_WINDOW_MIN      the rate-limit window in minutes                5
MEDLABEL_COOKIE_SECURE         send the session cookie only over HTTPS         0
MEDLABEL_QUEUE_NAME            job queue name (Redis key prefix)               medlabel
=============================  ==============================================  =========================

The secret key is never a hard-coded default: ``ensure_home`` generates it once into
``$MEDLABEL_HOME/secret.key`` with 0600 permissions and every later start reads it back.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from medlabel.errors import ConfigurationError

__all__ = ["Settings", "load_settings", "ensure_home", "normalize_database_url"]

SECRET_FILE = "secret.key"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    redis_url: str | None = None
    idle_timeout: timedelta = timedelta(minutes=30)
    absolute_timeout: timedelta = timedelta(hours=12)
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 4 << 30
    lockout_failures: int = 5
    lockout_duration: timedelta = timedelta(minutes=15)
    login_rate: int = 20
    login_window: timedelta = timedelta(minutes=5)
    cookie_secure: bool = False
    queue_name: str = "medlabel"
    secret_key: bytes = b""

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def queue_path(self) -> Path:
        return self.home / "queue.db"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, found {raw!r}") from None


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs; medlabel talks to PostgreSQL through psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (without touching the disk)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("MEDLABEL_HOME") or "./medlabel-data").expanduser().resolve()
    db_url = normalize_database_url(env.get("MEDLABEL_DATABASE_URL") or f"sqlite:///{home / 'medlabel.db'}")
    return Settings(
        home=home,
        database_url=db_url,
        redis_url=env.get("MEDLABEL_REDIS_URL") or None,
        idle_timeout=timedelta(minutes=_int(env, "MEDLABEL_IDLE_TIMEOUT_MIN", 30)),
        absolute_timeout=timedelta(hours=_int(env, "MEDLABEL_SESSION_MAX_HOURS", 12)),
        max_body_bytes=_int(env, "MEDLABEL_MAX_BODY_BYTES", 1 << 20),
        max_upload_bytes=_int(env, "MEDLABEL_MAX_UPLOAD_BYTES", 4 << 30),
        lockout_failures=_int(env, "MEDLABEL_LOCKOUT_FAILURES", 5),
        lockout_duration=timedelta(minutes=_int(env, "MEDLABEL_LOCKOUT_MINUTES", 15)),
        login_rate=_int(env, "MEDLABEL_LOGIN_RATE", 20),
        login_window=timedelta(minutes=_int(env, "MEDLABEL_LOGIN_WINDOW_MIN", 5)),
        cookie_secure=env.get("MEDLABEL_COOKIE_SECURE", "0") in ("1", "true", "yes"),
        queue_name=env.get("MEDLABEL_QUEUE_NAME") or "medlabel",
    )


def ensure_home(settings: Settings) -> Settings:
    """Create the data directory and the secret key (0600) if missing; return settings with the key."""
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.blob_dir.mkdir(parents=True, exist_ok=True)
    key_path = settings.home / SECRET_FILE
    if not key_path.exists():
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigurationError(
            f"{key_path} must be readable by its owner only (0600), found {oct(mode)}; run chmod 600 on it"
        )
    key = bytes.fromhex(key_path.read_text().strip())
    return replace(settings, secret_key=key)
