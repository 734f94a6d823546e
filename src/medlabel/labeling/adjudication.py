"""Overlap items: seed the main set from the consensus of the blind copies, and show the copies
to whoever adjudicates them.

When the last of an overlap item's ``k`` annotate slots is submitted, :func:`seed_consensus`
builds the consensus of the ``k`` work copies (:mod:`medlabel.annotations.consensus`: findings a
strict majority drew, answers a strict majority gave) and saves it as the first version of the
item's main set, which then goes to review like any other item. The reviewer adjudicates with
:func:`copies`: every copy, the consensus, the findings only a minority drew and the questions
without a majority, then edits the main set and accepts, or rejects with error records.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medlabel.accounts.service import Actor
from medlabel.annotations.consensus import Consensus, build_consensus
from medlabel.annotations.model import AnnotationSet
from medlabel.audit import service as audit
from medlabel.errors import Conflict
from medlabel.items.models import Item
from medlabel.labeling.annotation_service import SetRef, load_set, save_set
from medlabel.labeling.common import event
from medlabel.labeling.models import SET_MAIN, SET_WORK, TASK_CLAIMED, TASK_DONE, TASK_OPEN, Task
from medlabel.projects.service import ProjectAccess
from medlabel.storage.models import User
from medlabel.workflow import Stage

__all__ = ["overlap_copies", "seed_consensus", "copies"]


def overlap_copies(session: Session, item_id: int) -> dict[str, AnnotationSet]:
    """Username → work copy of every submitted overlap slot of the item, in slot order."""
    rows = session.execute(
        select(Task.overlap_slot, User.id, User.username)
        .join(User, User.id == Task.completed_by)
        .where(
            Task.item_id == item_id,
            Task.stage == Stage.ANNOTATE.value,
            Task.overlap_slot.is_not(None),
            Task.state == TASK_DONE,
        )
        .order_by(Task.overlap_slot, Task.id)
    ).all()
    out: dict[str, AnnotationSet] = {}
    for _slot, uid, username in rows:
        if username not in out:
            out[username] = load_set(session, item_id, SetRef(SET_WORK, int(uid)))
    return out


def seed_consensus(session: Session, actor: Actor, item: Item) -> Consensus | None:
    """Save the consensus of the item's overlap copies as a new version of its main set (unless
    the main set already has content). Returns the consensus, or ``None`` without copies."""
    found = overlap_copies(session, item.id)
    if not found:
        return None
    consensus = build_consensus(found)
    main = load_set(session, item.id, SetRef(SET_MAIN))
    if main.version == 0:
        body = consensus.annotation_set(str(item.id), main.schema_version).to_dict()
        save_set(
            session,
            actor,
            item,
            SetRef(SET_MAIN),
            body={"annotations": body["annotations"], "answers": body["answers"]},
            if_match=None,
            stage="consensus",
            task_id=None,
            draft=True,
            stamp=False,
        )
    audit.record(
        session,
        event(
            actor,
            "annotation.consensus",
            object_type="item",
            object_id=str(item.id),
            project_id=item.project_id,
            detail={
                "copies": list(consensus.copies),
                "quorum": consensus.quorum,
                "kept": len(consensus.kept),
                "minority": len(consensus.minority),
                "disputed_questions": list(consensus.disputed_questions),
                "seeded": main.version == 0,
            },
        ),
    )
    return consensus


def copies(session: Session, actor: Actor, access: ProjectAccess, item: Item) -> dict[str, Any]:
    """What an adjudicator needs (callers hold ``quality.read``): each copy, the consensus and
    the disagreements. 409 while slots are still being annotated (the copies are blind until then)."""
    pending = session.scalar(
        select(Task.id)
        .where(
            Task.item_id == item.id,
            Task.stage == Stage.ANNOTATE.value,
            Task.overlap_slot.is_not(None),
            Task.state.in_((TASK_OPEN, TASK_CLAIMED)),
        )
        .limit(1)
    )
    if pending is not None:
        raise Conflict(
            f"item {item.id} still has overlap slots being annotated; its copies stay blind until all are in",
            code="overlap_pending",
        )
    found = overlap_copies(session, item.id)
    if not found:
        raise Conflict(f"item {item.id} is not an overlap item (no submitted overlap copies)", code="not_overlap")
    consensus = build_consensus(found)
    audit.record(
        session,
        event(
            actor,
            "annotation.read",
            object_type="item",
            object_id=str(item.id),
            project_id=item.project_id,
            detail={"set": "copies", "owners": list(found)},
        ),
    )
    return {
        "item_id": item.id,
        "copies": [{"annotator": name, **aset.to_dict()} for name, aset in found.items()],
        "consensus": consensus.to_dict(),
    }
