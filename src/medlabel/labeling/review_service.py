"""Decisions on tasks: annotators submit, reviewers/validators/auditors decide; the item moves
through the stages (``medlabel.workflow`` decides, this module stores). Also audit sampling and
gold items (reference answers and scores)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.annotations.model import AnnotationSet
from medlabel.annotations.validate import check_annotation_set
from medlabel.audit import service as audit
from medlabel.errors import Conflict, InvalidInput
from medlabel.items.models import Item
from medlabel.labeling.adjudication import seed_consensus
from medlabel.labeling.annotation_service import SetRef, load_set, save_set, schema_in_force
from medlabel.labeling.common import (
    error_to_row,
    event,
    extent_of,
    history_of,
    taxonomy,
    usernames,
    workflow_config,
)
from medlabel.labeling.models import (
    SET_GOLD,
    SET_MAIN,
    SET_WORK,
    TASK_CANCELLED,
    TASK_CLAIMED,
    TASK_DONE,
    TASK_OPEN,
    AnnotationSetRow,
    GoldScoreRow,
    ItemWorkflow,
    Review,
    Task,
)
from medlabel.labeling.task_service import get_task, get_task_and_item, require_holder
from medlabel.projects.service import ProjectAccess
from medlabel.workflow import (
    Decision,
    ErrorRecord,
    HistoryEvent,
    Stage,
    Transition,
    check_decision,
    decide,
    next_stage,
    score_gold,
    select_audit_sample,
)

__all__ = ["Outcome", "submit", "decide_task", "sample_audit", "mark_gold", "gold_scores", "last_rejection"]


@dataclass(frozen=True)
class Outcome:
    task: Task
    to_stage: str
    gold: dict[str, Any] | None = None


def _lock_state(session: Session, item_id: int) -> ItemWorkflow:
    st = session.scalar(select(ItemWorkflow).where(ItemWorkflow.item_id == item_id).with_for_update())
    if st is None:
        raise Conflict(f"item {item_id} is not in the workflow; run tasks sync first", code="not_in_workflow")
    return st


def _record(
    session: Session,
    actor: Actor,
    task: Task,
    *,
    stage: Stage,
    decision: Decision,
    to_stage: str,
    errors: Sequence[ErrorRecord],
    comment: str,
    main_version: int | None = None,
) -> Review:
    """Add the decision (flushed, for its id, only when it carries error records).
    ``main_version``: the main set's version when the caller has just read it."""
    main = main_version
    if main is None:
        main = session.scalar(
            select(AnnotationSetRow.version).where(
                AnnotationSetRow.item_id == task.item_id,
                AnnotationSetRow.kind == SET_MAIN,
                AnnotationSetRow.owner_key == 0,
            )
        )
    rev = Review(
        project_id=task.project_id,
        item_id=task.item_id,
        task_id=task.id,
        user_id=actor.user_id,
        username=actor.username,
        stage=stage.value,
        decision=decision.value,
        to_stage=to_stage,
        annotation_version=int(main or 0),
        comment=comment,
        at=clock.now(),
    )
    session.add(rev)
    if errors:
        session.flush()
        for e in errors:
            session.add(error_to_row(rev.id, e))
    return rev


def _finish(task: Task, actor: Actor) -> None:
    now = clock.now()
    task.state = TASK_DONE
    task.completed_at = now
    task.completed_by = actor.user_id
    task.lease_expires_at = None


def _user_id(session: Session, username: str | None) -> int | None:
    if username is None:
        return None
    from medlabel.storage.models import User

    uid = session.scalar(select(User.id).where(User.username == username))
    return None if uid is None else int(uid)


def _apply(session: Session, st: ItemWorkflow, task: Task, t: Transition) -> None:
    """Move the item and open the next task (reserved for ``t.assignee`` when set)."""
    now = clock.now()
    st.stage = t.to_stage.value
    st.updated_at = now
    if t.to_stage is Stage.DONE:
        if t.from_stage is not Stage.AUDIT:
            st.done_count += 1
            st.done_at = now
        return
    assignee = _user_id(session, t.assignee)
    if t.to_stage is Stage.ANNOTATE:
        st.rework_user_id = assignee
    session.add(
        Task(
            project_id=task.project_id,
            item_id=task.item_id,
            stage=t.to_stage.value,
            state=TASK_OPEN,
            assignee_id=assignee,
            reserved=assignee is not None,
            priority=task.priority,
            created_at=now,
        )
    )


def _audit_decision(
    session: Session, actor: Actor, task: Task, decision: str, to_stage: str, n_errors: int
) -> None:
    audit.record(
        session,
        event(
            actor,
            "task.decision",
            object_type="task",
            object_id=str(task.id),
            project_id=task.project_id,
            detail={
                "item_id": task.item_id,
                "stage": task.stage,
                "decision": decision,
                "to_stage": to_stage,
                "errors": n_errors,
            },
        ),
    )


def _score_gold(session: Session, actor: Actor, task: Task, item: Item) -> dict[str, Any]:
    ref_row = load_set(session, item.id, SetRef(SET_GOLD))
    answer = load_set(session, item.id, SetRef(SET_WORK, int(actor.user_id or 0)))
    res = score_gold(answer, ref_row)
    session.add(
        GoldScoreRow(
            project_id=task.project_id,
            item_id=item.id,
            task_id=task.id,
            user_id=actor.user_id,
            score=res.score,
            passed=res.passed,
            detail=res.to_dict()["detail"],
            at=clock.now(),
        )
    )
    return res.to_dict()


def _check_complete(session: Session, item: Item, ref: SetRef) -> int:
    """422 unless the set is complete under the schema in force; returns the set's version."""
    schema = schema_in_force(session, item.project_id)
    aset = load_set(session, item.id, ref)
    # work saved under an earlier schema version is judged leniently on rules the schema changed
    previous = aset if aset.version and aset.schema_version < schema.version else None
    check_annotation_set(aset, schema, extent_of(item), previous=previous, require_complete=True)
    return aset.version


def submit(session: Session, actor: Actor, access: ProjectAccess, task_id: int) -> Outcome:
    """An annotator finishes an annotate task: the saved set must be complete under the schema."""
    project = access.project
    task, item = get_task_and_item(session, project.id, task_id)
    require_holder(task, actor)
    if task.stage != Stage.ANNOTATE.value:
        raise Conflict(
            f"task {task.id} is a {task.stage} task; use POST .../tasks/{task.id}/{task.stage} to decide it",
            code="wrong_stage",
        )
    cfg = workflow_config(project)
    if task.is_gold:
        _check_complete(session, item, SetRef(SET_WORK, int(actor.user_id or 0)))
        result = _score_gold(session, actor, task, item)
        _finish(task, actor)
        _audit_decision(session, actor, task, "submit", "annotate", 0)
        return Outcome(task, Stage.DONE.value, result if cfg.feedback_on_gold else None)
    st = _lock_state(session, task.item_id)
    if st.stage != Stage.ANNOTATE.value:
        raise Conflict(f"item {item.id} is at stage {st.stage}, not annotate", code="wrong_stage")
    if task.overlap_slot is not None:
        _check_complete(session, item, SetRef(SET_WORK, int(actor.user_id or 0)))
        _finish(task, actor)
        pending = session.scalar(
            select(Task.id)
            .where(
                Task.item_id == item.id,
                Task.stage == Stage.ANNOTATE.value,
                Task.overlap_slot.is_not(None),
                Task.state.in_((TASK_OPEN, TASK_CLAIMED)),
                Task.id != task.id,
            )
            .limit(1)
        )
        to = next_stage(cfg, Stage.ANNOTATE, Decision.SUBMIT) if pending is None else Stage.ANNOTATE
        if pending is None:
            # every slot is in: seed the main set from the copies' consensus (majority findings
            # and answers); the reviewer adjudicates the rest (medlabel.labeling.adjudication)
            seed_consensus(session, actor, item)
        _record(
            session,
            actor,
            task,
            stage=Stage.ANNOTATE,
            decision=Decision.SUBMIT,
            to_stage=to.value,
            errors=(),
            comment="",
        )
        if pending is None:
            ev = HistoryEvent(actor.username, Stage.ANNOTATE, Decision.SUBMIT, clock.now())
            _apply(session, st, task, Transition(Stage.ANNOTATE, to, None, ev))
        _audit_decision(session, actor, task, "submit", to.value, 0)
        return Outcome(task, to.value)
    main_version = _check_complete(session, item, SetRef(SET_MAIN))
    hist = history_of(session, item.id)
    t = decide(cfg, hist, user=actor.username, stage=Stage.ANNOTATE, decision=Decision.SUBMIT, at=clock.now())
    # a rejected item's next review goes to the pool again (never to the annotator: rules apply)
    t = Transition(t.from_stage, t.to_stage, None, t.event)
    _finish(task, actor)
    _record(
        session,
        actor,
        task,
        stage=Stage.ANNOTATE,
        decision=Decision.SUBMIT,
        to_stage=t.to_stage.value,
        errors=(),
        comment="",
        main_version=main_version,
    )
    _apply(session, st, task, t)
    _audit_decision(session, actor, task, "submit", t.to_stage.value, 0)
    return Outcome(task, t.to_stage.value)


def decide_task(
    session: Session,
    actor: Actor,
    access: ProjectAccess,
    task_id: int,
    *,
    stage: Stage,
    decision: str,
    errors: Sequence[dict[str, Any]],
    comment: str = "",
) -> Outcome:
    """A reviewer, validator or auditor decides the task they hold (``stage`` is the route's)."""
    project = access.project
    task = get_task(session, project.id, task_id, lock=True)
    require_holder(task, actor)
    if task.stage != stage.value:
        raise Conflict(
            f"task {task.id} is a {task.stage} task, not {stage.value}; use POST .../tasks/{task.id}/"
            f"{'submit' if task.stage == 'annotate' else task.stage}",
            code="wrong_stage",
        )
    try:
        dec = Decision(decision)
    except ValueError:
        raise InvalidInput(
            f"decision {decision!r} is not one of {[d.value for d in Decision]}", detail={"field": "decision"}
        ) from None
    records = tuple(ErrorRecord.from_dict(e) for e in errors)
    cfg = workflow_config(project)
    tax = taxonomy(project)
    check_decision(dec, records, tax)
    st = _lock_state(session, task.item_id)
    if st.stage != stage.value:
        raise Conflict(f"item {task.item_id} is at stage {st.stage}, not {stage.value}", code="wrong_stage")
    hist = history_of(session, task.item_id)
    t = decide(
        cfg,
        hist,
        user=actor.username,
        stage=stage,
        decision=dec,
        at=clock.now(),
        errors=records,
        taxonomy=tax,
    )
    _finish(task, actor)
    _record(
        session,
        actor,
        task,
        stage=stage,
        decision=dec,
        to_stage=t.to_stage.value,
        errors=records,
        comment=comment,
    )
    _apply(session, st, task, t)
    _audit_decision(session, actor, task, dec.value, t.to_stage.value, len(records))
    return Outcome(task, t.to_stage.value)


def last_rejection(session: Session, item_id: int) -> dict[str, Any] | None:
    """The most recent decision that sent the item back, with its error records (shown on rework)."""
    hist = history_of(session, item_id, with_errors=True)
    for e in reversed(hist):
        if e.stage is Stage.ANNOTATE:
            return None
        if e.errors:
            return e.to_dict()
    return None


def sample_audit(
    session: Session, actor: Actor, access: ProjectAccess, *, seed: int | None = None
) -> dict[str, Any]:
    """Draw the audit sample among done items not sampled before, stratified by annotator
    (``audit_fraction`` of each annotator's items, at least one each), and open audit tasks."""
    project = access.project
    cfg = workflow_config(project)
    if cfg.audit_fraction <= 0:
        raise Conflict("this project's workflow has audit_fraction 0; set it first", code="audit_disabled")
    rows = list(
        session.scalars(
            select(ItemWorkflow).where(
                ItemWorkflow.project_id == project.id,
                ItemWorkflow.stage == Stage.DONE.value,
                ItemWorkflow.is_gold.is_(False),
                ItemWorkflow.audit_selected.is_(False),
            )
        )
    )
    population: dict[str, str] = {}
    for st in rows:
        annotator = session.scalar(
            select(Review.username)
            .where(Review.item_id == st.item_id, Review.stage == Stage.ANNOTATE.value)
            .order_by(Review.id.desc())
            .limit(1)
        )
        if annotator is not None:
            population[str(st.item_id)] = annotator
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(64))
    chosen = select_audit_sample(population, cfg.audit_fraction, rng)
    now = clock.now()
    by_state = {st.item_id: st for st in rows}
    per_annotator: dict[str, int] = {}
    for item_id in chosen:
        st = by_state[int(item_id)]
        st.audit_selected = True
        st.stage = Stage.AUDIT.value
        st.updated_at = now
        per_annotator[population[item_id]] = per_annotator.get(population[item_id], 0) + 1
        session.add(
            Task(
                project_id=project.id,
                item_id=st.item_id,
                stage=Stage.AUDIT.value,
                state=TASK_OPEN,
                created_at=now,
            )
        )
    session.flush()
    audit.record(
        session,
        event(
            actor,
            "audit.sample",
            object_type="project",
            object_id=str(project.id),
            project_id=project.id,
            detail={"population": len(population), "sampled": len(chosen), "per_annotator": per_annotator},
        ),
    )
    return {
        "population": len(population),
        "sampled": len(chosen),
        "per_annotator": per_annotator,
        "item_ids": [int(i) for i in chosen],
    }


def mark_gold(
    session: Session, actor: Actor, access: ProjectAccess, item: Item, *, body: dict[str, Any]
) -> AnnotationSet:
    """Make ``item`` a gold item with ``body`` as its reference answer (a new version of the
    ``gold`` set). Its open workflow tasks are cancelled; annotators get it at the gold rate."""
    now = clock.now()
    st = session.get(ItemWorkflow, item.id)
    if st is None:
        st = ItemWorkflow(
            item_id=item.id,
            project_id=item.project_id,
            stage="gold",
            overlap_k=1,
            is_gold=True,
            updated_at=now,
        )
        session.add(st)
    elif not st.is_gold:
        st.is_gold = True
        st.stage = "gold"
        st.updated_at = now
        for t in session.scalars(
            select(Task).where(
                Task.item_id == item.id, Task.is_gold.is_(False), Task.state.in_((TASK_OPEN, TASK_CLAIMED))
            )
        ):
            t.state = TASK_CANCELLED
    current = load_set(session, item.id, SetRef(SET_GOLD))
    stored = save_set(
        session,
        actor,
        item,
        SetRef(SET_GOLD),
        body=body,
        if_match=current.version or None,
        stage="gold",
        task_id=None,
    )
    return stored.aset


def gold_scores(session: Session, project_id: int) -> list[dict[str, Any]]:
    rows = list(
        session.scalars(
            select(GoldScoreRow).where(GoldScoreRow.project_id == project_id).order_by(GoldScoreRow.id)
        )
    )
    names = usernames(session, [r.user_id for r in rows])
    return [
        {
            "item_id": r.item_id,
            "task_id": r.task_id,
            "user": names.get(r.user_id or 0, ""),
            "score": r.score,
            "passed": r.passed,
            "detail": r.detail,
            "at": r.at.isoformat(),
        }
        for r in rows
    ]
