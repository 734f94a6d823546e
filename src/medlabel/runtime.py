"""The runtime: settings, database engine, sessions, blob store and job queue, built once.

Entry points (API, CLI, worker) create one ``Runtime`` and pass it inward; services receive
sessions and stores, never the runtime's globals.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from medlabel.config import Settings, ensure_home
from medlabel.items import jobs as items_jobs  # noqa: F401  (registers items.import)
from medlabel.jobs import builtin  # noqa: F401  (registers the built-in job kinds)
from medlabel.jobs.registry import load_plugins
from medlabel.quality import jobs as quality_jobs  # noqa: F401
from medlabel.storage.blobs import BlobStore, LocalBlobStore
from medlabel.storage.db import make_engine, make_sessionmaker
from medlabel.storage.migrate import upgrade

__all__ = ["Runtime", "create_runtime"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    huey: Huey
    _consumer: Any = field(default=None, repr=False)
    _reaper: threading.Thread | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    # set in create_runtime: puts the job id on the Huey queue (optionally after a delay)
    _run_job: Any = field(default=None, repr=False)

    def enqueue(self, job_id: str, *, delay: float = 0) -> None:
        self._run_job(job_id, delay=delay)

    def start_worker(self, workers: int = 2, stale_after: timedelta = timedelta(seconds=60)) -> None:
        """Run a Huey consumer (threads) and the stale-job reaper inside this process."""
        from medlabel.items import upload_sessions
        from medlabel.jobs.service import reap_stale_jobs
        from medlabel.storage.db import session_scope

        if self._consumer is not None:
            return
        self._consumer = self.huey.create_consumer(
            workers=workers,
            worker_type="thread",
            periodic=False,
            initial_delay=0.05,
            max_delay=0.5,
            backoff=1.15,
        )
        self._consumer.start()

        def reap_loop() -> None:
            interval = max(0.5, min(30.0, stale_after.total_seconds() / 3))
            while True:
                try:
                    reap_stale_jobs(self, stale_after)
                except Exception:  # noqa: BLE001
                    log.exception("reaping stale jobs failed")
                try:
                    with session_scope(self.sessions) as s:  # expired upload sessions + staging
                        upload_sessions.reap_expired(s, self.settings.home)
                except Exception:  # noqa: BLE001
                    log.exception("reaping expired upload sessions failed")
                if self._stop.wait(interval):
                    return

        self._reaper = threading.Thread(target=reap_loop, name="medlabel-reaper", daemon=True)
        self._reaper.start()

    def stop_worker(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None
        if self._reaper is not None:
            self._reaper.join(timeout=5)
            self._reaper = None
        self._stop = threading.Event()

    def close(self) -> None:
        self.stop_worker()
        self.engine.dispose()


def _make_huey(settings: Settings) -> Huey:
    if settings.redis_url:
        return RedisHuey(settings.queue_name, url=settings.redis_url, results=False)
    return SqliteHuey(settings.queue_name, filename=str(settings.queue_path), results=False)


def create_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Make the data directory (secret key included), migrate the database, build the queue."""
    settings = ensure_home(settings)
    load_plugins(os.environ.get("MEDLABEL_PLUGINS"))
    engine = make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    huey = _make_huey(settings)
    rt = Runtime(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        blobs=LocalBlobStore(settings.blob_dir),
        huey=huey,
    )

    @huey.task(name="medlabel.run_job")
    def run_job(job_id: str) -> None:
        from medlabel.jobs.service import execute_job

        execute_job(rt, job_id)

    def enqueue(job_id: str, delay: float = 0) -> None:
        if delay:
            run_job.schedule(args=(job_id,), delay=delay)
        else:
            run_job(job_id)

    rt._run_job = enqueue  # noqa: SLF001
    return rt
