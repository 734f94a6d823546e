"""Tables of the items domain: items, and what ingest keeps beside them (studies, DICOM
instances, the quarantine, the pseudonym map and per-patient date offsets)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medlabel.storage.db import Base, UTCDateTime

__all__ = ["Item", "Study", "Instance", "QuarantineEntry", "PseudonymEntry", "DateOffsetEntry", "UploadSession"]


class Item(Base):
    """One annotatable unit.

    ``kind`` is ``image`` (2D, maybe multi-frame), ``volume`` (a series stacked along the slice
    normal) or ``slide`` (whole-slide pyramid). ``dedup_key`` identifies the content inside the
    project (de-identified Series/SOP Instance UID, or a content hash) so a re-import is a no-op.
    ``status`` is ``ready``, ``quarantined`` (held for a person to clear) or ``rejected``.
    ``blob_sha256`` names the stored file of single-file items (NIfTI, PNG, slide); DICOM items
    list their files in ``instances``.
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
    source_format: Mapped[str] = mapped_column(String(16), default="", server_default="")
    blob_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Study(Base):
    """A de-identified study of a project (Study Instance UID after UID remapping)."""

    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("project_id", "study_uid", name="uq_study_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    patient_pseudonym: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Instance(Base):
    """One stored (de-identified) DICOM file of an item, in slice order."""

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("project_id", "sop_instance_uid", name="uq_instance_sop"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), nullable=True)
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    slice_index: Mapped[int] = mapped_column(Integer, default=0)
    position: Mapped[float | None] = mapped_column(Float, nullable=True)
    frames: Mapped[int] = mapped_column(Integer, default=1)


class QuarantineEntry(Base):
    """An image held back on import (burned-in text risk) until a manager clears or rejects it."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    blob_sha256: Mapped[str] = mapped_column(String(64))
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


class PseudonymEntry(Base):
    """Original (Patient ID, Issuer) → pseudonym, per project; unique both ways. PHI: admins only."""

    __tablename__ = "pseudonyms"
    __table_args__ = (
        UniqueConstraint("project_id", "original_patient_id", "issuer", name="uq_pseudonym_original"),
        UniqueConstraint("project_id", "pseudonym", name="uq_pseudonym_value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    original_patient_id: Mapped[str] = mapped_column(String(200))
    issuer: Mapped[str] = mapped_column(String(200), default="")
    pseudonym: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DateOffsetEntry(Base):
    """The date shift (days) applied to one pseudonymised patient of a project."""

    __tablename__ = "date_offsets"
    __table_args__ = (UniqueConstraint("project_id", "pseudonym", name="uq_date_offset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    pseudonym: Mapped[str] = mapped_column(String(64))
    days: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UploadSession(Base):
    """An upload session: files PUT one by one are prepared (de-identified) at once into its
    staging folder, then committed as one import job. Belongs to its creator and project.

    ``status``: ``open`` (takes files), ``committed`` (its job is queued or running), ``failed``
    (the job failed; may be committed again), ``done``. ``expires_at`` moves forward with every
    file; past it the session and its staging folder are removed.
    """

    __tablename__ = "upload_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
