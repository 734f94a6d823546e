"""The blob-store sweep: delete blobs that nothing names, stale temporary files and empty fan-out
directories (the ``items.sweep_blobs`` job and ``medlabel blobs sweep``).

Why there are orphans: an import stores a file's blob (link, fsync) *before* the transaction that
names it commits, so a crash, a failed or abandoned import, or a rejected quarantine item whose
clean-up failed can leave blobs that no row names; an interrupted write leaves a partial file in
``tmp/``; ``BlobStore.reserve`` makes fan-out directories ahead of storing.

Safety rules (each one has a test in ``tests/items/test_items_blob_sweep.py``):

1. **A blob any row names stays.** Every digest the database holds counts: every ``*_sha256``
   column of every table (items, instances, quarantine entries; found from the table metadata,
   so a new column counts without a change here), and every 64-hex string inside ``items.meta``
   (the levels of a DICOM whole-slide item, ``meta["instance_blobs"]``) and inside job
   parameters and results (the HTML/CSV/JSON of a quality report). Rows of rejected items count
   too. The columns are streamed (``yield_per``) into one set of digests held in memory: about
   100 bytes a digest, some 100 MB for a million instances.
2. **Only old orphans go.** A blob's file must be older than ``older_than`` (default 24 h, at
   least :data:`MIN_OLDER_THAN`): a blob written a moment ago may belong to a transaction that has
   not committed yet.
3. **Nothing while blob-writing work is in flight.** A blob stored by hard link keeps the time
   its source was written (an upload session's prepared file may be a day old when it is
   committed), and an import that finds its bytes already stored re-uses that blob (the store
   refreshes its time then, but only once it gets there). So while any job other than :data:`NON_BLOCKING_KINDS` is queued or running
   (an import, an upload-session commit, a quality report, a plug-in's job), the sweep touches
   nothing and says which jobs stopped it (``skipped``, ``blocking_jobs``).
4. **Checked again around every deletion.** Candidates go in batches: just before a batch the
   references and the jobs are read again in a fresh transaction; the batch's files are then
   *moved aside* (renamed into a folder under ``tmp/``), the references and the jobs are read a
   third time, and only then are the files unlinked: anything named meanwhile, or any batch
   during which a job started, is put back. A sweep that dies half-way leaves its folder, whose
   blobs the next sweep puts back before it starts (never deletes unchecked).
5. **Temporary files** in ``tmp/`` older than ``older_than`` are removed, and so are **empty
   fan-out directories** older than it (``rmdir`` never removes one that is not empty).
6. **A dry run** deletes, moves and removes nothing and reports what would go.
7. **One audit record** (``blob.sweep``) per sweep, dry runs and skipped sweeps included, with
   the counts and the (capped) list of digests.

Only items created after the first read are searched again for ``meta`` references, and only
jobs finished (or not finished) since the sweep began for parameters and results: nothing
writes a digest into an existing item's ``meta``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Column, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction, AuditEventData
from medlabel.errors import InvalidInput
from medlabel.items.models import Item
from medlabel.jobs import service as jobs
from medlabel.storage import all_models  # noqa: F401  (every table, so every digest column counts)
from medlabel.storage.blobs import BlobEntry, LocalBlobStore
from medlabel.storage.db import Base, session_scope
from medlabel.storage.models import Job

__all__ = [
    "SWEEP_JOB",
    "AUDIT_ACTION",
    "DEFAULT_OLDER_THAN",
    "MIN_OLDER_THAN",
    "NON_BLOCKING_KINDS",
    "SweepReport",
    "blocking_jobs",
    "digest_columns",
    "referenced_digests",
    "start_sweep",
    "sweep_blobs",
]

log = logging.getLogger(__name__)

SWEEP_JOB = "items.sweep_blobs"
AUDIT_ACTION = AuditAction.BLOB_SWEEP
DEFAULT_OLDER_THAN = timedelta(hours=24)
MIN_OLDER_THAN = timedelta(hours=1)
#: job kinds known to write no blobs; any other queued or running job stops a sweep
NON_BLOCKING_KINDS: frozenset[str] = frozenset({SWEEP_JOB, "system.selftest"})
#: how many digests a report (and its audit record) lists
DIGEST_CAP = 200
#: candidates checked and deleted together
BATCH = 500
_STREAM = 10_000
_TRASH_PREFIX = "sweep-"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class SweepReport:
    """What a sweep found and did. In a dry run the removal counts (``deleted``,
    ``bytes_freed``, ``tmp_files_removed``, ``dirs_removed``, ``digests``) say what would go."""

    dry_run: bool
    older_than_hours: float
    #: blobs in the store
    blobs_scanned: int = 0
    #: of those, named by a row
    referenced: int = 0
    #: named by nothing and older than the cutoff when the store was listed: the candidates
    orphaned: int = 0
    #: named by nothing but newer than the cutoff (kept: a transaction may be about to name them)
    too_new: int = 0
    #: candidates found named (or touched) on a re-check, or put back because a job started
    kept_in_use: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    #: candidates whose deletion failed (an OS error, logged); they stay in the store
    failed: int = 0
    tmp_files_removed: int = 0
    dirs_removed: int = 0
    #: blobs a sweep that died half-way had moved aside, put back before this one began
    restored: int = 0
    #: the deleted (dry run: deletable) digests, at most ``DIGEST_CAP`` of them
    digests: tuple[str, ...] = ()
    digests_truncated: bool = False
    #: why the sweep stopped before the end ("" when it ran through)
    skipped: str = ""
    #: the queued or running jobs that stopped it, as ``"<kind> <id>"``
    blocking_jobs: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["digests"] = list(self.digests)
        d["blocking_jobs"] = list(self.blocking_jobs)
        return d


@dataclass
class _Tally:
    scanned: int = 0
    referenced: int = 0
    orphaned: int = 0
    too_new: int = 0
    kept: int = 0
    deleted: int = 0
    bytes: int = 0
    failed: int = 0
    tmp: int = 0
    dirs: int = 0
    restored: int = 0
    digests: list[str] = field(default_factory=list)
    truncated: bool = False
    skipped: str = ""
    blocking: list[str] = field(default_factory=list)

    def gone(self, e: BlobEntry) -> None:
        self.deleted += 1
        self.bytes += e.size
        if len(self.digests) < DIGEST_CAP:
            self.digests.append(e.digest)
        else:
            self.truncated = True

    def report(self, *, dry_run: bool, older_than: timedelta) -> SweepReport:
        return SweepReport(
            dry_run=dry_run,
            older_than_hours=older_than.total_seconds() / 3600,
            blobs_scanned=self.scanned,
            referenced=self.referenced,
            orphaned=self.orphaned,
            too_new=self.too_new,
            kept_in_use=self.kept,
            deleted=self.deleted,
            bytes_freed=self.bytes,
            failed=self.failed,
            tmp_files_removed=self.tmp,
            dirs_removed=self.dirs,
            restored=self.restored,
            digests=tuple(self.digests),
            digests_truncated=self.truncated,
            skipped=self.skipped,
            blocking_jobs=tuple(self.blocking),
        )


# ---------------------------------------------------------------- what the database names


def digest_columns() -> list[Column[Any]]:
    """Every column, in every table, that holds a blob digest (named ``sha256`` or ``*_sha256``)."""
    return [
        c
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if c.name == "sha256" or c.name.endswith("_sha256")
    ]


#: JSON columns that may carry digests inside (searched for any 64-hex string)
_JSON_COLUMNS: tuple[Any, ...] = (Item.meta, Job.params, Job.result)


def _digests_in(doc: Any) -> Iterator[str]:
    """Every 64-hex string anywhere in a JSON document (keys included)."""
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if len(x) == 64 and _DIGEST.match(x):
                yield x
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def referenced_digests(session: Session) -> set[str]:
    """Every digest a row names (rule 1), read by streaming the columns."""
    found: set[str] = set()
    for col in digest_columns():
        rows = session.execute(select(col).where(col.is_not(None)).execution_options(yield_per=_STREAM))
        found.update(d for d in rows.scalars() if isinstance(d, str) and d)
    for jcol in _JSON_COLUMNS:
        for doc in session.execute(select(jcol).execution_options(yield_per=_STREAM // 5)).scalars():
            found.update(_digests_in(doc))
    return found


def _still_named(session: Session, digests: list[str], *, after_item: int, since: datetime) -> set[str]:
    """Those of ``digests`` a row names now: the digest columns (indexed look-ups), and the JSON
    of items created and jobs finished (or unfinished) since the first read."""
    if not digests:
        return set()
    wanted = set(digests)
    named: set[str] = set()
    for col in digest_columns():
        named.update(session.scalars(select(col).where(col.in_(digests))))
    for meta in session.scalars(select(Item.meta).where(Item.id > after_item)):
        named.update(_digests_in(meta))
    recent = or_(Job.finished_at.is_(None), Job.finished_at >= since)
    for params, result in session.execute(select(Job.params, Job.result).where(recent)):
        named.update(_digests_in(params))
        named.update(_digests_in(result))
    return named & wanted


def blocking_jobs(session: Session) -> list[str]:
    """Queued or running jobs that may store blobs (rule 3)."""
    rows = session.execute(
        select(Job.kind, Job.id)
        .where(Job.state.in_((jobs.QUEUED, jobs.RUNNING)), Job.kind.not_in(NON_BLOCKING_KINDS))
        .order_by(Job.created_at)
        .limit(20)
    )
    return [f"{kind} {job_id}" for kind, job_id in rows]


# ---------------------------------------------------------------- moving files


def _put_back(blobs: LocalBlobStore, digest: str, aside: Path) -> None:
    """Return a moved-aside blob to its place (unless the same bytes were stored meanwhile)."""
    final = blobs.path(digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(aside, final)
    except FileExistsError:
        pass
    except FileNotFoundError:  # put back already (by a sweep that began meanwhile)
        return
    blobs.sync_dirs([digest])
    aside.unlink(missing_ok=True)


def _restore_folder(blobs: LocalBlobStore, folder: Path) -> int:
    """Put back every blob a sweep moved into ``folder``, then remove it; returns how many."""
    n = 0
    for p in sorted(folder.iterdir()):
        if p.is_file() and _DIGEST.match(p.name):
            _put_back(blobs, p.name, p)
            n += 1
    shutil.rmtree(folder, ignore_errors=True)
    return n


def _set_aside(
    blobs: LocalBlobStore, batch: Iterable[BlobEntry], trash: Path, cutoff: float, t: _Tally
) -> list[tuple[BlobEntry, Path]]:
    moved: list[tuple[BlobEntry, Path]] = []
    trash.mkdir(exist_ok=True)
    for e in batch:
        src = blobs.path(e.digest)
        try:
            if src.stat().st_mtime >= cutoff:  # written again meanwhile
                t.kept += 1
                continue
            os.rename(src, trash / e.digest)
        except FileNotFoundError:  # deleted meanwhile (a quarantine rejection, another sweep)
            continue
        except OSError as exc:
            log.warning("moving blob %s aside failed: %s", e.digest, exc)
            t.failed += 1
            continue
        moved.append((e, trash / e.digest))
    return moved


def _clean_tmp(blobs: LocalBlobStore, cutoff: float, *, dry_run: bool, own: Path) -> int:
    """Remove the files in ``tmp/`` older than the cutoff (rule 5); returns how many."""
    n = 0
    with os.scandir(blobs.tmp_dir) as listing:
        entries = list(listing)
    for e in entries:
        if e.path == str(own) or e.is_dir(follow_symlinks=False):
            continue  # sweep folders are put back, never deleted
        try:
            if e.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
            if not dry_run:
                os.unlink(e.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("removing temporary file %s failed: %s", e.path, exc)
            continue
        n += 1
    return n


def _remove_empty_dirs(blobs: LocalBlobStore, cutoff: float, *, dry_run: bool) -> int:
    """Remove the fan-out directories that are empty (or only hold directories removed here) and
    older than the cutoff (rule 5); returns how many."""
    folders: list[tuple[Path, float]] = []
    for d in blobs.fanout_dirs():
        try:
            folders.append((d, d.stat().st_mtime))  # before removing children moves the time
        except FileNotFoundError:
            continue
    gone: set[Path] = set()
    for d, mtime in folders:
        if mtime >= cutoff:
            continue
        try:
            if any(child not in gone for child in d.iterdir()):
                continue
            if not dry_run:
                os.rmdir(d)  # refuses a directory that is not empty
        except OSError:  # gone, or filled meanwhile
            continue
        gone.add(d)
    return len(gone)


# ---------------------------------------------------------------- the sweep


def _check_older_than(older_than: timedelta) -> None:
    if older_than < MIN_OLDER_THAN:
        raise InvalidInput(
            f"older_than must be at least {MIN_OLDER_THAN} (a younger blob may belong to an import "
            f"that has not committed yet), found {older_than}",
            detail={"field": "older_than_hours"},
        )


def sweep_blobs(
    sessions: sessionmaker[Session],
    blobs: LocalBlobStore,
    *,
    older_than: timedelta = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    actor: Actor,
    job_id: str | None = None,
    progress: Progress | None = None,
) -> SweepReport:
    """Delete the blobs no row names, older than ``older_than``, then stale ``tmp/`` files and
    empty fan-out directories, under the rules in the module's doc; one audit record."""
    _check_older_than(older_than)
    note: Progress = progress or (lambda p, m: None)
    t = _Tally()
    cutoff = time.time() - older_than.total_seconds()  # file times are the file system's clock
    since = clock.now()
    trash = blobs.tmp_dir / f"{_TRASH_PREFIX}{uuid.uuid4().hex}"
    try:
        _sweep(sessions, blobs, t, cutoff=cutoff, since=since, trash=trash, dry_run=dry_run, note=note)
    finally:
        if trash.exists():  # an error half-way: what is still aside goes back
            t.kept += _restore_folder(blobs, trash)
    report = t.report(dry_run=dry_run, older_than=older_than)
    with session_scope(sessions) as s:
        audit.record(
            s,
            AuditEventData(
                action=AUDIT_ACTION,
                outcome="failure" if report.failed else "success",
                actor_id=actor.user_id,
                actor=actor.username,
                ip=actor.ip,
                object_type="blob_store",
                object_id=job_id or "",
                detail=report.as_dict(),
            ),
        )
    note(100, "done" if not report.skipped else f"stopped: {report.skipped}")
    return report


def _sweep(
    sessions: sessionmaker[Session],
    blobs: LocalBlobStore,
    t: _Tally,
    *,
    cutoff: float,
    since: datetime,
    trash: Path,
    dry_run: bool,
    note: Progress,
) -> None:
    def stop(blocking: list[str], when: str) -> None:
        t.blocking = blocking
        t.skipped = f"{len(blocking)} job(s) that may store blobs are queued or running ({when})"

    note(2, "checking for jobs in flight")
    with session_scope(sessions) as s:
        blocking = blocking_jobs(s)
        if blocking:
            stop(blocking, "before the sweep; nothing was touched")
            return
        note(5, "reading the digests the database names")
        named = referenced_digests(s)
        after_item = int(s.scalar(select(func.max(Item.id))) or 0)
    if not dry_run:
        for folder in sorted(blobs.tmp_dir.glob(f"{_TRASH_PREFIX}*")):
            if folder.is_dir():
                t.restored += _restore_folder(blobs, folder)

    note(15, "listing the blob store")
    candidates: list[BlobEntry] = []
    for e in blobs.entries():
        t.scanned += 1
        if e.digest in named:
            t.referenced += 1
        elif e.mtime >= cutoff:
            t.too_new += 1
        else:
            candidates.append(e)
    del named
    t.orphaned = len(candidates)

    for start in range(0, len(candidates), BATCH):
        batch = candidates[start : start + BATCH]
        note(
            20 + 70 * start / len(candidates),
            f"checking orphans {start + 1}–{start + len(batch)} of {len(candidates)}",
        )
        with session_scope(sessions) as s:
            blocking = blocking_jobs(s)
            if blocking:
                stop(blocking, f"started during the sweep; {t.deleted} blobs deleted before")
                return
            named_now = _still_named(s, [e.digest for e in batch], after_item=after_item, since=since)
        doomed = [e for e in batch if e.digest not in named_now]
        t.kept += len(batch) - len(doomed)
        if dry_run:
            for e in doomed:
                t.gone(e)
            continue
        moved = _set_aside(blobs, doomed, trash, cutoff, t)
        with session_scope(sessions) as s:
            blocking = blocking_jobs(s)
            named_after = (
                set()
                if blocking
                else _still_named(s, [e.digest for e, _ in moved], after_item=after_item, since=since)
            )
        for e, aside in moved:
            if blocking or e.digest in named_after:
                _put_back(blobs, e.digest, aside)
                t.kept += 1
                continue
            try:
                aside.unlink()
            except FileNotFoundError:  # put back by a sweep that began meanwhile: kept
                t.kept += 1
                continue
            except OSError as exc:
                log.warning("deleting blob %s failed: %s", e.digest, exc)
                _put_back(blobs, e.digest, aside)
                t.failed += 1
                continue
            t.gone(e)
        if blocking:
            stop(
                blocking, f"started during the sweep; the last batch was put back, {t.deleted} blobs deleted"
            )
            return
    if trash.exists():
        trash.rmdir()

    note(92, "removing stale temporary files")
    t.tmp = _clean_tmp(blobs, cutoff, dry_run=dry_run, own=trash)
    note(96, "removing empty directories")
    t.dirs = _remove_empty_dirs(blobs, cutoff, dry_run=dry_run)


def start_sweep(session: Session, actor: Actor, *, older_than: timedelta, dry_run: bool) -> Job:
    """Queue an ``items.sweep_blobs`` job (one attempt). The caller commits, then enqueues it."""
    _check_older_than(older_than)
    return jobs.create_job(
        session,
        actor,
        SWEEP_JOB,
        {
            "older_than_hours": older_than.total_seconds() / 3600,
            "dry_run": dry_run,
            "actor": {
                "user_id": actor.user_id,
                "username": actor.username,
                "role": actor.role,
                "ip": actor.ip,
            },
        },
        max_attempts=1,
    )
