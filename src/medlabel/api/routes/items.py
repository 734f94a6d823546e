"""Items: imports, listing and metadata, pixels (rendered, raw, Deep Zoom), the quarantine,
de-identification settings and the pseudonym map. Thin: parse, call a service, return."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, computed_field
from starlette.concurrency import run_in_threadpool

from medlabel.accounts.service import Actor
from medlabel.api import uploads
from medlabel.api.deps import (
    ActorDep,
    ItemAccess,
    PixelAccess,
    RuntimeDep,
    SessionDep,
    global_permission,
    item_permission,
    item_pixels,
    project_permission,
)
from medlabel.api.schemas import JobRead
from medlabel.items import blob_sweep, pixels
from medlabel.items import service as items
from medlabel.items.ingest import new_upload_dir
from medlabel.items.models import Item
from medlabel.items.unpack import IngestLimits
from medlabel.projects.service import ProjectAccess
from medlabel.security.rbac import Permission

router = APIRouter(tags=["items"])

CanImport = Annotated[ProjectAccess, Depends(project_permission(Permission.ITEM_IMPORT))]
CanList = Annotated[ProjectAccess, Depends(project_permission(Permission.ITEM_READ))]
CanReadProject = Annotated[ProjectAccess, Depends(project_permission(Permission.PROJECT_READ))]
CanUpdate = Annotated[ProjectAccess, Depends(project_permission(Permission.PROJECT_UPDATE))]
CanRead = Annotated[ItemAccess, Depends(item_permission(Permission.ITEM_READ))]
Pixels = Annotated[PixelAccess, Depends(item_pixels(Permission.ITEM_READ))]
PhiReader = Annotated[Actor, Depends(global_permission(Permission.PHI_READ))]
Admin = Annotated[Actor, Depends(global_permission(Permission.USER_MANAGE))]


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    kind: str
    name: str
    status: str
    source_format: str
    modality: str
    width: int
    height: int
    frames: int
    patient_pseudonym: str
    study_uid: str
    series_uid: str
    meta: dict[str, Any]
    created_at: datetime
    import_job_id: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def spacing(self) -> list[float] | None:
        """mm: ``[slice, row, column]`` for volumes, ``[row, column]`` for images."""
        value = self.meta.get("spacing")
        return [float(v) for v in value] if isinstance(value, list) else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def presets(self) -> list[str]:
        """Window preset names that suit the modality (``preset=`` of the rendered route)."""
        value = self.meta.get("presets")
        return [str(v) for v in value] if isinstance(value, list) else []


class ItemPage(BaseModel):
    items: list[ItemRead]
    total: int
    offset: int
    limit: int


class QuarantineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    item_id: int
    reasons: list[str]
    status: str
    created_at: datetime
    decided_by: int | None
    decided_at: datetime | None
    note: str


class QuarantineDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)


class DeidRead(BaseModel):
    enabled: bool
    options: list[str]
    reason: str


class DeidUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool
    options: list[str] | None = None
    reason: str = Field(default="", max_length=2000)


class PseudonymRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    original_patient_id: str
    issuer: str
    pseudonym: str
    created_at: datetime


# ---------------------------------------------------------------- imports


@router.post(
    "/projects/{project_id}/imports",
    response_model=JobRead,
    status_code=202,
    openapi_extra=uploads.OPENAPI_BODY,
)
async def import_files(
    request: Request, access: CanImport, actor: ActorDep, session: SessionDep, rt: RuntimeDep
) -> JobRead:
    """Upload files and/or ZIP archives (multipart, field ``files`` repeated); an
    ``items.import`` job imports them (202 + the job). The job's result is the per-file report.

    Access is checked before a byte of the body is read; the body is then streamed to the upload
    folder part by part (``medlabel.api.uploads``) with the database released meanwhile."""
    await run_in_threadpool(session.commit)  # no transaction (SQLite write turn) during the upload
    upload = await run_in_threadpool(new_upload_dir, rt.settings.home)
    try:
        await uploads.receive_files(
            request.headers.get("content-type", ""),
            request.stream(),
            upload,
            max_files=IngestLimits.from_env().max_files,
        )

        def queue() -> JobRead:
            job = items.start_import(
                session, actor, project=access.project, upload_dir=upload, home=rt.settings.home
            )
            session.commit()
            return JobRead.model_validate(job)

        job = await run_in_threadpool(queue)
    except BaseException:
        shutil.rmtree(upload, ignore_errors=True)
        raise
    await run_in_threadpool(rt.enqueue, job.id)
    return job


# ---------------------------------------------------------------- items


@router.get("/projects/{project_id}/items", response_model=ItemPage)
def list_items(
    access: CanList,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Literal["ready", "quarantined", "rejected", "all"] = "ready",
) -> ItemPage:
    """Items of the project, oldest first (``status=all`` for every status)."""
    page = items.list_items(
        session,
        project_id=access.project.id,
        offset=offset,
        limit=limit,
        status=None if status == "all" else status,
    )
    return ItemPage(
        items=[ItemRead.model_validate(i) for i in page.items],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


@router.get("/items/{item_id}", response_model=ItemRead)
def get_item(access: CanRead) -> ItemRead:
    """Metadata: kind, size, frames, spacing, modality, window presets."""
    return ItemRead.model_validate(access.item)


def _pixel_response(resp: pixels.PixelResponse | None, etag: str, *, not_modified: bool = False) -> Response:
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
    if not_modified or resp is None:
        return Response(status_code=304, headers=headers)
    return Response(content=resp.body, media_type=resp.media_type, headers={**headers, **resp.headers})


def _visible(px: PixelAccess) -> Item:
    pixels.check_viewable(px.item, px.permissions)
    return px.item


async def _note_read(px: PixelAccess, what: str) -> None:
    """Batched ``image.read`` audit (``pixels.read_event``): a write only once a minute per user
    and item, in its own short transaction."""
    event = pixels.read_event(px.actor, px.item, what, home=px.runtime.settings.home)
    if event is not None:
        await run_in_threadpool(pixels.record_read, px.runtime.sessions, event)


# Pixel routes are async: a request whose access facts and response are cached is answered on
# the event loop without a thread hop or a query; decoding and rendering run in the thread pool.


@router.get("/items/{item_id}/frames/{n}/rendered", response_class=Response)
async def rendered_frame(
    n: int,
    px: Pixels,
    window: float | None = None,
    level: float | None = None,
    preset: str | None = None,
    format: Literal["png", "jpeg", "webp"] = "png",
    quality: Annotated[int, Query(ge=1, le=100)] = 90,
    size: Annotated[int | None, Query(ge=1, le=8192)] = None,
    plane: Literal["axial", "coronal", "sagittal"] = "axial",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Frame (or plane) ``n`` windowed to 8 bit: ``window``/``level`` or a ``preset``, else the
    header's window or an automatic one. ETag + 304 on ``If-None-Match``."""
    item = _visible(px)
    params = pixels.RenderParams(n, window, level, preset, format, quality, size, plane)
    params.validate()
    etag = pixels.etag_for(item, "rendered", params)
    home = px.runtime.settings.home
    if pixels.etag_matches(if_none_match, etag):
        await _note_read(px, "rendered")
        return _pixel_response(None, etag, not_modified=True)
    body = pixels.cached_body(home, etag)
    if body is not None:
        resp = pixels.PixelResponse(body, pixels.media_type(params), {})
    else:
        resp = await run_in_threadpool(
            pixels.rendered_frame, px.reads, px.runtime.blobs, home, item, params, etag
        )
    await _note_read(px, "rendered")
    return _pixel_response(resp, etag)


@router.get("/items/{item_id}/frames/{n}/raw", response_class=Response)
async def raw_frame(
    n: int,
    px: Pixels,
    plane: Literal["axial", "coronal", "sagittal"] = "axial",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Rescaled (modality) values of frame/plane ``n`` as little-endian int16 or float32
    (``X-Dtype``, ``X-Shape`` rows,columns, ``X-Spacing``; ``X-Invert: 1`` when the display
    inverts the grey scale: MONOCHROME1 or Presentation LUT Shape INVERSE)."""
    item = _visible(px)
    params = pixels.RenderParams(frame=n, plane=plane)
    etag = pixels.etag_for(item, "raw", params)
    home = px.runtime.settings.home
    if pixels.etag_matches(if_none_match, etag):
        await _note_read(px, "raw")
        return _pixel_response(None, etag, not_modified=True)
    resp = await run_in_threadpool(pixels.raw_frame, px.reads, px.runtime.blobs, home, item, params)
    await _note_read(px, "raw")
    return _pixel_response(resp, etag)


@router.get("/items/{item_id}/dzi", response_class=Response)
async def dzi(px: Pixels) -> Response:
    """The Deep Zoom descriptor (XML) of a slide."""
    item = _visible(px)
    body = pixels.dzi_descriptor(item)
    await _note_read(px, "dzi")
    return Response(
        content=body,
        media_type="application/xml",
        headers={"ETag": pixels.etag_for(item, "dzi", ()), "Cache-Control": "private, max-age=86400"},
    )


@router.get("/items/{item_id}/tiles/{level}/{col}_{row}.jpeg", response_class=Response)
async def tile(
    level: int,
    col: int,
    row: int,
    px: Pixels,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One Deep Zoom tile (JPEG)."""
    item = _visible(px)
    etag = pixels.etag_for(item, "tile", (level, col, row))
    home = px.runtime.settings.home
    if pixels.etag_matches(if_none_match, etag):
        await _note_read(px, "tile")
        return _pixel_response(None, etag, not_modified=True)
    body = pixels.cached_body(home, etag)
    if body is not None:
        resp = pixels.PixelResponse(body, "image/jpeg", {})
    else:
        resp = await run_in_threadpool(pixels.dzi_tile, px.runtime.blobs, home, item, level, col, row, etag)
    await _note_read(px, "tile")
    return _pixel_response(resp, etag)


# ---------------------------------------------------------------- quarantine


@router.get("/projects/{project_id}/quarantine", response_model=list[QuarantineRead])
def list_quarantine(
    access: CanImport,
    session: SessionDep,
    status: Literal["pending", "cleared", "rejected", "all"] = "pending",
) -> list[QuarantineRead]:
    """Images held on import (burned-in text risk), with the reasons."""
    rows = items.list_quarantine(
        session, project_id=access.project.id, status=None if status == "all" else status
    )
    return [QuarantineRead.model_validate(r) for r in rows]


@router.post("/projects/{project_id}/quarantine/{qid}/clear", response_model=QuarantineRead)
def clear_quarantine(
    qid: int, body: QuarantineDecision, access: CanImport, actor: ActorDep, session: SessionDep
) -> QuarantineRead:
    """Admit a held image (its item becomes ready)."""
    e = items.decide_quarantine(
        session, actor, project_id=access.project.id, qid=qid, decision="clear", note=body.note
    )
    return QuarantineRead.model_validate(e)


@router.post("/projects/{project_id}/quarantine/{qid}/reject", response_model=QuarantineRead)
def reject_quarantine(
    qid: int,
    body: QuarantineDecision,
    access: CanImport,
    actor: ActorDep,
    session: SessionDep,
    rt: RuntimeDep,
) -> QuarantineRead:
    """Keep a held image out for good (its item becomes rejected; its stored files that no other
    item uses are deleted once the decision is committed)."""
    e = items.decide_quarantine(
        session,
        actor,
        project_id=access.project.id,
        qid=qid,
        decision="reject",
        note=body.note,
        blobs=rt.blobs,
    )
    return QuarantineRead.model_validate(e)


# ---------------------------------------------------------------- de-identification, PHI


@router.get("/projects/{project_id}/deid", response_model=DeidRead)
def get_deid(access: CanReadProject) -> DeidRead:
    """The project's de-identification settings."""
    s = items.get_deid(access.project)
    return DeidRead(enabled=s.enabled, options=list(s.options), reason=s.reason)


@router.patch("/projects/{project_id}/deid", response_model=DeidRead)
def update_deid(body: DeidUpdate, access: CanUpdate, actor: ActorDep, session: SessionDep) -> DeidRead:
    """Change options (managers); turning de-identification off is for administrators only,
    with a ``reason``. Audited."""
    s = items.update_deid(
        session, actor, project=access.project, enabled=body.enabled, options=body.options, reason=body.reason
    )
    return DeidRead(enabled=s.enabled, options=list(s.options), reason=s.reason)


@router.get("/admin/pseudonyms", response_model=list[PseudonymRead])
def list_pseudonyms(
    actor: PhiReader, session: SessionDep, project_id: Annotated[int, Query(ge=1)]
) -> list[PseudonymRead]:
    """The project's map of original Patient IDs to pseudonyms (PHI; administrators; audited)."""
    return [
        PseudonymRead.model_validate(r) for r in items.list_pseudonyms(session, actor, project_id=project_id)
    ]


# ---------------------------------------------------------------- blob store


class BlobSweepIn(BaseModel):
    older_than_hours: float = Field(
        24.0, le=24 * 3650, description="Only blobs, temporary files and empty directories older than this."
    )
    dry_run: bool = Field(False, description="Delete nothing; the job's result says what would go.")


@router.post("/admin/blobs/sweep", response_model=JobRead, status_code=202)
def sweep_blobs(body: BlobSweepIn, actor: Admin, session: SessionDep, rt: RuntimeDep) -> JobRead:
    """Queue a sweep of the blob store (administrators): stored files no row names, older than
    ``older_than_hours`` (at least 1), stale temporary files and empty directories are deleted.
    The job touches nothing while an import is queued or running; its result is the report."""
    job = blob_sweep.start_sweep(
        session, actor, older_than=timedelta(hours=body.older_than_hours), dry_run=body.dry_run
    )
    session.commit()
    rt.enqueue(job.id)
    return JobRead.model_validate(job)
