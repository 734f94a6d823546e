"""The ``items`` table. Ingest adds studies, instances, quarantine and the identity maps in
its own module; labeling refers to items by id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medlabel.storage.db import Base, UTCDateTime

__all__ = ["Item"]


class Item(Base):
    """One annotatable unit.

    ``kind`` is ``image`` (2D, maybe multi-frame), ``volume`` (a series stacked along the slice
    normal) or ``slide`` (whole-slide pyramid). ``dedup_key`` identifies the content inside the
    project (de-identified Series/SOP Instance UID, or a content hash) so a re-import is a no-op.
    ``status`` is ``ready`` or ``quarantined`` (held for a person to clear).
    """

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("project_id", "dedup_key", name="uq_item_dedup"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(300), default="")
    dedup_key: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="ready", index=True)
    patient_pseudonym: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[float] = mapped_column(Float, default=0.0, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    import_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
