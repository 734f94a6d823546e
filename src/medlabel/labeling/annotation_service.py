"""Annotation sets of an item: read, save with ``If-Match`` versions and validation, history.

Which set a caller reads or writes:

* holding a claimed overlap-slot or gold task on the item: their own ``work`` set (blind: nobody
  else's work is visible to them);
* otherwise the item's ``main`` set (the consensus/final annotations);
* ``kind="gold"`` (the reference) needs ``gold.manage``; another user's work set needs
  ``task.assign`` or ``quality.read``.

Saving requires a claimed task on the item (annotate, review or validate) unless the caller is a
global administrator; every save is validated against the schema in force and kept as a version.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.annotations.model import Annotation, AnnotationSet, apply_save
from medlabel.annotations.schema import LabelSchema
from medlabel.annotations.validate import ValidationIssue, check_annotation_set
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.errors import Conflict, Forbidden, InvalidInput
from medlabel.items.models import Item
from medlabel.labeling.common import extent_of, user_id_of
from medlabel.labeling.models import (
    SET_GOLD,
    SET_MAIN,
    SET_WORK,
    TASK_CLAIMED,
    AnnotationSetRow,
    AnnotationSetVersion,
    LabelSchemaVersion,
    Task,
)
from medlabel.labeling.schema_service import require_schema
from medlabel.projects.service import ProjectAccess
from medlabel.security.rbac import Permission

__all__ = [
    "SetRef",
    "StoredSet",
    "held_task",
    "schema_in_force",
    "resolve_set",
    "load_set",
    "read_annotations",
    "save_annotations",
    "save_set",
    "history",
]


@dataclass(frozen=True)
class SetRef:
    kind: str
    owner_id: int = 0


@dataclass(frozen=True)
class StoredSet:
    ref: SetRef
    aset: AnnotationSet
    warnings: tuple[ValidationIssue, ...] = ()


_SCHEMAS: dict[tuple[int, datetime], LabelSchema] = {}
_LATEST_SCHEMA = (
    select(LabelSchemaVersion.id, LabelSchemaVersion.created_at)
    .where(LabelSchemaVersion.project_id == bindparam("pid"))
    .order_by(LabelSchemaVersion.version.desc())
    .limit(1)
)
_SCHEMA_DOCUMENT = select(LabelSchemaVersion.document).where(LabelSchemaVersion.id == bindparam("sid"))


def schema_in_force(session: Session, project_id: int) -> LabelSchema:
    """``require_schema``, parsed once per schema version: the latest version's row is looked up
    (id and creation time only) on every call, its parsed document kept in process. Schema rows
    are never changed (a new version is a new row), so the cache can never be stale."""
    row = session.execute(_LATEST_SCHEMA, {"pid": project_id}).first()
    if row is None:
        return require_schema(session, project_id)  # the usual 409 no_schema
    key = (int(row.id), row.created_at)
    schema = _SCHEMAS.get(key)
    if schema is None:
        schema = LabelSchema.from_dict(session.execute(_SCHEMA_DOCUMENT, {"sid": row.id}).scalar_one())
        if len(_SCHEMAS) >= 512:
            _SCHEMAS.clear()
        _SCHEMAS[key] = schema
    return schema


def held_task(session: Session, actor: Actor, item_id: int) -> Task | None:
    """The claimed task the actor holds on ``item_id`` (newest first). A task whose lease ran out
    is still held until someone else claims it."""
    if actor.user_id is None:
        return None
    return session.scalar(
        select(Task)
        .where(Task.item_id == item_id, Task.assignee_id == actor.user_id, Task.state == TASK_CLAIMED)
        .order_by(Task.id.desc())
        .limit(1)
    )


def resolve_set(
    session: Session, actor: Actor, access: ProjectAccess, item: Item, *, kind: str | None, owner: str | None
) -> SetRef:
    if kind == SET_GOLD:
        if Permission.GOLD_MANAGE not in access.permissions:
            raise Forbidden(
                "reading a gold reference needs gold.manage", detail={"permission": "gold.manage"}
            )
        return SetRef(SET_GOLD)
    if owner is not None:
        uid = user_id_of(session, owner)
        if uid != actor.user_id and not (
            Permission.TASK_ASSIGN in access.permissions or Permission.QUALITY_READ in access.permissions
        ):
            raise Forbidden(
                "another annotator's work copy needs task.assign or quality.read (annotators work blind)",
                detail={"permission": "quality.read"},
            )
        return SetRef(SET_WORK, uid)
    if kind not in (None, SET_MAIN, SET_WORK):
        raise InvalidInput(f"kind {kind!r} is not one of main, work, gold", detail={"field": "kind"})
    task = held_task(session, actor, item.id)
    if kind == SET_WORK or (task is not None and (task.overlap_slot is not None or task.is_gold)):
        if actor.user_id is None:
            raise InvalidInput("only a user account has a work copy")
        return SetRef(SET_WORK, actor.user_id)
    return SetRef(SET_MAIN)


def _row(session: Session, item_id: int, ref: SetRef, *, lock: bool = False) -> AnnotationSetRow | None:
    stmt = select(AnnotationSetRow).where(
        AnnotationSetRow.item_id == item_id,
        AnnotationSetRow.kind == ref.kind,
        AnnotationSetRow.owner_key == ref.owner_id,
    )
    if lock:
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def _empty(item_id: int, schema_version: int = 1) -> AnnotationSet:
    return AnnotationSet(item_id=str(item_id), version=0, annotations=(), schema_version=schema_version)


def load_set(session: Session, item_id: int, ref: SetRef) -> AnnotationSet:
    row = _row(session, item_id, ref)
    if row is None:
        return _empty(item_id)
    return AnnotationSet.from_dict(row.data)


def read_annotations(
    session: Session,
    actor: Actor,
    access: ProjectAccess,
    item: Item,
    *,
    kind: str | None = None,
    owner: str | None = None,
) -> StoredSet:
    ref = resolve_set(session, actor, access, item, kind=kind, owner=owner)
    aset = load_set(session, item.id, ref)
    audit.record(
        session,
        actor.event(
            AuditAction.ANNOTATION_READ,
            object_type="item",
            object_id=str(item.id),
            project_id=item.project_id,
            detail={"set": ref.kind, "owner_id": ref.owner_id, "version": aset.version},
        ),
    )
    return StoredSet(ref, aset)


def _stamp(actor: Actor, aset: AnnotationSet, previous: AnnotationSet | None) -> AnnotationSet:
    """Nobody can attribute new work to someone else: a new annotation made by a person is the
    actor's; a changed one gets ``updated_at``. Model provenance (pre-labels) is kept."""
    now = clock.now()
    out: list[Annotation] = []
    for a in aset.annotations:
        prev = previous.get(a.id) if previous is not None else None
        p = a.provenance
        if prev is None:
            if not p.is_model and p.created_by_user != actor.username:
                p = replace(p, created_by_user=actor.username)
        elif prev != a:
            p = replace(p, updated_at=max(now, p.created_at))
        out.append(a if p is a.provenance else replace(a, provenance=p))
    return replace(aset, annotations=tuple(out))


def save_set(
    session: Session,
    actor: Actor,
    item: Item,
    ref: SetRef,
    *,
    body: dict[str, Any],
    if_match: int | str | None,
    stage: str,
    task_id: int | None,
    draft: bool = False,
    stamp: bool = True,
) -> StoredSet:
    """Validate and store a new version of one set (no access checks: callers do them).
    ``stamp=False`` keeps provenance as given (copies between sets)."""
    schema = schema_in_force(session, item.project_id)
    try:
        incoming = AnnotationSet.from_dict(
            {
                "item_id": str(item.id),
                "annotations": body.get("annotations") or [],
                "answers": body.get("answers") or {},
                "schema_version": schema.version,
            }
        )
    except InvalidInput:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidInput(f"annotation set is malformed: {exc}") from exc
    row = _row(session, item.id, ref, lock=True)
    if row is None:
        now = clock.now()
        try:
            with session.begin_nested():
                row = AnnotationSetRow(
                    project_id=item.project_id,
                    item_id=item.id,
                    kind=ref.kind,
                    owner_key=ref.owner_id,
                    version=0,
                    schema_version=schema.version,
                    data=_empty(item.id, schema.version).to_dict(),
                    updated_by=actor.user_id,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
        except IntegrityError:
            row = _row(session, item.id, ref, lock=True)
            if row is None:  # pragma: no cover - defensive
                raise Conflict("the annotation set was created concurrently; retry") from None
    previous = AnnotationSet.from_dict(row.data) if row.version > 0 else None
    stamped = _stamp(actor, incoming, previous) if stamp else incoming
    new = apply_save(row.version, if_match, stamped)
    result = check_annotation_set(new, schema, extent_of(item), previous=previous, require_complete=not draft)
    final = replace(result.annotation_set, version=new.version, schema_version=schema.version)
    data = final.to_dict()
    now = clock.now()
    row.version = final.version
    row.schema_version = schema.version
    row.data = data
    row.updated_by = actor.user_id
    row.updated_at = now
    session.add(
        AnnotationSetVersion(
            set_id=row.id,
            item_id=item.id,
            version=final.version,
            derived_from=final.version - 1 if final.version > 1 else None,
            schema_version=schema.version,
            stage=stage,
            task_id=task_id,
            data=data,
            saved_by=actor.user_id,
            saved_by_name=actor.username,
            saved_at=now,
        )
    )
    session.flush()
    audit.record(
        session,
        actor.event(
            AuditAction.ANNOTATION_WRITE,
            object_type="item",
            object_id=str(item.id),
            project_id=item.project_id,
            detail={
                "set": ref.kind,
                "owner_id": ref.owner_id,
                "version": final.version,
                "annotations": len(final.annotations),
                "stage": stage,
                "task_id": task_id,
            },
        ),
    )
    return StoredSet(ref, final, result.warnings)


def save_annotations(
    session: Session,
    actor: Actor,
    access: ProjectAccess,
    item: Item,
    *,
    body: dict[str, Any],
    if_match: int | str | None,
    draft: bool = False,
) -> StoredSet:
    """Save the caller's set for ``item`` (see the module doc for which one)."""
    task = held_task(session, actor, item.id)
    if task is None and not actor.is_admin:
        raise Conflict(
            f"you hold no task on item {item.id}; claim one (POST .../tasks/next) before saving",
            code="no_task_held",
        )
    if task is not None and task.stage == "audit":
        raise Conflict(
            "auditors judge, they do not edit: pass or fail the audit task", code="audit_read_only"
        )
    if task is not None and (task.overlap_slot is not None or task.is_gold):
        ref = SetRef(SET_WORK, int(actor.user_id or 0))
    else:
        ref = SetRef(SET_MAIN)
    return save_set(
        session,
        actor,
        item,
        ref,
        body=body,
        if_match=if_match,
        stage=task.stage if task is not None else "admin",
        task_id=task.id if task is not None else None,
        draft=draft,
    )


def history(
    session: Session,
    actor: Actor,
    access: ProjectAccess,
    item: Item,
    *,
    kind: str | None = None,
    owner: str | None = None,
) -> list[AnnotationSetVersion]:
    """Every saved version of the set the caller may read, oldest first."""
    ref = resolve_set(session, actor, access, item, kind=kind, owner=owner)
    row = _row(session, item.id, ref)
    if row is None:
        return []
    out = list(
        session.scalars(
            select(AnnotationSetVersion)
            .where(AnnotationSetVersion.set_id == row.id)
            .order_by(AnnotationSetVersion.version)
        )
    )
    audit.record(
        session,
        actor.event(
            AuditAction.ANNOTATION_READ,
            object_type="item",
            object_id=str(item.id),
            project_id=item.project_id,
            detail={"set": ref.kind, "owner_id": ref.owner_id, "history": len(out)},
        ),
    )
    return out


def copy_set(session: Session, actor: Actor, item: Item, src: SetRef, dst: SetRef, *, stage: str) -> int:
    """Copy the current content of ``src`` into a new version of ``dst`` (e.g. seed the main set
    from the first overlap work copy). Returns the new version (0 if ``src`` is empty)."""
    source = _row(session, item.id, src)
    if source is None or source.version == 0:
        return 0
    target = _row(session, item.id, dst)
    data = source.data
    stored = save_set(
        session,
        actor,
        item,
        dst,
        body={"annotations": data.get("annotations") or [], "answers": data.get("answers") or {}},
        if_match=None if target is None else target.version,
        stage=stage,
        task_id=None,
        draft=True,
        stamp=False,
    )
    return stored.aset.version
