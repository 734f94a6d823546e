"""Items: start imports, list and read items, the quarantine, de-identification settings and
the pseudonym map (PHI, administrators only)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction, AuditEventData
from medlabel.deid import IMPLEMENTED_OPTIONS, DeidConfig
from medlabel.errors import ConfigurationError, Conflict, Forbidden, InvalidInput, MedlabelError, NotFound
from medlabel.items.ingest import uploads_root
from medlabel.items.models import Instance, Item, PseudonymEntry, QuarantineEntry
from medlabel.items.settings import DeidSettings, deid_settings
from medlabel.jobs import service as jobs
from medlabel.storage.blobs import BlobStore
from medlabel.storage.models import Job, Project

__all__ = [
    "IMPORT_JOB",
    "ItemPage",
    "start_import",
    "list_items",
    "list_quarantine",
    "decide_quarantine",
    "get_deid",
    "update_deid",
    "list_pseudonyms",
]

IMPORT_JOB = "items.import"

log = logging.getLogger(__name__)


def start_import(session: Session, actor: Actor, *, project: Project, upload_dir: Path, home: Path) -> Job:
    """Queue an ``items.import`` job for the files in ``upload_dir`` (under ``$MEDLABEL_HOME/uploads``).

    The caller commits, then enqueues the job.
    """
    root = uploads_root(home).resolve()
    upload = Path(upload_dir).resolve()
    if upload.parent != root or not upload.is_dir():
        raise InvalidInput(f"upload folder {upload_dir} is not a folder directly under {root}")
    if not any(p.is_file() for p in upload.iterdir()):
        raise InvalidInput("nothing to import: no files were uploaded", detail={"field": "files"})
    return jobs.create_job(
        session,
        actor,
        IMPORT_JOB,
        {
            "upload": upload.name,
            "actor": {
                "user_id": actor.user_id,
                "username": actor.username,
                "role": actor.role,
                "ip": actor.ip,
            },
        },
        project_id=project.id,
        max_attempts=1,
    )


@dataclass(frozen=True)
class ItemPage:
    items: list[Item]
    total: int
    offset: int
    limit: int


def list_items(
    session: Session, *, project_id: int, offset: int = 0, limit: int = 50, status: str | None = "ready"
) -> ItemPage:
    if not 0 <= offset or not 1 <= limit <= 500:
        raise InvalidInput(f"offset must be >= 0 and limit 1..500, found {offset} and {limit}")
    where = [Item.project_id == project_id]
    if status:
        where.append(Item.status == status)
    total = int(session.scalar(select(func.count(Item.id)).where(*where)) or 0)
    rows = session.scalars(select(Item).where(*where).order_by(Item.id).offset(offset).limit(limit))
    return ItemPage(list(rows), total, offset, limit)


def list_quarantine(
    session: Session, *, project_id: int, status: str | None = "pending"
) -> list[QuarantineEntry]:
    stmt = select(QuarantineEntry).where(QuarantineEntry.project_id == project_id)
    if status:
        stmt = stmt.where(QuarantineEntry.status == status)
    return list(session.scalars(stmt.order_by(QuarantineEntry.id)))


def decide_quarantine(
    session: Session,
    actor: Actor,
    *,
    project_id: int,
    qid: int,
    decision: str,
    note: str = "",
    blobs: BlobStore | None = None,
) -> QuarantineEntry:
    """``clear`` admits the item (status ready); ``reject`` keeps it out for good (status rejected).

    On ``reject`` with ``blobs``, the item's stored files that no other (not rejected) item or
    instance uses are deleted from the blob store **after** the caller commits (see
    :func:`_delete_after_commit`); the ``quarantine.reject`` record lists them.
    """
    if decision not in ("clear", "reject"):
        raise InvalidInput(f"decision must be clear or reject, found {decision!r}")
    entry = session.get(QuarantineEntry, qid)
    if entry is None or entry.project_id != project_id:
        raise NotFound(f"no quarantine entry with id {qid} in this project")
    if entry.status != "pending":
        raise Conflict(f"quarantine entry {qid} was already {entry.status}", detail={"status": entry.status})
    item = session.get(Item, entry.item_id)
    if item is None:  # pragma: no cover - cascades keep them together
        raise NotFound(f"the item of quarantine entry {qid} is gone")
    entry.status = "cleared" if decision == "clear" else "rejected"
    entry.decided_by = actor.user_id
    entry.decided_at = clock.now()
    entry.note = note[:2000]
    item.status = "ready" if decision == "clear" else "rejected"
    session.flush()
    doomed = _unshared_blobs(session, item.id, _item_blobs(session, item)) if decision == "reject" else []
    detail: dict[str, Any] = {"quarantine_id": entry.id, "reasons": entry.reasons, "note": entry.note}
    if decision == "reject":
        detail["blobs_to_delete"] = doomed if blobs is not None else []
    audit.record(
        session,
        AuditEventData(
            action=f"quarantine.{decision}",
            actor_id=actor.user_id,
            actor=actor.username,
            ip=actor.ip,
            object_type="item",
            object_id=str(item.id),
            project_id=project_id,
            detail=detail,
        ),
    )
    if doomed and blobs is not None:
        _delete_after_commit(session, blobs, doomed, actor=actor, item_id=item.id, project_id=project_id)
    return entry


def _item_blobs(session: Session, item: Item) -> list[str]:
    """Every blob an item stores: its file, its instances' files, its quarantine entries' file."""
    found = {item.blob_sha256} if item.blob_sha256 else set()
    found.update(session.scalars(select(Instance.blob_sha256).where(Instance.item_id == item.id)))
    found.update(
        session.scalars(select(QuarantineEntry.blob_sha256).where(QuarantineEntry.item_id == item.id))
    )
    return sorted(d for d in found if d)


def _unshared_blobs(session: Session, item_id: int, digests: list[str]) -> list[str]:
    """Those of ``digests`` that no other item (in any project; blobs are shared by content) that
    is not rejected uses, as its file or an instance's."""
    if not digests:
        return []
    live = Item.status != "rejected"
    used = set(
        session.scalars(
            select(Item.blob_sha256).where(Item.blob_sha256.in_(digests), Item.id != item_id, live)
        )
    )
    used.update(
        session.scalars(
            select(Instance.blob_sha256)
            .join(Item, Item.id == Instance.item_id)
            .where(Instance.blob_sha256.in_(digests), Instance.item_id != item_id, live)
        )
    )
    return [d for d in digests if d not in used]


def _delete_after_commit(
    session: Session, blobs: BlobStore, digests: list[str], *, actor: Actor, item_id: int, project_id: int
) -> None:
    """Delete ``digests`` from the blob store once ``session`` commits (never on rollback).

    After the commit the references are checked again in a new transaction (an import may have
    stored the same bytes for another item meanwhile), the unshared blobs are deleted, and a
    ``blob.delete`` audit record lists what was deleted, kept and failed. Nothing here may fail
    the caller: its transaction is already committed; errors are logged and recorded.
    """
    bind = session.get_bind()

    def run() -> None:
        try:
            with Session(bind=bind, expire_on_commit=False) as s, s.begin():
                still = _unshared_blobs(s, item_id, digests)
                deleted, failed = [], []
                for d in still:
                    try:
                        blobs.delete(d)
                        deleted.append(d)
                    except (OSError, MedlabelError) as exc:
                        log.warning("deleting blob %s of rejected item %s failed: %s", d, item_id, exc)
                        failed.append(d)
                audit.record(
                    s,
                    AuditEventData(
                        action=AuditAction.BLOB_DELETE,
                        outcome="failure" if failed else "success",
                        actor_id=actor.user_id,
                        actor=actor.username,
                        ip=actor.ip,
                        object_type="item",
                        object_id=str(item_id),
                        project_id=project_id,
                        detail={
                            "reason": "quarantine.reject",
                            "deleted": deleted,
                            "kept": [d for d in digests if d not in still],
                            "failed": failed,
                        },
                    ),
                )
        except Exception:  # noqa: BLE001  (the decision is committed; a failed clean-up only leaves blobs)
            log.warning("deleting the blobs of rejected item %s failed", item_id, exc_info=True)

    pending = session.info.setdefault(_AFTER_COMMIT, [])
    pending.append(run)
    if not event.contains(session, "after_commit", _run_after_commit):
        event.listen(session, "after_commit", _run_after_commit)
        event.listen(session, "after_soft_rollback", _drop_after_commit)


_AFTER_COMMIT = "medlabel.items.after_commit"


def _run_after_commit(session: Session) -> None:
    for fn in session.info.pop(_AFTER_COMMIT, []):
        fn()


def _drop_after_commit(session: Session, _previous: object) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def get_deid(project: Project) -> DeidSettings:
    return deid_settings(project)


def update_deid(
    session: Session,
    actor: Actor,
    *,
    project: Project,
    enabled: bool,
    options: list[str] | None,
    reason: str = "",
) -> DeidSettings:
    """Change the project's de-identification. Turning it **off** is for administrators only,
    with a reason, and is audited like every change here."""
    current = deid_settings(project)
    if not enabled and not actor.is_admin:
        raise Forbidden("only administrators may turn de-identification off", detail={"permission": "admin"})
    if not enabled and len(reason.strip()) < 5:
        raise InvalidInput(
            "turning de-identification off needs a reason (at least 5 characters)", detail={"field": "reason"}
        )
    opts = tuple(current.options if options is None else options)
    valid = sorted(o.value for o in IMPLEMENTED_OPTIONS)
    bad = [o for o in opts if o not in valid]
    if bad:
        raise InvalidInput(f"unknown option(s) {bad}; expected some of {valid}", detail={"field": "options"})
    try:  # the core validates combinations (e.g. full and modified dates exclude each other)
        DeidConfig(project_secret=b"0" * 32, options=frozenset(opts))  # type: ignore[arg-type]
    except ConfigurationError as exc:
        raise InvalidInput(exc.message, detail={"field": "options"}) from None
    new = DeidSettings(
        enabled=enabled, options=tuple(dict.fromkeys(opts)), reason=reason.strip() if not enabled else ""
    )
    settings: dict[str, Any] = dict(project.settings or {})
    settings["deid"] = new.as_dict()
    project.settings = settings
    project.version += 1
    session.flush()
    audit.record(
        session,
        actor.event(
            AuditAction.PROJECT_UPDATE,
            object_type="project",
            object_id=str(project.id),
            project_id=project.id,
            detail={"changed": ["deid"], "before": current.as_dict(), "after": new.as_dict()},
        ),
    )
    return new


def list_pseudonyms(session: Session, actor: Actor, *, project_id: int) -> list[PseudonymEntry]:
    """The PHI map of a project (original Patient ID → pseudonym). Every read is audited."""
    if session.get(Project, project_id) is None:
        raise NotFound(f"no project with id {project_id}")
    rows = list(
        session.scalars(
            select(PseudonymEntry).where(PseudonymEntry.project_id == project_id).order_by(PseudonymEntry.id)
        )
    )
    audit.record(
        session,
        actor.event(
            AuditAction.PHI_READ,
            object_type="pseudonyms",
            object_id=str(project_id),
            project_id=project_id,
            detail={"rows": len(rows)},
        ),
    )
    return rows
