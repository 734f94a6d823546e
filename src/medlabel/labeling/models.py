"""Tables of the labeling domain (revision ``0003_labeling``).

=========================  =================================================================
table                      what
=========================  =================================================================
label_schemas              one row per schema version of a project (the evolved document)
guidelines                 Markdown guidelines, versioned per project
guideline_acks             who acknowledged which guideline version, when
annotation_sets            the current annotations of an item: ``main`` (consensus/final),
                           ``work`` (one annotator's blind copy: overlap slot or gold answer),
                           ``gold`` (the reference answer)
annotation_set_versions    every saved version of every set (who, when, stage, derived_from)
item_workflow              an item's stage, who gets its rework, how often it was done
tasks                      a unit of work at one stage, with its lease and active time
reviews                    every decision taken on an item (submit, accept, reject, pass…)
review_errors              the error records a rejection carries
gold_scores                an annotator's answer on a gold item scored against the reference
=========================  =================================================================
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medlabel.storage.db import Base, UTCDateTime

__all__ = [
    "LabelSchemaVersion",
    "Guideline",
    "GuidelineAck",
    "AnnotationSetRow",
    "AnnotationSetVersion",
    "ItemWorkflow",
    "Task",
    "Review",
    "ReviewError",
    "GoldScoreRow",
    "SET_MAIN",
    "SET_WORK",
    "SET_GOLD",
    "TASK_OPEN",
    "TASK_CLAIMED",
    "TASK_DONE",
    "TASK_CANCELLED",
]

SET_MAIN = "main"
SET_WORK = "work"
SET_GOLD = "gold"

TASK_OPEN = "open"
TASK_CLAIMED = "claimed"
TASK_DONE = "done"
TASK_CANCELLED = "cancelled"


class LabelSchemaVersion(Base):
    __tablename__ = "label_schemas"
    __table_args__ = (UniqueConstraint("project_id", "version", name="uq_label_schema_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Guideline(Base):
    __tablename__ = "guidelines"
    __table_args__ = (UniqueConstraint("project_id", "version", name="uq_guideline_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    markdown: Mapped[str] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GuidelineAck(Base):
    __tablename__ = "guideline_acks"
    __table_args__ = (UniqueConstraint("project_id", "user_id", "version", name="uq_guideline_ack"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    acknowledged_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AnnotationSetRow(Base):
    """The current state of one annotation set. ``owner_key`` is the owner's user id for ``work``
    sets and 0 otherwise (a NOT NULL key so the unique constraint holds on every backend)."""

    __tablename__ = "annotation_sets"
    __table_args__ = (UniqueConstraint("item_id", "kind", "owner_key", name="uq_annotation_set"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    owner_key: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AnnotationSetVersion(Base):
    __tablename__ = "annotation_set_versions"
    __table_args__ = (UniqueConstraint("set_id", "version", name="uq_annotation_set_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("annotation_sets.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    derived_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(16))
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    saved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    saved_by_name: Mapped[str] = mapped_column(String(200), default="")
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ItemWorkflow(Base):
    """Where an item is in the workflow. ``rework_user_id``: the annotator a rejection returns it to."""

    __tablename__ = "item_workflow"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16), index=True)
    overlap_k: Mapped[int] = mapped_column(Integer, default=1)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    rework_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    done_count: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    audit_selected: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Task(Base):
    """One unit of work. ``state``: open → claimed → done (or cancelled). A claimed task whose
    lease has passed is open again for claiming. ``reserved``: only ``assignee_id`` may claim it
    (rework, manager assignment, a gold task)."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    reserved: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    overlap_slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    active_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    claim_count: Mapped[int] = mapped_column(Integer, default=0)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


# The claim query's order (priority first, then age) straight from an index: no sort per claim.
Index(
    "ix_tasks_pool",
    Task.project_id,
    Task.stage,
    Task.state,
    Task.priority.desc(),
    Task.created_at,
    Task.id,
)


class Review(Base):
    """One decision on an item (annotate ``submit`` included), i.e. one workflow history event."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    username: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(24))
    to_stage: Mapped[str] = mapped_column(String(16))
    annotation_version: Mapped[int] = mapped_column(Integer, default=0)
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReviewError(Base):
    __tablename__ = "review_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    annotation_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    x: Mapped[float | None] = mapped_column(Float, nullable=True)
    y: Mapped[float | None] = mapped_column(Float, nullable=True)
    frame: Mapped[int | None] = mapped_column(Integer, nullable=True)


class GoldScoreRow(Base):
    __tablename__ = "gold_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    score: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
