"""Routes of the labeling domain: schema, guidelines, workflow settings, tasks, decisions,
annotations, gold items and timelines. Thin: parse, call a service in ``medlabel.labeling``, return.

Every task route keeps ``{project_id}`` in its path so ``project_permission(...)`` applies; the
services also check that the task belongs to that project (404) and that the caller holds it (409).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from medlabel.api.deps import ActorDep, SessionDep, item_permission, project_permission
from medlabel.errors import Conflict, InvalidInput, NotFound
from medlabel.labeling import adjudication
from medlabel.labeling import annotation_service as ann_service
from medlabel.labeling import review_service as reviews
from medlabel.labeling import schema_service as schemas
from medlabel.labeling import task_service as tasks
from medlabel.labeling.common import taxonomy, workflow_config
from medlabel.labeling.models import Task
from medlabel.labeling.timeline import timeline as item_timeline
from medlabel.projects.service import ProjectAccess
from medlabel.security.rbac import Permission
from medlabel.workflow import Stage, WorkflowConfig

router = APIRouter(tags=["labeling"])

P = "/projects/{project_id}"
CanRead = Annotated[ProjectAccess, Depends(project_permission(Permission.PROJECT_READ))]
CanManageSchema = Annotated[ProjectAccess, Depends(project_permission(Permission.SCHEMA_MANAGE))]
CanUpdate = Annotated[ProjectAccess, Depends(project_permission(Permission.PROJECT_UPDATE))]
CanAssign = Annotated[ProjectAccess, Depends(project_permission(Permission.TASK_ASSIGN))]
CanAnnotate = Annotated[ProjectAccess, Depends(project_permission(Permission.TASK_ANNOTATE))]
CanReview = Annotated[ProjectAccess, Depends(project_permission(Permission.TASK_REVIEW))]
CanValidate = Annotated[ProjectAccess, Depends(project_permission(Permission.TASK_VALIDATE))]
CanAudit = Annotated[ProjectAccess, Depends(project_permission(Permission.TASK_AUDIT))]
CanManageGold = Annotated[ProjectAccess, Depends(project_permission(Permission.GOLD_MANAGE))]
ItemAnnRead = Annotated[Any, Depends(item_permission(Permission.ANNOTATION_READ))]
ItemAnnWrite = Annotated[Any, Depends(item_permission(Permission.ANNOTATION_WRITE))]
ItemGold = Annotated[Any, Depends(item_permission(Permission.GOLD_MANAGE))]
ItemQualityRead = Annotated[Any, Depends(item_permission(Permission.QUALITY_READ))]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------- models


class SchemaRead(BaseModel):
    version: int
    document: dict[str, Any]
    changes: dict[str, Any] | None = None


class GuidelineWrite(_In):
    markdown: str = Field(min_length=1, max_length=500_000)


class GuidelineRead(_Out):
    version: int
    markdown: str
    created_at: datetime
    acknowledged: bool = False


class GuidelineAckIn(_In):
    version: int = Field(ge=1)


class WorkflowWrite(_In):
    review: bool = True
    validate_: bool = Field(False, alias="validate")
    audit_fraction: float = Field(0.0, ge=0, le=1)
    overlap_fraction: float = Field(0.0, ge=0, le=1)
    overlap_k: int = Field(2, ge=2, le=20)
    gold_rate: float = Field(0.0, ge=0, le=1)
    lease_seconds: int = Field(1800, ge=1, le=7 * 24 * 3600)
    feedback_on_gold: bool = True
    active_gap_seconds: int = Field(90, ge=1, le=3600)
    error_categories: list[str] = Field(default_factory=list, max_length=100)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WorkflowRead(BaseModel):
    review: bool
    validate_: bool = Field(alias="validate", serialization_alias="validate")
    audit_fraction: float
    overlap_fraction: float
    overlap_k: int
    gold_rate: float
    lease_seconds: int
    feedback_on_gold: bool
    active_gap_seconds: int
    error_categories: list[str]

    model_config = ConfigDict(populate_by_name=True)


class TaskRead(BaseModel):
    """A task as its holder sees it. Gold tasks look exactly like the others."""

    id: int
    project_id: int
    item_id: int
    stage: str
    state: str
    assignee: int | None
    priority: float
    claimed_at: datetime | None
    lease_expires_at: datetime | None
    active_seconds: float
    feedback: dict[str, Any] | None = None


class TaskAdminRead(TaskRead):
    """A task as a manager sees it (gold and reservation shown)."""

    is_gold: bool
    reserved: bool
    overlap_slot: int | None
    claim_count: int
    completed_by: int | None
    completed_at: datetime | None


class ClaimRead(BaseModel):
    task: TaskRead | None
    message: str = ""


class ErrorRecordIn(_In):
    category: str = Field(min_length=1, max_length=40)
    severity: Literal["minor", "major", "critical"]
    comment: str = Field("", max_length=5000)
    annotation_id: str | None = Field(None, max_length=128)
    location: dict[str, float | int | None] | None = None


class DecisionIn(_In):
    decision: str = Field(min_length=1, max_length=24)
    errors: list[ErrorRecordIn] = Field(default_factory=list, max_length=200)
    comment: str = Field("", max_length=5000)


class OutcomeRead(BaseModel):
    task: TaskRead
    item_stage: str
    gold: dict[str, Any] | None = None


class HeartbeatIn(_In):
    active: bool = True


class AssignIn(_In):
    task_id: int = Field(ge=1)
    username: str = Field(min_length=1, max_length=64)


class SyncIn(_In):
    seed: int | None = None


class AnnotationSetWrite(_In):
    annotations: list[dict[str, Any]] = Field(default_factory=list, max_length=20_000)
    answers: dict[str, Any] = Field(default_factory=dict)


class AnnotationSetRead(BaseModel):
    item_id: int
    set: str
    owner_id: int
    version: int
    schema_version: int
    annotations: list[dict[str, Any]]
    answers: dict[str, Any]
    warnings: list[dict[str, Any]] = []


class AnnotationVersionRead(_Out):
    version: int
    derived_from: int | None
    schema_version: int
    stage: str
    task_id: int | None
    saved_by_name: str
    saved_at: datetime
    data: dict[str, Any]


# ---------------------------------------------------------------- helpers


def _task(session: Any, t: Task, *, with_feedback: bool = True) -> TaskRead:
    feedback = None
    if with_feedback and t.stage == Stage.ANNOTATE.value and t.reserved and not t.is_gold:
        feedback = reviews.last_rejection(session, t.item_id)
    return TaskRead(
        id=t.id,
        project_id=t.project_id,
        item_id=t.item_id,
        stage=t.stage,
        state=t.state,
        assignee=t.assignee_id,
        priority=t.priority,
        claimed_at=t.claimed_at,
        lease_expires_at=t.lease_expires_at,
        active_seconds=t.active_seconds,
        feedback=feedback,
    )


def _set_read(stored: ann_service.StoredSet, item_id: int) -> AnnotationSetRead:
    d = stored.aset.to_dict()
    return AnnotationSetRead(
        item_id=item_id,
        set=stored.ref.kind,
        owner_id=stored.ref.owner_id,
        version=stored.aset.version,
        schema_version=stored.aset.schema_version,
        annotations=d["annotations"],
        answers=d["answers"],
        warnings=[w.to_dict() for w in stored.warnings],
    )


def _workflow_read(access: ProjectAccess) -> WorkflowRead:
    cfg = workflow_config(access.project)
    return WorkflowRead(**cfg.to_dict(), error_categories=list(taxonomy(access.project).extra))


async def _raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]

_SCHEMA_BODY = {
    "requestBody": {
        "required": True,
        "description": "A label schema document (see docs/schema.md) as YAML or JSON.",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


# ---------------------------------------------------------------- schema and guidelines


@router.get(P + "/schema", response_model=SchemaRead)
def get_schema(access: CanRead, session: SessionDep) -> SchemaRead:
    """The label schema in force (404 when the project has none yet)."""
    schema = schemas.current_schema(session, access.project.id)
    if schema is None:
        raise NotFound(f"project {access.project.name!r} has no label schema yet")
    return SchemaRead(version=schema.version, document=schema.to_dict())


@router.put(P + "/schema", response_model=SchemaRead, openapi_extra=_SCHEMA_BODY)
def put_schema(access: CanManageSchema, actor: ActorDep, session: SessionDep, body: RawBody) -> SchemaRead:
    """Store a new schema version (YAML or JSON). Classes left out are retired, not deleted."""
    parsed = schemas.parse_schema_document(body)
    new, change = schemas.put_schema(session, actor, access.project, schema=parsed)
    return SchemaRead(version=new.version, document=new.to_dict(), changes=change.to_dict())


@router.get(P + "/guidelines", response_model=GuidelineRead)
def get_guidelines(access: CanRead, actor: ActorDep, session: SessionDep) -> GuidelineRead:
    g = schemas.current_guideline(session, access.project.id)
    if g is None:
        raise NotFound(f"project {access.project.name!r} has no guidelines yet")
    try:
        schemas.require_guideline_ack(session, actor, access.project.id)
        acked = True
    except Conflict:
        acked = False
    return GuidelineRead(version=g.version, markdown=g.markdown, created_at=g.created_at, acknowledged=acked)


@router.put(P + "/guidelines", response_model=GuidelineRead)
def put_guidelines(
    body: GuidelineWrite, access: CanManageSchema, actor: ActorDep, session: SessionDep
) -> GuidelineRead:
    """Publish a new guidelines version; annotators must acknowledge it before their next task."""
    g = schemas.put_guideline(session, actor, access.project, markdown=body.markdown)
    return GuidelineRead(version=g.version, markdown=g.markdown, created_at=g.created_at)


@router.post(P + "/guidelines/ack", status_code=204)
def ack_guidelines(body: GuidelineAckIn, access: CanRead, actor: ActorDep, session: SessionDep) -> Response:
    schemas.acknowledge_guideline(session, actor, access.project, version=body.version)
    return Response(status_code=204)


@router.get(P + "/workflow", response_model=WorkflowRead, response_model_by_alias=True)
def get_workflow(access: CanRead) -> WorkflowRead:
    return _workflow_read(access)


@router.put(P + "/workflow", response_model=WorkflowRead, response_model_by_alias=True)
def put_workflow(
    body: WorkflowWrite, access: CanUpdate, actor: ActorDep, session: SessionDep
) -> WorkflowRead:
    """Stages on/off, audit/overlap/gold rates, the lease length and extra error categories."""
    d = body.model_dump(by_alias=True)
    cats = d.pop("error_categories")
    tasks.set_workflow(
        session, actor, access.project, config=WorkflowConfig.from_dict(d), error_categories=cats
    )
    return _workflow_read(access)


# ---------------------------------------------------------------- tasks


@router.post(P + "/tasks/sync")
def sync_tasks(
    access: CanAssign, actor: ActorDep, session: SessionDep, body: SyncIn | None = None
) -> dict[str, int]:
    """Create workflow state and annotate tasks for ready items that have none (idempotent)."""
    return tasks.sync_tasks(session, actor, access.project, seed=body.seed if body else None)


@router.get(P + "/tasks/status")
def task_status(access: CanAssign, session: SessionDep) -> dict[str, Any]:
    """Items per stage, open/claimed tasks per stage, decisions per person."""
    return tasks.status(session, access.project.id).to_dict()


@router.get(P + "/tasks", response_model=list[TaskAdminRead])
def list_tasks(
    access: CanAssign,
    session: SessionDep,
    stage: Annotated[Literal["annotate", "review", "validate", "audit"] | None, Query()] = None,
    state: Annotated[Literal["open", "claimed", "done", "cancelled"] | None, Query()] = None,
    assignee: Annotated[str | None, Query(max_length=64)] = None,
    item_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int, Query(ge=0)] = 0,
) -> list[TaskAdminRead]:
    """Tasks by id (page with ``after_id``), for managers: assignment and supervision."""
    rows = tasks.list_tasks(
        session,
        access.project.id,
        stage=Stage(stage) if stage else None,
        state=state,
        assignee=assignee,
        item_id=item_id,
        limit=limit,
        after_id=after_id,
    )
    out = []
    for t in rows:
        base = _task(session, t, with_feedback=False).model_dump()
        out.append(
            TaskAdminRead(
                **base,
                is_gold=t.is_gold,
                reserved=t.reserved,
                overlap_slot=t.overlap_slot,
                claim_count=t.claim_count,
                completed_by=t.completed_by,
                completed_at=t.completed_at,
            )
        )
    return out


@router.get(P + "/tasks/{task_id}", response_model=TaskRead)
def get_task(task_id: int, access: CanRead, actor: ActorDep, session: SessionDep) -> TaskRead:
    """One task: its state, holder, lease and active time. Its holder also gets the feedback of
    the item's last rejection (as with the claim answer); other members see the state only."""
    t = tasks.get_task(session, access.project.id, task_id)
    return _task(session, t, with_feedback=tasks.holds(t, actor))


@router.post(P + "/tasks/next", response_model=ClaimRead)
def claim_next(
    access: CanRead,
    actor: ActorDep,
    session: SessionDep,
    stage: Annotated[Literal["annotate", "review", "validate", "audit"] | None, Query()] = None,
) -> ClaimRead:
    """Atomically claim the next task at ``stage`` (by priority, then age) for a lease.

    Without ``stage``: the first stage, in workflow order, where your roles let you work and a
    task waits. A stage your roles do not allow is 403. ``task`` is null when nothing is waiting.
    409 ``guidelines_not_acknowledged`` until you acknowledge the guidelines in force."""
    task = tasks.claim_next(session, actor, access, stage=Stage(stage) if stage else None)
    if task is None:
        return ClaimRead(task=None, message="no task is waiting for you")
    return ClaimRead(task=_task(session, task))


@router.post(P + "/tasks/assign", response_model=TaskRead)
def assign_task(body: AssignIn, access: CanAssign, actor: ActorDep, session: SessionDep) -> TaskRead:
    """Reserve a task for one person (who must be allowed to act on it)."""
    return _task(session, tasks.assign(session, actor, access, task_id=body.task_id, username=body.username))


@router.post(P + "/tasks/{task_id}/release", response_model=TaskRead)
def release_task(task_id: int, access: CanRead, actor: ActorDep, session: SessionDep) -> TaskRead:
    """Give a claimed task back (its holder, or a manager)."""
    return _task(session, tasks.release(session, actor, access, task_id), with_feedback=False)


@router.post(P + "/tasks/{task_id}/heartbeat", response_model=TaskRead)
def heartbeat_task(
    task_id: int, access: CanRead, actor: ActorDep, session: SessionDep, body: HeartbeatIn | None = None
) -> TaskRead:
    """Extend the lease; active time since the last beat (at most the workflow's
    ``active_gap_seconds``, 90 s by default) counts unless idle."""
    t = tasks.heartbeat(session, actor, access, task_id, active=body.active if body else True)
    return _task(session, t, with_feedback=False)


def _outcome(session: Any, o: reviews.Outcome) -> OutcomeRead:
    return OutcomeRead(task=_task(session, o.task, with_feedback=False), item_stage=o.to_stage, gold=o.gold)


@router.post(P + "/tasks/{task_id}/submit", response_model=OutcomeRead)
def submit_task(task_id: int, access: CanAnnotate, actor: ActorDep, session: SessionDep) -> OutcomeRead:
    """Finish an annotate task; the saved annotations must be complete under the schema."""
    return _outcome(session, reviews.submit(session, actor, access, task_id))


def _decide(
    session: Any, actor: Any, access: ProjectAccess, task_id: int, stage: Stage, body: DecisionIn
) -> OutcomeRead:
    o = reviews.decide_task(
        session,
        actor,
        access,
        task_id,
        stage=stage,
        decision=body.decision,
        errors=[e.model_dump() for e in body.errors],
        comment=body.comment,
    )
    return _outcome(session, o)


@router.post(P + "/tasks/{task_id}/review", response_model=OutcomeRead)
def review_task(
    task_id: int, body: DecisionIn, access: CanReview, actor: ActorDep, session: SessionDep
) -> OutcomeRead:
    """``accept``, ``edit_accept`` or ``reject`` (a rejection needs ≥ 1 error record)."""
    return _decide(session, actor, access, task_id, Stage.REVIEW, body)


@router.post(P + "/tasks/{task_id}/validate", response_model=OutcomeRead)
def validate_task(
    task_id: int, body: DecisionIn, access: CanValidate, actor: ActorDep, session: SessionDep
) -> OutcomeRead:
    """``accept``, ``send_back_review`` or ``send_back_annotate`` (sending back needs errors)."""
    return _decide(session, actor, access, task_id, Stage.VALIDATE, body)


@router.post(P + "/tasks/{task_id}/audit", response_model=OutcomeRead)
def audit_task(
    task_id: int, body: DecisionIn, access: CanAudit, actor: ActorDep, session: SessionDep
) -> OutcomeRead:
    """``pass`` or ``fail`` (a failure needs errors and reopens the item for its annotator)."""
    return _decide(session, actor, access, task_id, Stage.AUDIT, body)


@router.post(P + "/audit/sample")
def audit_sample(
    access: CanAssign, actor: ActorDep, session: SessionDep, body: SyncIn | None = None
) -> dict[str, Any]:
    """Draw the audit sample from done items not sampled before: ``audit_fraction`` of each
    annotator's items (at least one each); opens an audit task per sampled item."""
    return reviews.sample_audit(session, actor, access, seed=body.seed if body else None)


@router.get(P + "/gold/scores")
def gold_scores(access: CanManageGold, session: SessionDep) -> list[dict[str, Any]]:
    """Every gold answer scored against its reference."""
    return reviews.gold_scores(session, access.project.id)


# ---------------------------------------------------------------- annotations


def _if_match(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise InvalidInput("If-Match is empty; send the version you edited, e.g. '\"3\"'")
    return value


@router.get("/items/{item_id}/annotations", response_model=AnnotationSetRead)
def get_annotations(
    ia: ItemAnnRead,
    actor: ActorDep,
    session: SessionDep,
    response: Response,
    kind: Annotated[Literal["main", "work", "gold"] | None, Query()] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
) -> AnnotationSetRead:
    """The caller's annotation set for the item (see docs/labeling.md); ``ETag`` is its version."""
    stored = ann_service.read_annotations(session, actor, ia.access, ia.item, kind=kind, owner=owner)
    response.headers["ETag"] = f'"{stored.aset.version}"'
    return _set_read(stored, ia.item.id)


@router.put("/items/{item_id}/annotations", response_model=AnnotationSetRead)
def put_annotations(
    body: AnnotationSetWrite,
    ia: ItemAnnWrite,
    actor: ActorDep,
    session: SessionDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
    draft: Annotated[bool, Query(description="skip required-attribute/answer checks")] = False,
) -> AnnotationSetRead:
    """Save a new version. ``If-Match: "<version>"`` is required after the first save; a stale
    one gets 412 with ``detail.current_version``. Invalid annotations get 422 naming each rule."""
    stored = ann_service.save_annotations(
        session, actor, ia.access, ia.item, body=body.model_dump(), if_match=_if_match(if_match), draft=draft
    )
    response.headers["ETag"] = f'"{stored.aset.version}"'
    return _set_read(stored, ia.item.id)


@router.get("/items/{item_id}/annotations/history", response_model=list[AnnotationVersionRead])
def annotation_history(
    ia: ItemAnnRead,
    actor: ActorDep,
    session: SessionDep,
    kind: Annotated[Literal["main", "work", "gold"] | None, Query()] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
) -> list[AnnotationVersionRead]:
    """Every saved version, oldest first, with who saved it, when, at which stage."""
    rows = ann_service.history(session, actor, ia.access, ia.item, kind=kind, owner=owner)
    return [AnnotationVersionRead.model_validate(r) for r in rows]


@router.get("/items/{item_id}/annotations/copies")
def overlap_copies(ia: ItemQualityRead, actor: ActorDep, session: SessionDep) -> dict[str, Any]:
    """For adjudication of an overlap item (needs ``quality.read``: reviewers, validators,
    auditors, managers): every annotator's blind copy, the consensus the main set was seeded
    with, the findings only a minority drew and the questions without a majority. 409 while
    slots are still being annotated."""
    return adjudication.copies(session, actor, ia.access, ia.item)


@router.get("/items/{item_id}/timeline")
def get_timeline(ia: ItemAnnRead, actor: ActorDep, session: SessionDep) -> list[dict[str, Any]]:
    """Who did what, when: tasks created and claimed, saves, decisions with their error records."""
    return item_timeline(session, actor, ia.access, ia.item)


@router.put("/items/{item_id}/gold", response_model=AnnotationSetRead)
def put_gold(
    body: AnnotationSetWrite, ia: ItemGold, actor: ActorDep, session: SessionDep
) -> AnnotationSetRead:
    """Make the item a gold item with this reference answer (a new version each time)."""
    aset = reviews.mark_gold(session, actor, ia.access, ia.item, body=body.model_dump())
    return _set_read(ann_service.StoredSet(ann_service.SetRef("gold"), aset), ia.item.id)
