"""Tasks: creating them for items, claiming atomically with leases, releasing, heart-beats,
manager assignment, and counts for ``medlabel tasks status``.

Claiming is one transaction that picks the best available task and marks it claimed:

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` — concurrent claimers skip each other's row;
  a row changed under us is re-checked by PostgreSQL (READ COMMITTED) and dropped if taken;
* SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (see ``medlabel.storage.db``), so
  claim transactions are serialised by the database write lock.

Either way no task is ever handed to two people. A claimed task whose lease has passed counts as
open again (abandoned work returns to the pool).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import Integer, String, and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.errors import Conflict, Forbidden, InvalidInput, NotFound
from medlabel.items.models import Item
from medlabel.labeling.common import (
    TAXONOMY_KEY,
    WORKFLOW_KEY,
    event,
    history_of,
    user_id_of,
    workflow_config,
)
from medlabel.labeling.models import (
    TASK_CANCELLED,
    TASK_CLAIMED,
    TASK_DONE,
    TASK_OPEN,
    ItemWorkflow,
    Review,
    Task,
)
from medlabel.labeling.schema_service import require_guideline_ack
from medlabel.projects.service import ProjectAccess, project_roles
from medlabel.security.rbac import Permission, permissions_for
from medlabel.storage.db import UTCDateTime
from medlabel.storage.models import Project, User
from medlabel.workflow import (
    ErrorTaxonomy,
    Stage,
    WorkflowConfig,
    select_overlap_items,
    should_serve_gold,
    why_cannot_act,
)

__all__ = [
    "STAGE_PERMISSION",
    "IDLE_GAP",
    "holds",
    "set_workflow",
    "sync_tasks",
    "claim_next",
    "get_task",
    "get_task_and_item",
    "release",
    "heartbeat",
    "assign",
    "StatusReport",
    "status",
    "available",
    "list_tasks",
]

STAGE_PERMISSION: dict[Stage, Permission] = {
    Stage.ANNOTATE: Permission.TASK_ANNOTATE,
    Stage.REVIEW: Permission.TASK_REVIEW,
    Stage.VALIDATE: Permission.TASK_VALIDATE,
    Stage.AUDIT: Permission.TASK_AUDIT,
}
CLAIM_ORDER = (Stage.ANNOTATE, Stage.REVIEW, Stage.VALIDATE, Stage.AUDIT)
#: The longest gap between two heart-beats that still counts as active time.
IDLE_GAP = timedelta(seconds=90)


def set_workflow(
    session: Session, actor: Actor, project: Project, *, config: WorkflowConfig, error_categories: list[str]
) -> tuple[WorkflowConfig, ErrorTaxonomy]:
    tax = ErrorTaxonomy(tuple(error_categories))
    settings = dict(project.settings or {})
    settings[WORKFLOW_KEY] = config.to_dict()
    settings[TAXONOMY_KEY] = list(tax.extra)
    project.settings = settings
    project.version += 1
    audit.record(
        session,
        actor.event(
            AuditAction.PROJECT_UPDATE,
            object_type="project",
            object_id=str(project.id),
            project_id=project.id,
            detail={"what": "workflow", **config.to_dict(), "error_categories": list(tax.extra)},
        ),
    )
    return config, tax


def sync_tasks(
    session: Session, actor: Actor, project: Project, *, seed: int | None = None
) -> dict[str, int]:
    """Create workflow state and annotate tasks for every ready item that has none yet.

    A share ``overlap_fraction`` of the new items gets ``overlap_k`` annotate tasks (slots 1..k,
    each for a different annotator); the rest get one. Idempotent."""
    cfg = workflow_config(project)
    known = select(ItemWorkflow.item_id).where(ItemWorkflow.project_id == project.id)
    items = list(
        session.execute(
            select(Item.id, Item.priority).where(
                Item.project_id == project.id, Item.status == "ready", Item.id.not_in(known)
            )
        )
    )
    if not items:
        return {"items": 0, "tasks": 0, "overlap_items": 0}
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(64))
    overlap = {
        int(x)
        for x in select_overlap_items([str(i) for i, _ in items], cfg.overlap_fraction, cfg.overlap_k, rng)
    }
    now = clock.now()
    n_tasks = 0
    for item_id, priority in items:
        k = cfg.overlap_k if item_id in overlap else 1
        session.add(
            ItemWorkflow(
                item_id=item_id,
                project_id=project.id,
                stage=Stage.ANNOTATE.value,
                overlap_k=k,
                updated_at=now,
            )
        )
        slots: list[int | None] = list(range(1, k + 1)) if k > 1 else [None]
        for slot in slots:
            session.add(
                Task(
                    project_id=project.id,
                    item_id=item_id,
                    stage=Stage.ANNOTATE.value,
                    state=TASK_OPEN,
                    priority=float(priority or 0.0),
                    overlap_slot=slot,
                    created_at=now,
                )
            )
            n_tasks += 1
    session.flush()
    audit.record(
        session,
        event(
            actor,
            "task.create",
            object_type="project",
            object_id=str(project.id),
            project_id=project.id,
            detail={"items": len(items), "tasks": n_tasks, "overlap_items": len(overlap)},
        ),
    )
    return {"items": len(items), "tasks": n_tasks, "overlap_items": len(overlap)}


def available(now: Any) -> Any:
    """SQL condition: a task anyone (subject to the rules) could claim now."""
    return or_(Task.state == TASK_OPEN, and_(Task.state == TASK_CLAIMED, Task.lease_expires_at <= now))


# aliases built once: a fresh ``aliased()`` per claim costs a statement-cache miss each time
_OTHER = aliased(Task, name="other_task")
#: the candidate rows of a one-statement claim (the ``UPDATE``'s own target is ``Task``)
_POOL = aliased(Task, name="pool")


def _rules(stage: Stage, user_id: Any, t: Any = Task) -> Any:
    """SQL conditions on candidate ``t`` for 'nobody checks their own work' and 'overlap slots
    go to different people'."""
    if stage is Stage.ANNOTATE:
        other = _OTHER
        return ~exists().where(
            other.item_id == t.item_id,
            other.id != t.id,
            other.stage == Stage.ANNOTATE.value,
            other.overlap_slot.is_not(None),
            other.assignee_id == user_id,
            other.state.in_((TASK_CLAIMED, TASK_DONE)),
            t.overlap_slot.is_not(None),
        )
    own = {
        Stage.REVIEW: (Stage.ANNOTATE.value,),
        Stage.VALIDATE: (Stage.ANNOTATE.value, Stage.REVIEW.value),
    }.get(stage)
    cond = [Review.item_id == t.item_id, Review.user_id == user_id]
    if own is not None:
        cond.append(Review.stage.in_(own))
    not_touched = ~exists().where(*cond)
    if stage is Stage.AUDIT:
        held = _OTHER
        return and_(
            not_touched,
            ~exists().where(
                held.item_id == t.item_id,
                held.id != t.id,
                held.assignee_id == user_id,
                held.stage != Stage.AUDIT.value,
            ),
        )
    return not_touched


def _own_base(t: Any, project_id: Any, stage: Any) -> tuple[Any, ...]:
    """Project and stage conditions for 'the caller's own tasks', written ``+project_id`` so the
    planner goes by the assignee index instead of walking the project's whole pool index (SQLite
    has no statistics to tell: ~1 ms a claim at 5000 open tasks, 0.04 ms this way)."""
    return (
        UnaryExpression(t.project_id, operator=operators.custom_op("+")) == project_id,
        t.stage == stage,
    )


def _gold_turn(cfg: WorkflowConfig) -> bool:
    """Whether this claim should serve a gold item (at the workflow's gold rate)."""
    return cfg.gold_rate > 0 and should_serve_gold(cfg.gold_rate, np.random.default_rng(secrets.randbits(64)))


def _serve_gold(session: Session, user_id: int, project: Project) -> Task | None:
    seen = select(Task.item_id).where(
        Task.project_id == project.id, Task.is_gold.is_(True), Task.assignee_id == user_id
    )
    item_id = session.scalar(
        select(ItemWorkflow.item_id)
        .where(
            ItemWorkflow.project_id == project.id,
            ItemWorkflow.is_gold.is_(True),
            ItemWorkflow.item_id.not_in(seen),
        )
        .order_by(func.random())
        .limit(1)
    )
    if item_id is None:
        return None
    now = clock.now()
    task = Task(
        project_id=project.id,
        item_id=item_id,
        stage=Stage.ANNOTATE.value,
        state=TASK_CLAIMED,
        assignee_id=user_id,
        reserved=True,
        is_gold=True,
        created_at=now,
    )
    session.add(task)
    return task


def _claim_stage(
    session: Session, actor: Actor, project: Project, stage: Stage, cfg: WorkflowConfig
) -> Task | None:
    """Pick and claim one task at ``stage``, in this order: a task the caller already holds (returned
    as is), one reserved for them (rework, assignment), a gold item (annotate, at the gold rate), an
    abandoned task (lease over), the open pool — each by priority, then age. Every pick locks its
    row with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL); SQLite serialises the whole transaction.

    Without a gold item to serve this is one statement (:func:`_claim_in_one`)."""
    if not (stage is Stage.ANNOTATE and _gold_turn(cfg)):
        return _claim_in_one(session, actor, project, stage, cfg)
    uid = int(actor.user_id or 0)
    now = clock.now()
    base = (Task.project_id == project.id, Task.stage == stage.value)
    order = (Task.priority.desc(), Task.created_at, Task.id)

    def pick(*where: Any, first: Any = None, own: bool = False) -> Task | None:
        stmt = select(Task).where(*(_own_base(Task, project.id, stage.value) if own else base), *where)
        stmt = stmt.order_by(first, *order) if first is not None else stmt.order_by(*order)
        return session.scalar(stmt.limit(1).with_for_update(skip_locked=True, of=Task))

    task = pick(
        Task.assignee_id == uid,
        Task.state.in_((TASK_OPEN, TASK_CLAIMED)),
        first=case((Task.state == TASK_CLAIMED, 0), else_=1),
        own=True,
    )
    if task is not None and task.state == TASK_CLAIMED and task.lease_expires_at is not None:
        if task.lease_expires_at > now:
            return task  # already held: claiming again is idempotent
    if task is None:
        task = _serve_gold(session, uid, project)
    rules = _rules(stage, uid)
    if task is None:
        task = pick(Task.state == TASK_CLAIMED, Task.lease_expires_at <= now, Task.reserved.is_(False), rules)
    if task is None:
        task = pick(Task.state == TASK_OPEN, Task.reserved.is_(False), rules)
    if task is None:
        return None
    task.state = TASK_CLAIMED
    task.assignee_id = uid
    task.claimed_at = now
    task.last_heartbeat_at = now
    task.lease_expires_at = now + timedelta(seconds=cfg.lease_seconds)
    task.claim_count = (task.claim_count or 0) + 1
    session.flush()
    return task


def _claim_in_one(
    session: Session, actor: Actor, project: Project, stage: Stage, cfg: WorkflowConfig
) -> Task | None:
    """The claim as one ``UPDATE tasks … WHERE id = COALESCE(own, abandoned, open) RETURNING``.

    Each candidate is a ``SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED`` sub-query in the same order
    of preference as the step-by-step claim; PostgreSQL evaluates them lazily (the second only
    when the first finds nothing) and re-checks a row changed under it (READ COMMITTED), so no
    task goes to two people. A task the caller already holds with a live lease comes back
    unchanged (the ``CASE``s keep its claim time and lease)."""
    now = clock.now()
    params = {
        "b_pid": project.id,
        "b_stage": stage.value,
        "b_uid": int(actor.user_id or 0),
        "b_now": now,
        "b_lease": now + timedelta(seconds=cfg.lease_seconds),
    }
    return session.scalars(_claim_statement(stage), params).first()


_CLAIM_STATEMENTS: dict[Stage, Any] = {}


def _claim_statement(stage: Stage) -> Any:
    """The claim ``UPDATE`` of ``stage`` with bound parameters ``b_pid``, ``b_stage``, ``b_uid``,
    ``b_now``, ``b_lease``; built once per stage (building it costs ~1 ms of Python, running it far
    less)."""
    stmt = _CLAIM_STATEMENTS.get(stage)
    if stmt is not None:
        return stmt
    p = _POOL
    pid, uid = bindparam("b_pid", type_=Integer), bindparam("b_uid", type_=Integer)
    now, lease = bindparam("b_now", type_=UTCDateTime), bindparam("b_lease", type_=UTCDateTime)
    base = (p.project_id == pid, p.stage == bindparam("b_stage", type_=String))
    order = (p.priority.desc(), p.created_at, p.id)

    def pick(*where: Any, first: Any = None) -> Any:
        q = select(p.id).where(*where)
        q = q.order_by(first, *order) if first is not None else q.order_by(*order)
        return q.limit(1).with_for_update(skip_locked=True, of=p).scalar_subquery()

    rules = _rules(stage, uid, p)
    own = pick(
        *_own_base(p, pid, bindparam("b_stage", type_=String)),
        p.assignee_id == uid,
        p.state.in_((TASK_OPEN, TASK_CLAIMED)),
        first=case((p.state == TASK_CLAIMED, 0), else_=1),
    )
    abandoned = pick(*base, p.state == TASK_CLAIMED, p.lease_expires_at <= now, p.reserved.is_(False), rules)
    pool = pick(*base, p.state == TASK_OPEN, p.reserved.is_(False), rules)
    live = and_(Task.state == TASK_CLAIMED, Task.assignee_id == uid, Task.lease_expires_at > now)
    stmt = (
        update(Task)
        .where(Task.id == func.coalesce(own, abandoned, pool))
        .values(
            state=TASK_CLAIMED,
            assignee_id=uid,
            claimed_at=case((live, Task.claimed_at), else_=now),
            last_heartbeat_at=case((live, Task.last_heartbeat_at), else_=now),
            lease_expires_at=case((live, Task.lease_expires_at), else_=lease),
            claim_count=func.coalesce(Task.claim_count, 0) + case((live, 0), else_=1),
        )
        .returning(Task)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    _CLAIM_STATEMENTS[stage] = stmt
    return stmt


def claim_next(session: Session, actor: Actor, access: ProjectAccess, *, stage: Stage | None) -> Task | None:
    """Claim the next task at ``stage`` (or at the first stage, in workflow order, where the
    caller may work and a task is waiting). Returns None when nothing is available."""
    project = access.project
    cfg = workflow_config(project)
    if actor.user_id is None:
        raise InvalidInput("only a user account can claim tasks")
    if stage is not None:
        if stage is Stage.DONE:
            raise InvalidInput("stage must be annotate, review, validate or audit", detail={"field": "stage"})
        perm = STAGE_PERMISSION[stage]
        if perm not in access.permissions:
            raise Forbidden(
                f"your roles ({', '.join(sorted(access.roles)) or 'none'}) do not allow {perm.value}",
                detail={"permission": perm.value, "roles": sorted(access.roles)},
            )
        stages: list[Stage] = [stage]
    else:
        stages = [s for s in CLAIM_ORDER if STAGE_PERMISSION[s] in access.permissions]
    if not stages:
        return None
    require_guideline_ack(session, actor, project.id)
    for s in stages:
        task = _claim_stage(session, actor, project, s, cfg)
        if task is not None:
            audit.record(
                session,
                event(
                    actor,
                    "task.claim",
                    object_type="task",
                    object_id=str(task.id),
                    project_id=project.id,
                    detail={
                        "item_id": task.item_id,
                        "stage": task.stage,
                        "lease_expires_at": task.lease_expires_at.isoformat()
                        if task.lease_expires_at
                        else None,
                    },
                ),
            )
            return task
    return None


def get_task(session: Session, project_id: int, task_id: int, *, lock: bool = False) -> Task:
    stmt = select(Task).where(Task.id == task_id)
    if lock:
        stmt = stmt.with_for_update()
    task = session.scalar(stmt)
    if task is None or task.project_id != project_id:
        raise NotFound(f"no task with id {task_id} in project {project_id}")
    return task


def get_task_and_item(session: Session, project_id: int, task_id: int) -> tuple[Task, Item]:
    """:func:`get_task` with ``lock=True`` and the task's item, in one statement."""
    row = session.execute(
        select(Task, Item)
        .join(Item, Item.id == Task.item_id)
        .where(Task.id == task_id)
        .with_for_update(of=Task)
    ).first()
    if row is None or row[0].project_id != project_id:
        raise NotFound(f"no task with id {task_id} in project {project_id}")
    return row[0], row[1]


def require_holder(task: Task, actor: Actor) -> None:
    """409 unless ``actor`` holds ``task`` (claimed by them; an expired lease is fine while nobody
    else has taken the task)."""
    if task.state != TASK_CLAIMED or task.assignee_id != actor.user_id:
        state = "done" if task.state == TASK_DONE else "not claimed by you"
        raise Conflict(
            f"task {task.id} is {state}; claim a task with POST .../tasks/next",
            code="task_not_held",
            detail={"task_id": task.id, "state": task.state},
        )


def release(session: Session, actor: Actor, access: ProjectAccess, task_id: int) -> Task:
    """Give a claimed task back to the pool (its holder, or a manager with task.assign)."""
    task = get_task(session, access.project.id, task_id, lock=True)
    if not (Permission.TASK_ASSIGN in access.permissions and task.state == TASK_CLAIMED):
        require_holder(task, actor)
    task.state = TASK_OPEN
    task.lease_expires_at = None
    if not task.reserved:
        task.assignee_id = None
    if task.is_gold:
        task.state = TASK_CANCELLED
    audit.record(
        session,
        event(
            actor,
            "task.release",
            object_type="task",
            object_id=str(task.id),
            project_id=task.project_id,
            detail={"item_id": task.item_id, "stage": task.stage},
        ),
    )
    return task


def heartbeat(session: Session, actor: Actor, access: ProjectAccess, task_id: int, *, active: bool) -> Task:
    """Extend the lease and count active time: the time since the last beat, up to the
    workflow's ``active_gap_seconds`` (``IDLE_GAP`` by default), is added when the UI says the
    user was active (``active=False`` marks idle time)."""
    task = get_task(session, access.project.id, task_id, lock=True)
    require_holder(task, actor)
    now = clock.now()
    last = task.last_heartbeat_at or task.claimed_at or now
    cfg = workflow_config(access.project)
    if active:
        gap = max(timedelta(0), min(now - last, timedelta(seconds=cfg.active_gap_seconds)))
        task.active_seconds = float(task.active_seconds or 0.0) + gap.total_seconds()
    task.last_heartbeat_at = now
    task.lease_expires_at = now + timedelta(seconds=cfg.lease_seconds)
    return task


def assign(session: Session, actor: Actor, access: ProjectAccess, *, task_id: int, username: str) -> Task:
    """A manager reserves a task for ``username`` (who must hold the stage's permission and may
    act on the item under the workflow rules)."""
    task = get_task(session, access.project.id, task_id, lock=True)
    if task.state in (TASK_DONE, TASK_CANCELLED):
        raise Conflict(f"task {task.id} is {task.state}; only open or claimed tasks can be assigned")
    uid = user_id_of(session, username)
    user = session.get(User, uid)
    assert user is not None
    stage = Stage(task.stage)
    perms = permissions_for(user.role, project_roles(session, access.project.id, uid))
    if STAGE_PERMISSION[stage] not in perms:
        raise InvalidInput(
            f"user {username!r} lacks {STAGE_PERMISSION[stage].value} in this project",
            detail={"field": "username", "permission": STAGE_PERMISSION[stage].value},
        )
    if task.overlap_slot is None:
        why = why_cannot_act(username, history_of(session, task.item_id), stage)
        if why is not None:
            raise Conflict(f"cannot assign task {task.id} to {username!r}: {why}", code="workflow_rule")
    task.assignee_id = uid
    task.reserved = True
    task.state = TASK_OPEN
    task.lease_expires_at = None
    audit.record(
        session,
        event(
            actor,
            "task.assign",
            object_type="task",
            object_id=str(task.id),
            project_id=task.project_id,
            detail={"item_id": task.item_id, "stage": task.stage, "assignee": username},
        ),
    )
    return task


@dataclass(frozen=True)
class StatusReport:
    items_by_stage: dict[str, int]
    open_by_stage: dict[str, int]
    claimed_by_stage: dict[str, int]
    done_by_person: dict[str, dict[str, int]]
    claimed_by_person: dict[str, int]
    gold_items: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "items_by_stage": self.items_by_stage,
            "open_tasks_by_stage": self.open_by_stage,
            "claimed_tasks_by_stage": self.claimed_by_stage,
            "done_by_person": self.done_by_person,
            "claimed_by_person": self.claimed_by_person,
            "gold_items": self.gold_items,
        }


def status(session: Session, project_id: int) -> StatusReport:
    now = clock.now()
    items: dict[str, int] = {}
    gold = 0
    for st, is_gold, n in session.execute(
        select(ItemWorkflow.stage, ItemWorkflow.is_gold, func.count())
        .where(ItemWorkflow.project_id == project_id)
        .group_by(ItemWorkflow.stage, ItemWorkflow.is_gold)
    ):
        if is_gold:
            gold += int(n)
        else:
            items[str(st)] = items.get(str(st), 0) + int(n)
    live = and_(Task.state == TASK_CLAIMED, Task.lease_expires_at > now)
    open_: dict[str, int] = {}
    claimed: dict[str, int] = {}
    for st, is_live, n in session.execute(
        select(Task.stage, live, func.count())
        .where(
            Task.project_id == project_id, Task.state.in_((TASK_OPEN, TASK_CLAIMED)), Task.is_gold.is_(False)
        )
        .group_by(Task.stage, live)
    ):
        (claimed if is_live else open_)[str(st)] = (claimed if is_live else open_).get(str(st), 0) + int(n)
    done: dict[str, dict[str, int]] = {}
    for name, st, n in session.execute(
        select(Review.username, Review.stage, func.count())
        .where(Review.project_id == project_id)
        .group_by(Review.username, Review.stage)
    ):
        done.setdefault(str(name), {})[str(st)] = int(n)
    held: dict[str, int] = {}
    for name, n in session.execute(
        select(User.username, func.count())
        .join(Task, Task.assignee_id == User.id)
        .where(Task.project_id == project_id, live)
        .group_by(User.username)
    ):
        held[str(name)] = int(n)
    return StatusReport(items, open_, claimed, done, held, gold)


def list_tasks(
    session: Session,
    project_id: int,
    *,
    stage: Stage | None = None,
    state: str | None = None,
    assignee: str | None = None,
    item_id: int | None = None,
    limit: int = 100,
    after_id: int = 0,
) -> list[Task]:
    """Tasks of a project for managers (gold tasks included), by id, filtered; ``after_id`` pages."""
    stmt = select(Task).where(Task.project_id == project_id, Task.id > after_id)
    if stage is not None:
        stmt = stmt.where(Task.stage == stage.value)
    if state is not None:
        stmt = stmt.where(Task.state == state)
    if assignee is not None:
        stmt = stmt.where(Task.assignee_id == user_id_of(session, assignee))
    if item_id is not None:
        stmt = stmt.where(Task.item_id == item_id)
    return list(session.scalars(stmt.order_by(Task.id).limit(max(1, min(limit, 1000)))))


def holds(task: Task, actor: Actor) -> bool:
    """Whether ``actor`` holds ``task`` now (claimed by them)."""
    return task.state == TASK_CLAIMED and task.assignee_id == actor.user_id
