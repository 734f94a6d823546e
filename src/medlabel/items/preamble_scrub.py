"""Rewrite stored DICOM files whose 128-byte preamble is not zeros (``medlabel blobs
scrub-preambles``).

Until 2026-11-29 the de-identified file kept the original's preamble (PS3.10 7.1: free for
applications; it may hold a TIFF header, vendor text, or a patient's name). New imports write
zeros; this finds the stored DICOM files that still carry something there, stores each again with
a zero preamble (the rest byte for byte) and points every row that named the old file at the new
one (instances, quarantine entries, the level list of DICOM whole-slide items), one transaction
per file. The old files are then orphans: ``medlabel blobs sweep`` deletes them, with its own
checks (the command runs it unless told not to).

Like the sweep, it touches nothing while a blob-writing job is queued or running (an import
could name an old file meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction, AuditEventData
from medlabel.items.blob_sweep import blocking_jobs
from medlabel.items.models import Instance, Item, QuarantineEntry
from medlabel.storage.blobs import LocalBlobStore
from medlabel.storage.db import session_scope

__all__ = ["ScrubReport", "scrub_preambles"]

_PREAMBLE = 128
_LISTED = 200


@dataclass(frozen=True, slots=True)
class ScrubReport:
    """What a scrub found and did."""

    scanned: int = 0
    """Distinct stored DICOM files looked at."""
    rewritten: int = 0
    """Files stored again with a zero preamble (the rows now name the new file)."""
    clean: int = 0
    """Files whose preamble was already zeros (or absent)."""
    dry_run: bool = False
    skipped: str = ""
    """Why nothing was done (a blob-writing job in flight), or ""."""
    blocking_jobs: list[str] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)
    """(old digest, new digest), the first 200."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["replaced"] = [list(p) for p in self.replaced]
        return out


class _Rest:
    """A stream of 128 zero bytes, then the file from byte 128 on (what ``put_stream`` reads)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._head = bytes(_PREAMBLE)
        self._fh = fh
        fh.seek(_PREAMBLE)

    def read(self, size: int = -1) -> bytes:
        if self._head:
            out, self._head = (self._head, b"") if size < 0 else (self._head[:size], self._head[size:])
            return out
        return self._fh.read(size)


def _dirty(blobs: LocalBlobStore, digest: str) -> bool:
    try:
        with blobs.open(digest) as fh:
            head = fh.read(_PREAMBLE + 4)
    except Exception:  # noqa: BLE001  (a missing or unreadable file is not this tool's business)
        return False
    return len(head) == _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM" and head[:_PREAMBLE] != bytes(_PREAMBLE)


def _repoint(session: Session, old: str, new: str) -> None:
    session.execute(update(Instance).where(Instance.blob_sha256 == old).values(blob_sha256=new))
    session.execute(update(QuarantineEntry).where(QuarantineEntry.blob_sha256 == old).values(blob_sha256=new))
    slides = session.scalars(select(Item).where(Item.kind == "slide", Item.source_format == "dicom"))
    for item in slides:
        listed = (item.meta or {}).get("instance_blobs")
        if isinstance(listed, list) and old in listed:
            item.meta = {**item.meta, "instance_blobs": [new if d == old else d for d in listed]}
            flag_modified(item, "meta")


def scrub_preambles(
    sessions: sessionmaker[Session],
    blobs: LocalBlobStore,
    *,
    actor: Actor,
    dry_run: bool = False,
    progress: Callable[[float, str], None] = lambda p, m: None,
) -> ScrubReport:
    """Store again, with a zero preamble, every stored DICOM file whose preamble is not zeros
    (module docstring); one audit record (``blob.scrub``) with the counts."""
    with sessions() as s:
        blocking = blocking_jobs(s)
        digests = sorted(set(s.scalars(select(Instance.blob_sha256))))
    if blocking:
        report = ScrubReport(
            dry_run=dry_run,
            skipped="blob-writing jobs are queued or running; nothing was changed",
            blocking_jobs=blocking,
        )
        _audit(sessions, actor, report)
        return report
    rewritten = clean = 0
    replaced: list[tuple[str, str]] = []
    for n, old in enumerate(digests):
        if n % 200 == 0:
            progress(100 * n / max(len(digests), 1), f"{n} of {len(digests)} files looked at")
        if not _dirty(blobs, old):
            clean += 1
            continue
        rewritten += 1
        if dry_run:
            if len(replaced) < _LISTED:
                replaced.append((old, ""))
            continue
        with blobs.open(old) as fh:
            new = blobs.put_stream(cast(BinaryIO, _Rest(fh)))
        blobs.sync_dirs([new])
        with session_scope(sessions) as s:
            _repoint(s, old, new)
        if len(replaced) < _LISTED:
            replaced.append((old, new))
    report = ScrubReport(len(digests), rewritten, clean, dry_run, "", [], replaced)
    _audit(sessions, actor, report)
    return report


def _audit(sessions: sessionmaker[Session], actor: Actor, report: ScrubReport) -> None:
    with session_scope(sessions) as s:
        audit.record(
            s,
            AuditEventData(
                action=AuditAction.BLOB_SCRUB,
                actor_id=actor.user_id,
                actor=actor.username,
                ip=actor.ip,
                object_type="blob_store",
                detail=report.as_dict(),
            ),
        )
