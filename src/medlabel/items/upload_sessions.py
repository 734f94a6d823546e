"""Upload sessions: files PUT one by one (or POSTed in batches), each prepared at once, committed
as one import.

A session belongs to its creator and project (global administrators may act on it too;
everyone else gets 404). Every file is sniffed, read, pixel-checked and de-identified with the
project's settings and pseudonym/date stores **in the request** (``ingest.prepare_dicom_file``,
the preparation step of every import), and only the de-identified file is kept, fsync'd, in the
session's staging folder ``$MEDLABEL_HOME/upload-sessions/<id>/``:

* ``data/``: the prepared (de-identified) files;
* ``files/<process>.journal``: the entries (each file's result, and what storing needs), appended
  by each server process to its own journal; the latest entry of a name wins, so the same name
  PUT again replaces the earlier file;
* ``incoming/``: originals while they are received and prepared (deleted right after).

A file is prepared by :func:`stage_file` and its entry recorded by :func:`record_files` (a PUT:
one of each, :func:`put_file`; a batch: its files staged on threads while the body streams in,
recorded several per journal write, their fsyncs started at once so the commit skips them).

The commit queues an ``items.import_session`` job that groups and stores the prepared files
exactly as a multipart import does after its preparation (``ingest.store_prepared``), then
deletes the staging folder. Sessions expire ``MEDLABEL_UPLOAD_SESSION_TTL_HOURS`` (default 24)
after their creation or last file; expired ones are removed by the job reaper and on access.

Entries are pickles written by this module into the server's own data folder (the same trust
as the import worker processes' results); nothing a client sends is ever unpickled.
"""

from __future__ import annotations

import copyreg
import errno
import fcntl
import hashlib
import io
import logging
import os
import pickle
import shutil
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path, PosixPath, PurePath, PurePosixPath
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.errors import Conflict, InvalidInput, MedlabelError, NotFound, UnsupportedMedia
from medlabel.imaging import FileKind, sniff
from medlabel.items.ingest import (
    DICOMDIR_NOTE,
    ByteBudget,
    PreparedDicom,
    deid_for,
    not_importable,
    prepare_dicom_file,
    store_prepared,
    write_prepared,
)
from medlabel.items.models import Instance, UploadSession
from medlabel.items.settings import DeidSettings
from medlabel.items.unpack import FileReport, ImportReport, IngestLimits, display_name, safe_name
from medlabel.jobs import service as jobs
from medlabel.pickling import by_fields
from medlabel.security.rbac import GlobalRole
from medlabel.storage.blobs import BlobStore, fsync_path
from medlabel.storage.cache import RowCache
from medlabel.storage.files import FilesystemSync
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
    "cached_session_ref",
    "list_files",
    "receive_path",
    "check_name",
    "put_file",
    "Staged",
    "stage_file",
    "record_files",
    "group_sync",
    "discard",
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


_refs_cache = RowCache("upload_sessions", {UploadSession: lambda row: [row.id]})
"""upload id -> SessionRef, for a couple of seconds (``medlabel.storage.cache``), for the PUTs.
A stale entry is harmless: a PUT records its file only under the session's file lock and after
checking the commit marker (409), and a removed session has no folder (404)."""


def cached_session_ref(engine: Any, actor: Actor, *, project_id: int, upload_id: str) -> SessionRef | None:
    """What :func:`get_session` would answer, from the in-process cache (no database), or None
    when the database must be asked (not cached, not the actor's, or maybe expired)."""
    ref: SessionRef | None = _refs_cache.get(engine, upload_id)
    if (
        ref is None
        or ref.project_id != project_id
        or (ref.created_by != actor.user_id and actor.role != GlobalRole.ADMIN.value)
        or ref.expires_at <= clock.now()
    ):
        return None
    return ref


@by_fields
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


@by_fields
@dataclass(slots=True)
class _Entry:
    """One record of a journal (``files/<process>.journal``)."""

    uploaded_name: str
    result: FileResult
    prepared: PreparedDicom | None
    put_at: Any
    boot: str = ""
    """The kernel's boot id when the file was written (not fsync'd then; see ``run_commit``)."""
    seq: int = 0
    """When it was recorded (ns since the epoch): of two entries of a name, the later wins."""


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
    ref = session_ref(row)
    _refs_cache.put(session, upload_id, ref)
    return ref


def _expired(session: Session, row: UploadSession) -> bool:
    if row.expires_at > clock.now():
        return False
    if row.status == "committed":  # its job may still be running: only once that has ended
        state = session.scalar(select(Job.state).where(Job.id == row.job_id)) if row.job_id else None
        return state in (None, jobs.FAILED, jobs.SUCCEEDED)
    return True


def _remove(session: Session, row: UploadSession, home: Path) -> None:
    session.execute(delete(UploadSession).where(UploadSession.id == row.id))
    _JOURNALS.forget(row.id)
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


_LEGACY_SUFFIX = ".entry"  # one pickle per name (before the journals); still read
_JOURNAL_SUFFIX = ".journal"
_RECORD = struct.Struct("<II")  # a journal record: payload length, CRC-32 of the payload


def _record(entries: _Entry | list[_Entry]) -> bytes:
    """One journal record: an entry, or the entries of a recorded group (one pickle: what they
    share, such as the series' UIDs and window, is written once; the commit job reads 300 entries
    in ≈ 8 ms instead of ≈ 20). Paths are written as strings: the reader puts each prepared
    file's name under the session's ``data/`` folder anyway (``_entries``), and a string loads in
    a tenth of a ``Path``'s time."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _JOURNAL_DISPATCH
    pickler.dump(entries)
    payload = buf.getvalue()
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


def _path_as_str(path: PurePath) -> tuple[Any, tuple[str]]:
    return str, (os.fspath(path),)


_JOURNAL_DISPATCH = {**copyreg.dispatch_table, PosixPath: _path_as_str, PurePosixPath: _path_as_str}


class _Journals:
    """This process's journal of each session it took files for, kept open for appending.

    One record per PUT, written with one ``write`` under a lock (appends of this process never
    interleave; other processes have their own journal). A record cut short by a crash fails its
    length or CRC check and ends that journal's reading: the file it described reads as never
    sent. Not fsync'd, like the prepared files (see ``_intact``)."""

    _MAX_OPEN = 32

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: OrderedDict[str, int] = OrderedDict()
        self._pid = os.getpid()
        self._token = uuid.uuid4().hex[:12]

    def append(self, folder: Path, upload_id: str, record: bytes) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the descriptors are the parent's
                self._open.clear()
                self._pid, self._token = os.getpid(), uuid.uuid4().hex[:12]
            fd = self._open.get(upload_id)
            if fd is None:
                path = folder / "files" / f"{self._pid}-{self._token}{_JOURNAL_SUFFIX}"
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._open[upload_id] = fd
                while len(self._open) > self._MAX_OPEN:
                    os.close(self._open.popitem(last=False)[1])
            else:
                self._open.move_to_end(upload_id)
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view) :]

    def forget(self, upload_id: str) -> None:
        with self._lock:
            fd = self._open.pop(upload_id, None)
            if fd is not None and self._pid == os.getpid():
                os.close(fd)


_JOURNALS = _Journals()


def _read_journal(path: Path) -> Iterator[_Entry]:
    try:
        data = path.read_bytes()
    except OSError:
        return
    at = 0
    while at + _RECORD.size <= len(data):
        size, crc = _RECORD.unpack_from(data, at)
        payload = data[at + _RECORD.size : at + _RECORD.size + size]
        if len(payload) != size or zlib.crc32(payload) != crc:
            log.warning("journal %s: record at byte %d is cut short or damaged; the rest is ignored", path, at)
            return
        at += _RECORD.size + size
        try:
            found = pickle.loads(payload)  # noqa: S301  (written by _record into the server's own folder)
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            continue
        for entry in found if isinstance(found, list) else [found]:
            if isinstance(entry, _Entry):
                yield entry


def _load(path: Path) -> _Entry | None:
    try:
        with open(path, "rb") as fh:
            entry = pickle.load(fh)  # noqa: S301  (written by this module into the server's own folder)
    except (OSError, EOFError, pickle.UnpicklingError):
        return None
    return entry if isinstance(entry, _Entry) else None


def _entries(home: Path, upload_id: str) -> list[_Entry]:
    """The latest entry of every name (journals, and entry files of an older version)."""
    folder = _folder(home, upload_id) / "files"
    latest: dict[str, tuple[int, int, _Entry]] = {}
    order = 0
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.suffix == _JOURNAL_SUFFIX:
            found: Iterable[_Entry] = _read_journal(p)
        elif p.suffix == _LEGACY_SUFFIX:
            e = _load(p)
            found = [e] if e is not None else []
        else:
            continue
        for e in found:
            order += 1
            key = (getattr(e, "seq", 0), order)
            if e.uploaded_name not in latest or key > latest[e.uploaded_name][:2]:
                latest[e.uploaded_name] = (*key, e)
    out = []
    data = _folder(home, upload_id) / "data"
    for _seq, _order, e in latest.values():
        if e.prepared is not None:  # the folder may have been reached by another path
            e.prepared.dicom.path = data / os.path.basename(e.prepared.dicom.path)  # (a str in a journal)
        out.append(e)
    return sorted(out, key=lambda e: (e.result.name, e.uploaded_name))


def _any_entry(home: Path, upload_id: str) -> bool:
    folder = _folder(home, upload_id) / "files"
    return any(
        p.suffix == _LEGACY_SUFFIX or (p.suffix == _JOURNAL_SUFFIX and p.stat().st_size > 0)
        for p in (folder.iterdir() if folder.is_dir() else [])
    )


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
    defer: bool = False,
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
        p = prepare_dicom_file(
            original, name, config=config, ctx=ctx, work=work, limits=limits, sync=False, defer=defer
        )
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


_KNOWN_UID = (
    select(Instance.id)
    .where(Instance.project_id == bindparam("project"), Instance.sop_instance_uid == bindparam("uid"))
    .limit(1)
)


@dataclass(slots=True)
class Staged:
    """A file prepared for a session but not recorded yet (:func:`record_files` records it, or
    :func:`discard` drops it): the name as sent (the key: the same name again replaces), its
    result, the prepared file, and the fsync of that file when one was started."""

    name: str
    result: FileResult
    prepared: PreparedDicom | None
    syncing: Future[bool] | None = None
    entry: _Entry | None = None
    """What :func:`record_files` recorded for it."""


def stage_file(
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
    blobs: BlobStore | None = None,
    sync: bool = False,
    check_duplicates: bool = True,
    group_sync: bool = False,
) -> Staged:
    """The preparation half of :func:`put_file`: prepare the file received at ``original``
    (deleted here, whatever happens; or its bytes, received in memory), check it against the
    project's instances (``duplicate``) and reserve its blob's directories; nothing is recorded.
    With ``sync``, the prepared file is written, fsync'd and (with ``blobs``) linked into the
    blob store on a background thread (``_write_and_link``: this thread does no file system
    work that could wait for the disk), and :func:`record_files` waits for that and records
    the file as synced (the commit then skips it); the bytes waiting to be written are bounded
    per process (``_WRITE_BUDGET``: this call waits). 404 when the session is gone. Without
    ``check_duplicates``, :func:`record_files` is to check a group of files at once
    (``duplicates``). With ``group_sync`` (and ``sync``), the file is written but not fsync'd:
    :func:`record_files` makes its group durable at once (``fs_sync``)."""
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
            defer=sync,
        )
    except FileNotFoundError:
        raise NotFound(f"upload session {ref.id!r} is gone") from None
    finally:
        if isinstance(original, Path):
            original.unlink(missing_ok=True)  # the original is never kept
    try:
        if prepared is not None:
            uid = prepared.sop_instance_uid
            known = False
            if check_duplicates:
                bind = (read_sessions or sessions).kw["bind"]  # Core: no ORM session per file
                with bind.connect() as c:
                    known = bool(uid) and bool(c.execute(_KNOWN_UID, {"project": ref.project_id, "uid": uid}).scalar())
            if known:
                result = FileResult(shown, "duplicate", "already imported (same SOP Instance UID)")
                prepared.path.unlink(missing_ok=True)
                prepared = None
            elif blobs is not None and prepared.pieces is None:
                blobs.reserve(prepared.sha256)
    except BaseException:
        if prepared is not None:
            prepared.pieces = None
            prepared.path.unlink(missing_ok=True)
        raise
    staged = Staged(name, result, prepared)
    if prepared is not None and prepared.pieces is not None:
        staged.syncing = _write_later(prepared, blobs, deferred=group_sync)
    return staged


#: Bytes of prepared files waiting for (or in) their write in one server process: when the
#: disk is slower than the preparation, the preparer waits, so the batch stops receiving.
_WRITE_BUDGET = ByteBudget(64 << 20)


class _NotWritten(Exception):
    """The prepared file could not be written (nothing of it is left)."""


def group_sync(home: Path, blobs: BlobStore | None) -> FilesystemSync | None:
    """What makes the groups of a batch durable at once (``record_files(fs_sync=...)``), opened
    now, before the batch's first write (the caller closes it); None when the staging folders
    and the blob store are not on one local file system (one ``syncfs`` would not cover the
    links), or ``syncfs`` is not to be used (``FilesystemSync.open``): then each file and
    directory is fsync'd."""
    root = getattr(blobs, "root", None)
    staging = staging_root(home)
    try:
        if root is None or os.stat(root).st_dev != os.stat(staging).st_dev:
            return None
    except OSError:
        return None
    return FilesystemSync.open(staging)


def _write_later(prepared: PreparedDicom, blobs: BlobStore | None, *, deferred: bool = False) -> Future[bool]:
    """Write (and fsync, link) a prepared file's held bytes on an fsync thread; the bytes count
    against ``_WRITE_BUDGET`` until then (or until the write is cancelled)."""
    size = sum(memoryview(p).nbytes for p in prepared.pieces or ())
    _WRITE_BUDGET.acquire(size)
    try:
        fut = _sync_pool().submit(_write_and_link, prepared, blobs, deferred)
    except BaseException:
        _WRITE_BUDGET.release(size)
        raise

    def done(_f: Future[bool]) -> None:
        prepared.pieces = None  # also when cancelled: the bytes are not held any longer
        _WRITE_BUDGET.release(size)

    fut.add_done_callback(done)
    return fut


def _write_and_link(prepared: PreparedDicom, blobs: BlobStore | None, deferred: bool = False) -> bool:
    """Write and fsync a file prepared with ``defer``, then (with ``blobs``) link it into the
    blob store: the commit's work, done while the upload goes on (the blob is named only once
    its data is durable). True when linked: :func:`record_files` then fsyncs the directories
    of its group at once, and the commit only checks the blob is there. A failure to write (or
    fsync) raises ``_NotWritten`` (the file is refused; nothing of it is left); a failure to
    link is logged and left to the commit. A blob of a session never committed is an orphan
    for the sweep (``medlabel.items.blob_sweep``). With ``deferred``, the file is only written
    (not fsync'd, not linked: False): :func:`record_files` makes its group durable, then links
    it (``_sync_group``)."""
    try:
        write_prepared(prepared, deferred=deferred)
    except OSError as exc:
        raise _NotWritten(f"the prepared file could not be written: {exc}; send it again") from exc
    if blobs is None or deferred:
        return False
    try:
        blobs.adopt(prepared.path, prepared.sha256)
    except OSError:
        log.warning("linking %s into the blob store failed; the commit does it", prepared.path, exc_info=True)
        return False
    return True


def discard(staged: Iterable[Staged]) -> None:
    """Delete the prepared files of staged files that will not be recorded (a write still
    running deletes its file when it ends)."""
    for st in staged:
        if st.prepared is not None:
            path = st.prepared.path
            if st.syncing is not None and not st.syncing.cancel():
                st.syncing.add_done_callback(lambda _f, p=path: p.unlink(missing_ok=True))  # type: ignore[misc]
            path.unlink(missing_ok=True)


def _drop_duplicates(ref: SessionRef, staged: Sequence[Staged], reads: sessionmaker[Session]) -> None:
    """The duplicate check of files staged without it, for the group in one query: a file whose
    (de-identified) SOP Instance UID the project has becomes a ``duplicate`` result."""
    uids = [st.prepared.sop_instance_uid for st in staged if st.prepared is not None and st.prepared.sop_instance_uid]
    if not uids:
        return
    with reads.kw["bind"].connect() as c:
        known = set(
            c.execute(
                select(Instance.sop_instance_uid).where(
                    Instance.project_id == ref.project_id, Instance.sop_instance_uid.in_(uids)
                )
            ).scalars()
        )
    for st in staged:
        if st.prepared is not None and st.prepared.sop_instance_uid in known:
            if st.syncing is not None and not st.syncing.cancel():
                _settled(st.syncing)  # not deleted under a running fsync
            st.prepared.path.unlink(missing_ok=True)
            st.prepared, st.syncing = None, None
            st.result = FileResult(st.result.name, "duplicate", "already imported (same SOP Instance UID)")


def _written_error(st: Staged, message: str) -> None:
    log.warning("%s: %s", st.name, message)
    st.prepared, st.syncing = None, None
    st.result = FileResult(st.result.name, "error", message, "unreadable")


def _sync_group(deferred: list[Staged], fs_sync: FilesystemSync | None, blobs: BlobStore | None) -> None:
    """Make the files of a group written without their fsync durable with one ``syncfs``; then
    link them into the blob store (a blob is named only once its data is durable, as
    everywhere) and make the names durable with a second one (``stored``). Two flushes for the
    group instead of three a file. When the first fails, the files are ``error`` results and
    deleted (nothing says what of them reached the disk); when the second fails, they stay
    synced but not stored (the commit links them and fsyncs the directories)."""
    try:
        if fs_sync is None:
            raise OSError(errno.EINVAL, "no file system sync for files written without an fsync")
        fs_sync.sync()
    except OSError as exc:
        for st in deferred:
            assert st.prepared is not None
            st.prepared.path.unlink(missing_ok=True)
            _written_error(st, f"the prepared file could not be made durable: {exc}; send it again")
        return
    linked: list[PreparedDicom] = []
    for st in deferred:
        assert st.prepared is not None
        st.prepared.synced = True
        if blobs is None:
            continue
        try:
            blobs.adopt(st.prepared.path, st.prepared.sha256)
        except OSError:
            log.warning("linking %s into the blob store failed; the commit does it", st.prepared.path, exc_info=True)
            continue
        linked.append(st.prepared)
    if not linked:
        return
    try:
        fs_sync.sync()
    except OSError:
        log.warning("syncfs after linking a group failed; the commit links and fsyncs them", exc_info=True)
        return
    for p in linked:
        p.stored = True


def _settled(fut: Future[bool]) -> None:
    try:
        fut.result()
    except (OSError, _NotWritten):
        pass


def record_files(
    ref: SessionRef,
    staged: Sequence[Staged],
    *,
    sessions: sessionmaker[Session],
    home: Path,
    duplicates: sessionmaker[Session] | None = None,
    blobs: BlobStore | None = None,
    fs_sync: FilesystemSync | None = None,
) -> list[FileResult]:
    """Record the entries of ``staged`` files, in order (of two of one name, the later wins),
    with one journal write under one hold of the session's shared file lock, after checking the
    commit marker: a commit either sees all of them or this call answers 409 (``_locked``); 404
    when the session is gone. On any failure the staged files are discarded. A file whose write
    was started (``stage_file(sync=True)``) is recorded as synced once it was written and
    fsync'd (one whose write failed becomes an ``error`` result); those linked into ``blobs``
    have the directories that name them fsync'd here, the group's in one call (not three fsyncs
    a file), and are recorded as ``stored``. With
    ``duplicates`` (read-only sessions), the files staged without their duplicate check are
    checked here, the group in one query. Files written without their fsync
    (``stage_file(group_sync=True)``) are made durable here with the rest of the file system by
    one ``fs_sync.sync()`` for the group, then linked into the blob store and the links made
    durable by a second (``_sync_group``: no fsync of a file or directory); when the first
    fails, they become ``error`` results ("send it again"), as a failed fsync makes a file one."""
    if not staged:
        return []
    try:
        if duplicates is not None:
            _drop_duplicates(ref, staged, duplicates)
        linked: list[PreparedDicom] = []
        deferred: list[Staged] = []  # written, not fsync'd nor linked
        for st in staged:
            if st.syncing is None or st.prepared is None:
                continue
            try:
                is_linked = st.syncing.result()
            except _NotWritten as exc:
                _written_error(st, str(exc))
                continue
            if not st.prepared.synced:
                deferred.append(st)
            elif is_linked:
                linked.append(st.prepared)
        if deferred:
            _sync_group(deferred, fs_sync, blobs)
        if linked and blobs is not None:
            try:
                blobs.sync_dirs([p.sha256 for p in linked])
            except OSError:
                log.warning("fsync of the blob directories failed; the commit links and fsyncs them", exc_info=True)
            else:
                for p in linked:
                    p.stored = True
        now = clock.now()
        first = _next_seqs(len(staged))
        for i, st in enumerate(staged):
            st.entry = _Entry(st.name, st.result, st.prepared, now, _BOOT, first + i)
        records = _record([st.entry for st in staged if st.entry is not None])
        with _locked(home, ref.id, exclusive=False) as there:
            if not there:
                raise NotFound(f"upload session {ref.id!r} is gone")
            if _marked(home, ref.id):
                raise Conflict(f"upload session {ref.id!r} is committed; it takes no more files")
            # an earlier file of the same name stays in data/ until the session ends: the
            # latest entry of a name wins (``_entries``)
            _JOURNALS.append(_folder(home, ref.id), ref.id, records)
    except BaseException:
        discard(staged)
        raise
    if ref.expires_at - now < ttl() / 2:  # extend the session (a write: rarely, not per file)
        with sessions() as w, w.begin():
            w.execute(
                update(UploadSession)
                .where(UploadSession.id == ref.id, UploadSession.status == "open")
                .values(expires_at=now + ttl())
            )
    return [st.result for st in staged]


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
    blobs: BlobStore | None = None,
) -> FileResult:
    """Prepare the file received at ``original`` (deleted here, whatever happens; or its bytes,
    received in memory) with the project's de-identification ``settings`` and record its result
    under ``name``, replacing an earlier file of that name. 409 once the session is committed;
    404 when it is gone (:func:`stage_file`, then :func:`record_files`).

    No database write per file: the entry is recorded under the session's shared file lock
    after checking the commit marker, which the commit writes under the exclusive lock, so a
    commit either sees this file or this call answers 409 (``_locked``). ``read_sessions``
    (read-only sessions; on SQLite no write turn) serve the duplicate check; ``sessions`` the
    pseudonym stores and, once per half TTL, the extension of the session's expiry. With
    ``blobs``, the directories of the prepared file's future blob are made now (``reserve``), so
    the commit only links."""
    staged = stage_file(
        ref,
        name,
        original,
        settings=settings,
        sessions=sessions,
        secret_key=secret_key,
        home=home,
        limits=limits,
        read_sessions=read_sessions,
        blobs=blobs,
    )
    result = record_files(ref, [staged], sessions=sessions, home=home)[0]
    if staged.entry is not None and staged.entry.prepared is not None and blobs is not None:
        _sync_pool().submit(_complete, home, ref.id, staged.entry, blobs)
    return result


def settle() -> None:
    """Wait until the fsync threads have done what was queued so far (tests; a server that
    stops)."""
    pool = _sync_pool()
    barrier = threading.Barrier(_SYNC_THREADS)  # each thread takes one, after the earlier tasks
    for fut in [pool.submit(barrier.wait) for _ in range(_SYNC_THREADS)]:
        fut.result()


def _complete(home: Path, upload_id: str, entry: _Entry, blobs: BlobStore) -> None:
    """After a PUT was answered: fsync its prepared file, link it into the blob store, fsync the
    directories that name it, then record the entry again, as synced and stored, with the same
    sequence number (it replaces the first record, unless the name was sent again since), so
    that the commit job skips that work. Best effort: when anything fails, or the session was
    committed (or is gone) meanwhile, the entry stays as first recorded and the commit does the
    work as before."""
    prepared = entry.prepared
    assert prepared is not None
    try:
        fsync_path(prepared.path)
        blobs.adopt(prepared.path, prepared.sha256)
        blobs.sync_dirs([prepared.sha256])
        done = _record(replace(entry, prepared=replace(prepared, synced=True, stored=True)))
        with _locked(home, upload_id, exclusive=False) as there:
            if there and not _marked(home, upload_id):
                _JOURNALS.append(_folder(home, upload_id), upload_id, done)
    except OSError:
        log.info("fsync or link of %s after its PUT failed; the commit does it", prepared.path, exc_info=True)


_seq_lock = threading.Lock()
_last_seq = 0


def _next_seqs(n: int) -> int:
    """The first of ``n`` entry sequence numbers (ns since the epoch), strictly increasing in
    this process, so the later of two entries of a name recorded together wins."""
    global _last_seq
    with _seq_lock:
        first = max(time.time_ns(), _last_seq + 1)
        _last_seq = first + n - 1
    return first


#: fsync threads per server process. Two: on 2 cores, 4 per process (8 concurrent fsyncs with
#: the GIL handed back and forth) cost ≈ 1 ms more server CPU a file and made 300-file batches
#: ≈ 0.1 s slower; one or two kept the upload as fast as no fsync at all and the commit job
#: 0.08–0.1 s shorter.
_SYNC_THREADS = 2
_sync: tuple[int, ThreadPoolExecutor] | None = None
_sync_lock = threading.Lock()


def _sync_pool() -> ThreadPoolExecutor:
    """This process's fsync threads (a few parallel fsyncs share the file system's journal
    commits)."""
    global _sync
    with _sync_lock:
        if _sync is None or _sync[0] != os.getpid():  # a forked child has no threads of its own
            _sync = (os.getpid(), ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="medlabel-upload-sync"))
        return _sync[1]


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
        if not _any_entry(home, ref.id):
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
    _JOURNALS.forget(upload_id)
    shutil.rmtree(_folder(home, upload_id), ignore_errors=True)
    progress(99, "done")
    return report
