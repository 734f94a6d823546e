"""Upload sessions: files PUT one by one, each prepared at once, committed as one import.

A session belongs to its creator and project (global administrators may act on it too;
everyone else gets 404). Every file is sniffed, read, pixel-checked and de-identified with the
project's settings and pseudonym/date stores **in the request** (``ingest.prepare_dicom_file``,
the preparation step of every import), and only the de-identified file is kept, fsync'd, in the
session's staging folder ``$MEDLABEL_HOME/upload-sessions/<id>/``:

* ``data/``: the prepared (de-identified) files;
* ``files/<hash of the name>.entry``: one entry per uploaded name (its result, and what storing
  needs), replaced atomically when the same name is PUT again;
* ``incoming/``: originals while they are received and prepared (deleted right after).

The commit queues an ``items.import_session`` job that groups and stores the prepared files
exactly as a multipart import does after its preparation (``ingest.store_prepared``), then
deletes the staging folder. Sessions expire ``MEDLABEL_UPLOAD_SESSION_TTL_HOURS`` (default 24)
after their creation or last file; expired ones are removed by the job reaper and on access.

Entries are pickles written by this module into the server's own data folder (the same trust
as the import worker processes' results); nothing a client sends is ever unpickled.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pickle
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.errors import Conflict, InvalidInput, MedlabelError, NotFound, UnsupportedMedia
from medlabel.imaging import FileKind, sniff
from medlabel.items.ingest import (
    DICOMDIR_NOTE,
    PreparedDicom,
    deid_for,
    not_importable,
    prepare_dicom_file,
    store_prepared,
)
from medlabel.items.models import Instance, UploadSession
from medlabel.items.settings import DeidSettings
from medlabel.items.unpack import FileReport, ImportReport, IngestLimits, display_name, safe_name
from medlabel.jobs import service as jobs
from medlabel.security.rbac import GlobalRole
from medlabel.storage.blobs import BlobStore
from medlabel.storage.models import Job, Project

__all__ = [
    "COMMIT_JOB",
    "TTL_ENV",
    "SessionRef",
    "session_ref",
    "FileResult",
    "ttl",
    "staging_root",
    "create_session",
    "get_session",
    "list_files",
    "receive_path",
    "check_name",
    "put_file",
    "abandon",
    "commit",
    "run_commit",
    "reap_expired",
]

log = logging.getLogger(__name__)

COMMIT_JOB = "items.import_session"
TTL_ENV = "MEDLABEL_UPLOAD_SESSION_TTL_HOURS"
#: Statuses whose staging folder is still needed.
_LIVE = ("open", "committed", "failed")


def ttl() -> timedelta:
    """How long a session lives after its creation or its last file (``MEDLABEL_UPLOAD_SESSION_TTL_HOURS``)."""
    raw = os.environ.get(TTL_ENV, "").strip()
    try:
        hours = float(raw) if raw else 24.0
    except ValueError:
        hours = 24.0
    return timedelta(hours=max(hours, 0.0))


def staging_root(home: Path) -> Path:
    return Path(home) / "upload-sessions"


def _folder(home: Path, upload_id: str) -> Path:
    return staging_root(home) / upload_id


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A session as the routes see it (plain values: no ORM object outlives the check)."""

    id: str
    project_id: int
    created_by: int | None
    status: str
    expires_at: Any
    job_id: str | None


def session_ref(row: UploadSession) -> SessionRef:
    return SessionRef(row.id, row.project_id, row.created_by, row.status, row.expires_at, row.job_id)


@dataclass(slots=True)
class FileResult:
    """The outcome of one PUT: ``prepared``, ``duplicate``, ``error`` or ``skipped``."""

    name: str
    status: str
    message: str = ""
    code: str = ""
    warnings: list[str] = field(default_factory=list)
    sop_instance_uid: str = ""  # de-identified

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        if self.message:
            out["message"] = self.message
        if self.code:
            out["code"] = self.code
        if self.warnings:
            out["warnings"] = self.warnings[:20]
        if self.sop_instance_uid:
            out["sop_instance_uid"] = self.sop_instance_uid
        return out


@dataclass(slots=True)
class _Entry:
    """What ``files/<key>.entry`` holds."""

    uploaded_name: str
    result: FileResult
    prepared: PreparedDicom | None
    put_at: Any
    boot: str = ""
    """The kernel's boot id when the file was written (not fsync'd then; see ``run_commit``)."""


def _boot_id() -> str:
    """This boot of the machine (Linux), or "" when unknown. While it is the same, what a
    process wrote is in the page cache even if that process died: only a crash of the machine
    loses unsynced data."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_BOOT = _boot_id()


# ---------------------------------------------------------------- sessions


def create_session(session: Session, actor: Actor, *, project: Project, home: Path) -> UploadSession:
    """A new open session of ``actor`` in ``project`` (the caller commits). Expired sessions are
    swept first, so a server without a worker still cleans up."""
    reap_expired(session, home)
    now = clock.now()
    row = UploadSession(
        id=uuid.uuid4().hex,
        project_id=project.id,
        created_by=actor.user_id,
        status="open",
        created_at=now,
        expires_at=now + ttl(),
    )
    folder = _folder(home, row.id)
    for sub in ("data", "files", "incoming"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    session.add(row)
    session.flush()
    return row


def get_session(
    session: Session,
    actor: Actor,
    *,
    project_id: int,
    upload_id: str,
    home: Path,
    writer: Session | None = None,
) -> SessionRef:
    """The session if ``actor`` created it (or is an administrator) and it is in ``project_id``;
    404 otherwise, also when it expired (it is removed then, through ``writer`` when given, so
    ``session`` may be read-only, else through ``session``; committed at once)."""
    row = session.get(UploadSession, upload_id) if len(upload_id) <= 32 else None
    if (
        row is None
        or row.project_id != project_id
        or (row.created_by != actor.user_id and actor.role != GlobalRole.ADMIN.value)
    ):
        raise NotFound(f"no upload session {upload_id!r} in project {project_id}")
    if _expired(session, row):
        when = row.expires_at.isoformat()
        w = writer if writer is not None else session
        found = w.get(UploadSession, upload_id)
        if found is not None:
            _remove(w, found, home)
        w.commit()  # kept although the request fails with the 404 below
        raise NotFound(f"upload session {upload_id!r} expired at {when} and was removed")
    return session_ref(row)


def _expired(session: Session, row: UploadSession) -> bool:
    if row.expires_at > clock.now():
        return False
    if row.status == "committed":  # its job may still be running: only once that has ended
        state = session.scalar(select(Job.state).where(Job.id == row.job_id)) if row.job_id else None
        return state in (None, jobs.FAILED, jobs.SUCCEEDED)
    return True


def _remove(session: Session, row: UploadSession, home: Path) -> None:
    session.execute(delete(UploadSession).where(UploadSession.id == row.id))
    shutil.rmtree(_folder(home, row.id), ignore_errors=True)


def reap_expired(session: Session, home: Path) -> int:
    """Remove expired sessions (rows and staging folders); returns how many."""
    rows = session.scalars(select(UploadSession).where(UploadSession.expires_at <= clock.now())).all()
    n = 0
    for row in rows:
        if _expired(session, row):
            _remove(session, row, home)
            n += 1
    return n


def abandon(session: Session, ref: SessionRef, *, home: Path) -> None:
    """Remove the session and its staging folder; refused (409) while its commit job runs."""
    row = session.get(UploadSession, ref.id, with_for_update=True)
    if row is None:
        raise NotFound(f"no upload session {ref.id!r}")
    if row.status == "committed":
        raise Conflict(f"upload session {ref.id!r} is being imported (job {row.job_id}); it cannot be abandoned")
    with _locked(home, ref.id, exclusive=True):
        _remove(session, row, home)


# ---------------------------------------------------------------- files


@contextmanager
def _locked(home: Path, upload_id: str, *, exclusive: bool) -> Iterator[bool]:
    """A file lock on the session's folder, across server processes: PUTs record their entries
    under the shared lock, the commit marks the session under the exclusive one. Yields False
    when the folder is gone (abandoned or expired)."""
    try:
        fd = os.open(_folder(home, upload_id) / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _marked(home: Path, upload_id: str) -> bool:
    """Committed (the marker is written under the exclusive lock before the row says so)."""
    return (_folder(home, upload_id) / _MARKER).exists()


_MARKER = "committed"


def _key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _load(path: Path) -> _Entry | None:
    try:
        with open(path, "rb") as fh:
            entry = pickle.load(fh)  # noqa: S301  (written by _save into the server's own folder)
    except (OSError, EOFError, pickle.UnpicklingError):
        return None
    return entry if isinstance(entry, _Entry) else None


def _entries(home: Path, upload_id: str) -> list[_Entry]:
    folder = _folder(home, upload_id) / "files"
    out = []
    for p in sorted(folder.glob("*.entry")) if folder.is_dir() else []:
        e = _load(p)
        if e is not None:
            if e.prepared is not None:  # the folder may have been reached by another path
                e.prepared.dicom.path = _folder(home, upload_id) / "data" / e.prepared.path.name
            out.append(e)
    return sorted(out, key=lambda e: (e.result.name, e.uploaded_name))


def list_files(ref: SessionRef, *, home: Path) -> list[FileResult]:
    return [e.result for e in _entries(home, ref.id)]


def receive_path(ref: SessionRef, *, home: Path) -> Path:
    """A fresh path in the session's ``incoming/`` folder for an original being received."""
    if ref.status != "open":
        raise Conflict(f"upload session {ref.id!r} is {ref.status}; it takes no more files")
    folder = _folder(home, ref.id) / "incoming"
    if not folder.is_dir():
        raise NotFound(f"upload session {ref.id!r} is gone")
    return folder / uuid.uuid4().hex


def _prepare(
    original: Path | bytes,
    name: str,
    *,
    sessions: sessionmaker[Session],
    secret_key: bytes,
    project_id: int,
    settings: DeidSettings,
    work: Path,
    limits: IngestLimits,
) -> tuple[FileResult, PreparedDicom | None]:
    try:
        kind = sniff(original)
        if kind is FileKind.DICOMDIR:
            return FileResult(name, "skipped", DICOMDIR_NOTE), None
        if kind is not FileKind.DICOM:
            if kind in (FileKind.UNKNOWN, FileKind.GZIP):
                raise not_importable(kind)  # the same line a multipart import gives
            raise UnsupportedMedia(
                f"upload sessions take DICOM files; a {kind.value} file is imported through "
                "POST /projects/{project_id}/imports"
            )
        config, ctx = _deid_context(settings, secret_key, sessions, project_id)
        p = prepare_dicom_file(original, name, config=config, ctx=ctx, work=work, limits=limits, sync=False)
    except MedlabelError as exc:
        return FileResult(name, "error", exc.message, exc.code), None
    except Exception as exc:  # noqa: BLE001  (one unreadable file is a result, as in an import)
        log.warning("preparing %s failed unexpectedly", name, exc_info=True)
        return FileResult(name, "error", f"unreadable: {type(exc).__name__}: {exc}", "unreadable"), None
    return (
        FileResult(name, "prepared", "; ".join(p.dicom.reasons), "", p.dicom.warnings, p.sop_instance_uid),
        p,
    )


#: De-identification contexts by (project, settings): the DB stores cache what they have looked
#: up, so a session's files cost one pseudonym query per patient and process, not one per file.
_CONTEXTS: dict[tuple[int, bool, tuple[str, ...], bytes], Any] = {}


def _deid_context(settings: DeidSettings, secret_key: bytes, sessions: sessionmaker[Session], project_id: int) -> Any:
    key = (project_id, bool(settings.enabled), tuple(sorted(settings.options)), hashlib.sha256(secret_key).digest())
    found = _CONTEXTS.get(key)
    if found is None or found[0] is not sessions:
        if len(_CONTEXTS) > 64:
            _CONTEXTS.clear()
        found = (sessions, deid_for(settings, secret_key, sessions, project_id))
        _CONTEXTS[key] = found
    return found[1]


def check_name(name: str) -> str:
    """The uploaded name as reports show it (as a multipart import shows it); 422 when empty or
    longer than 255 characters."""
    if not name or len(name) > 255:
        raise InvalidInput(f"a file name of 1 to 255 characters is required, got {len(name)}")
    return display_name(safe_name(name, 0))


def put_file(
    ref: SessionRef,
    name: str,
    original: Path | bytes,
    *,
    settings: DeidSettings,
    sessions: sessionmaker[Session],
    secret_key: bytes,
    home: Path,
    limits: IngestLimits | None = None,
    read_sessions: sessionmaker[Session] | None = None,
) -> FileResult:
    """Prepare the file received at ``original`` (deleted here, whatever happens; or its bytes,
    received in memory) with the
    project's de-identification ``settings`` and record its result under ``name``, replacing an
    earlier file of that name. 409 once the session is committed; 404 when it is gone.

    No database write per file: the entry is recorded under the session's shared file lock
    after checking the commit marker, which the commit writes under the exclusive lock, so a
    commit either sees this file or this call answers 409 (``_locked``). ``read_sessions``
    (read-only sessions; on SQLite no write turn) serve the duplicate check; ``sessions`` the
    pseudonym stores and, once per half TTL, the extension of the session's expiry."""
    shown = check_name(name)
    folder = _folder(home, ref.id)
    try:
        result, prepared = _prepare(
            original,
            shown,
            sessions=sessions,
            secret_key=secret_key,
            project_id=ref.project_id,
            settings=settings,
            work=folder / "data",
            limits=limits or IngestLimits.from_env(),
        )
    except FileNotFoundError:
        raise NotFound(f"upload session {ref.id!r} is gone") from None
    finally:
        if isinstance(original, Path):
            original.unlink(missing_ok=True)  # the original is never kept
    try:
        if prepared is not None:
            uid = prepared.sop_instance_uid
            with (read_sessions or sessions)() as r:
                known = uid and r.scalar(
                    select(Instance.id).where(
                        Instance.project_id == ref.project_id, Instance.sop_instance_uid == uid
                    )
                )
            if known:
                result = FileResult(shown, "duplicate", "already imported (same SOP Instance UID)")
                prepared.path.unlink(missing_ok=True)
                prepared = None
        now = clock.now()
        with _locked(home, ref.id, exclusive=False) as there:
            if not there:
                raise NotFound(f"upload session {ref.id!r} is gone")
            if _marked(home, ref.id):
                raise Conflict(f"upload session {ref.id!r} is committed; it takes no more files")
            target = folder / "files" / f"{_key(name)}.entry"
            old = _load(target)
            tmp = target.with_suffix(f".{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as fh:
                pickle.dump(_Entry(name, result, prepared, now, _BOOT), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)  # not fsync'd: a machine crash loses (or damages) entries, which read as missing
        if old is not None and old.prepared is not None and (prepared is None or old.prepared.path != prepared.path):
            (folder / "data" / old.prepared.path.name).unlink(missing_ok=True)
    except BaseException:
        if prepared is not None:
            prepared.path.unlink(missing_ok=True)
        raise
    if ref.expires_at - now < ttl() / 2:  # extend the session (a write: rarely, not per file)
        with sessions() as w, w.begin():
            w.execute(
                update(UploadSession)
                .where(UploadSession.id == ref.id, UploadSession.status == "open")
                .values(expires_at=now + ttl())
            )
    return result


# ---------------------------------------------------------------- commit


def commit(session: Session, actor: Actor, ref: SessionRef, *, home: Path) -> Job:
    """Queue the import of what was prepared (``items.import_session``; the caller enqueues).
    409 unless the session is open (or its last commit failed); 422 when no file was PUT.

    Commits ``session`` itself, under the session's exclusive file lock: the commit marker and
    the row must agree before any PUT can record another file."""
    with _locked(home, ref.id, exclusive=True) as there:
        row = session.get(UploadSession, ref.id, with_for_update=True)
        if row is None:
            raise NotFound(f"no upload session {ref.id!r}")
        if row.status not in ("open", "failed"):
            raise Conflict(
                f"upload session {ref.id!r} is {row.status} (job {row.job_id}); it can be committed once",
                detail={"job_id": row.job_id},
            )
        if not there:
            raise NotFound(f"upload session {ref.id!r} is gone")
        if not any((_folder(home, ref.id) / "files").glob("*.entry")):
            raise InvalidInput("nothing to import: no files were uploaded to this session")
        job = jobs.create_job(
            session,
            actor,
            COMMIT_JOB,
            {
                "upload_session": row.id,
                "actor": {"user_id": actor.user_id, "username": actor.username, "role": actor.role, "ip": actor.ip},
            },
            project_id=row.project_id,
            max_attempts=1,
        )
        before = row.status
        row.status = "committed"
        row.job_id = job.id
        session.flush()
        marker = _folder(home, ref.id) / _MARKER
        marker.touch()
        try:
            session.commit()
        except BaseException:
            if before == "open":
                marker.unlink(missing_ok=True)
            raise
    return job


def _intact(e: _Entry) -> bool:
    """The prepared file is what was prepared: surely so on the same boot (the page cache has
    it), else checked against its SHA-256 (it was not fsync'd when it was PUT)."""
    assert e.prepared is not None
    if e.boot and e.boot == _BOOT:
        return True
    h = hashlib.sha256()
    with open(e.prepared.path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == e.prepared.sha256


def _set_status(sessions: sessionmaker[Session], upload_id: str, status: str) -> None:
    with sessions() as s, s.begin():
        s.execute(update(UploadSession).where(UploadSession.id == upload_id).values(status=status))


def run_commit(
    *,
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    home: Path,
    actor: Actor,
    upload_id: str,
    job_id: str | None = None,
    progress: Callable[[float, str], None] = lambda p, m: None,
) -> ImportReport:
    """The commit job: group and store the prepared files; the report is an import's report
    (the files refused when they were PUT keep their lines). On success the staging folder is
    removed; on failure the session is ``failed`` (nothing of a failed item is stored) and may
    be committed again."""
    with sessions() as s:
        row = s.get(UploadSession, upload_id)
        if row is None or row.status != "committed":
            raise InvalidInput(f"upload session {upload_id!r} is not committed (gone, or imported already)")
        project_id = row.project_id
    try:
        entries = _entries(home, upload_id)
        progress(5, f"{len(entries)} files prepared")
        report = ImportReport()
        prepared: list[PreparedDicom] = []
        for e in entries:
            if e.prepared is not None and e.prepared.path.is_file() and _intact(e):
                prepared.append(e.prepared)
            elif e.prepared is not None:
                report.add(
                    FileReport(
                        e.result.name,
                        "error",
                        "the prepared file was lost or damaged by a restart of the machine; send it again",
                        "unreadable",
                    )
                )
            else:
                r = e.result
                report.add(FileReport(r.name, r.status, r.message, r.code, warnings=list(r.warnings)))
        progress(10, f"storing {len(prepared)} DICOM instances")
        store_prepared(
            sessions=sessions,
            blobs=blobs,
            actor=actor,
            project_id=project_id,
            prepared=prepared,
            report=report,
            work=_folder(home, upload_id) / "data",
            job_id=job_id,
        )
    except BaseException:
        _set_status(sessions, upload_id, "failed")
        raise
    _set_status(sessions, upload_id, "done")
    shutil.rmtree(_folder(home, upload_id), ignore_errors=True)
    progress(99, "done")
    return report
