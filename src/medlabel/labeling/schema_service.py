"""Label schema versions and guidelines (with acknowledgements) of a project."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.annotations.schema import LabelSchema, SchemaChange, evolve_schema, load_schema_yaml
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.errors import Conflict, InvalidInput, NotFound
from medlabel.labeling.common import event
from medlabel.labeling.models import Guideline, GuidelineAck, LabelSchemaVersion
from medlabel.storage.models import Project

__all__ = [
    "parse_schema_document",
    "current_schema",
    "require_schema",
    "put_schema",
    "current_guideline",
    "put_guideline",
    "acknowledge_guideline",
    "require_guideline_ack",
]


def parse_schema_document(body: bytes | str | dict[str, Any]) -> LabelSchema:
    """A schema from a JSON object, JSON text or YAML text (the YAML loader is the safe one)."""
    if isinstance(body, dict):
        return LabelSchema.from_dict(body)
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if not text.strip():
        raise InvalidInput("the schema document is empty; send YAML or JSON", detail={"path": "schema"})
    try:
        return LabelSchema.from_dict(json.loads(text))
    except json.JSONDecodeError:
        return load_schema_yaml(text)


def _latest(session: Session, project_id: int) -> LabelSchemaVersion | None:
    return session.scalar(
        select(LabelSchemaVersion)
        .where(LabelSchemaVersion.project_id == project_id)
        .order_by(LabelSchemaVersion.version.desc())
        .limit(1)
    )


def current_schema(session: Session, project_id: int) -> LabelSchema | None:
    row = _latest(session, project_id)
    return None if row is None else LabelSchema.from_dict(row.document)


def require_schema(session: Session, project_id: int) -> LabelSchema:
    schema = current_schema(session, project_id)
    if schema is None:
        raise Conflict(
            f"project {project_id} has no label schema yet; a manager must PUT one first",
            code="no_schema",
        )
    return schema


def put_schema(
    session: Session, actor: Actor, project: Project, *, schema: LabelSchema
) -> tuple[LabelSchema, SchemaChange]:
    """Store ``schema`` as the project's next version; classes missing from it are retired."""
    prev = _latest(session, project.id)
    if prev is None:
        first = replace(schema, version=1)
        change = SchemaChange(first, added=tuple(c.id for c in first.classes))
    else:
        change = evolve_schema(LabelSchema.from_dict(prev.document), schema)
    new = change.schema
    session.add(
        LabelSchemaVersion(
            project_id=project.id,
            version=new.version,
            document=new.to_dict(),
            changes=change.to_dict(),
            created_by=actor.user_id,
            created_at=clock.now(),
        )
    )
    session.flush()
    audit.record(
        session,
        actor.event(
            AuditAction.PROJECT_UPDATE,
            object_type="label_schema",
            object_id=f"{project.id}:{new.version}",
            project_id=project.id,
            detail={"what": "label_schema", **change.to_dict()},
        ),
    )
    return new, change


def current_guideline(session: Session, project_id: int) -> Guideline | None:
    return session.scalar(
        select(Guideline)
        .where(Guideline.project_id == project_id)
        .order_by(Guideline.version.desc())
        .limit(1)
    )


def put_guideline(session: Session, actor: Actor, project: Project, *, markdown: str) -> Guideline:
    if not markdown.strip():
        raise InvalidInput("guidelines are empty; send Markdown text", detail={"field": "markdown"})
    last = session.scalar(select(func.max(Guideline.version)).where(Guideline.project_id == project.id))
    g = Guideline(
        project_id=project.id,
        version=int(last or 0) + 1,
        markdown=markdown,
        created_by=actor.user_id,
        created_at=clock.now(),
    )
    session.add(g)
    session.flush()
    audit.record(
        session,
        actor.event(
            AuditAction.PROJECT_UPDATE,
            object_type="guideline",
            object_id=f"{project.id}:{g.version}",
            project_id=project.id,
            detail={"what": "guidelines", "version": g.version, "chars": len(markdown)},
        ),
    )
    return g


def acknowledge_guideline(session: Session, actor: Actor, project: Project, *, version: int) -> GuidelineAck:
    g = current_guideline(session, project.id)
    if g is None:
        raise NotFound(f"project {project.name!r} has no guidelines to acknowledge")
    if version != g.version:
        raise Conflict(
            f"guidelines version {version} is not the one in force ({g.version}); read it and acknowledge that",
            code="guidelines_outdated",
            detail={"current_version": g.version},
        )
    if actor.user_id is None:
        raise InvalidInput("only a user account can acknowledge guidelines")
    existing = session.scalar(
        select(GuidelineAck).where(
            GuidelineAck.project_id == project.id,
            GuidelineAck.user_id == actor.user_id,
            GuidelineAck.version == version,
        )
    )
    if existing is not None:
        return existing
    ack = GuidelineAck(
        project_id=project.id, user_id=actor.user_id, version=version, acknowledged_at=clock.now()
    )
    session.add(ack)
    session.flush()
    audit.record(
        session,
        event(
            actor,
            "guidelines.ack",
            object_type="guideline",
            object_id=f"{project.id}:{version}",
            project_id=project.id,
            detail={"version": version},
        ),
    )
    return ack


def require_guideline_ack(session: Session, actor: Actor, project_id: int) -> None:
    """409 ``guidelines_not_acknowledged`` when guidelines exist and the actor has not acknowledged
    the version in force."""
    g = current_guideline(session, project_id)
    if g is None or actor.user_id is None:
        return
    ok = session.scalar(
        select(GuidelineAck.id).where(
            GuidelineAck.project_id == project_id,
            GuidelineAck.user_id == actor.user_id,
            GuidelineAck.version == g.version,
        )
    )
    if ok is None:
        raise Conflict(
            f"read and acknowledge guidelines version {g.version} before taking your next task "
            f"(POST /api/v1/projects/{project_id}/guidelines/ack)",
            code="guidelines_not_acknowledged",
            detail={"version": g.version},
        )


def dump_yaml(schema: LabelSchema) -> str:
    return yaml.safe_dump(schema.to_dict(), sort_keys=False, allow_unicode=True)
