"""Upload sessions: create, PUT files one by one (each prepared at once), list, abandon, commit.
Thin: parse, call ``medlabel.items.upload_sessions``, return."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from medlabel.api.deps import (
    ActorDep,
    RuntimeDep,
    SessionDep,
    UploadAccess,
    UploadPut,
    project_permission,
    read_sessions,
    upload_permission,
    upload_put,
)
from medlabel.api.schemas import JobRead
from medlabel.errors import UnsupportedMedia
from medlabel.items import upload_sessions as service
from medlabel.projects.service import ProjectAccess
from medlabel.security.rbac import Permission

router = APIRouter(tags=["uploads"])

CanImport = Annotated[ProjectAccess, Depends(project_permission(Permission.ITEM_IMPORT))]
Upload = Annotated[UploadAccess, Depends(upload_permission(Permission.ITEM_IMPORT))]
UploadFile = Annotated[UploadPut, Depends(upload_put(Permission.ITEM_IMPORT))]

_BODY_TYPES = ("application/dicom", "application/octet-stream")
_BATCH = 4 << 20  # bytes written per thread hop
_IN_MEMORY = 64 << 20  # bytes of one file received in memory; beyond, spooled to disk

#: The PUT body in the OpenAPI document.
_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _BODY_TYPES},
    }
}


class UploadSessionRead(BaseModel):
    id: str
    project_id: int
    status: str
    expires_at: datetime
    job_id: str | None = None


class UploadFileRead(BaseModel):
    """One file's result: ``prepared``, ``duplicate``, ``error`` (with ``code`` and ``message``)
    or ``skipped``. ``sop_instance_uid`` is the de-identified one."""

    name: str
    status: str
    message: str = ""
    code: str = ""
    warnings: list[str] = []
    sop_instance_uid: str = ""


class UploadSessionDetail(UploadSessionRead):
    files: list[UploadFileRead]
    counts: dict[str, int]


def _read(ref: service.SessionRef) -> UploadSessionRead:
    return UploadSessionRead(
        id=ref.id, project_id=ref.project_id, status=ref.status, expires_at=ref.expires_at, job_id=ref.job_id
    )


@router.post("/projects/{project_id}/uploads", response_model=UploadSessionRead, status_code=201)
def create_upload(access: CanImport, actor: ActorDep, session: SessionDep, rt: RuntimeDep) -> UploadSessionRead:
    """Open an upload session (yours alone) for files PUT one by one, then committed as one
    import. It expires ``MEDLABEL_UPLOAD_SESSION_TTL_HOURS`` (24) after its last file."""
    row = service.create_session(session, actor, project=access.project, home=rt.settings.home)
    return _read(service.session_ref(row))


@router.get("/projects/{project_id}/uploads/{upload_id}", response_model=UploadSessionDetail)
def get_upload(up: Upload, rt: RuntimeDep) -> UploadSessionDetail:
    """The session and the result of every file PUT so far (by name)."""
    files = service.list_files(up.upload, home=rt.settings.home)
    counts: dict[str, int] = {}
    for f in files:
        counts[f.status] = counts.get(f.status, 0) + 1
    return UploadSessionDetail(
        **_read(up.upload).model_dump(),
        files=[UploadFileRead(**f.as_dict()) for f in files],
        counts=counts,
    )


@router.delete("/projects/{project_id}/uploads/{upload_id}", status_code=204)
def abandon_upload(up: Upload, session: SessionDep, rt: RuntimeDep) -> Response:
    """Abandon the session: its staging folder and its row are removed (409 while committing)."""
    service.abandon(session, up.upload, home=rt.settings.home)
    return Response(status_code=204)


@router.put(
    "/projects/{project_id}/uploads/{upload_id}/files/{name}",
    response_model=UploadFileRead,
    openapi_extra=_RAW_BODY,
)
async def put_upload_file(name: str, request: Request, up: UploadFile, rt: RuntimeDep) -> UploadFileRead:
    """One file as the raw body (``application/dicom`` or ``application/octet-stream``). It is
    prepared at once (sniffed, read, pixel-checked, de-identified with the project's settings)
    and the answer is its result; the original is not kept. The same name again replaces that
    file's result (resume after a dropped connection). 409 once the session is committed."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in _BODY_TYPES:
        raise UnsupportedMedia(
            f"Content-Type {ctype or '(none)'!r} is not accepted here; send the file as "
            "application/dicom or application/octet-stream"
        )
    service.check_name(name)

    service.receive_path(up.upload, home=rt.settings.home)  # 409 when no longer open
    # a file of up to _IN_MEMORY bytes is received and read in memory (no disk write of the
    # original at all); a bigger one goes to the session's incoming/ folder in batches
    chunks: list[bytes] = []
    size = 0
    spill: IO[bytes] | None = None
    original: Path | None = None
    try:
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > _IN_MEMORY and spill is None:
                original = service.receive_path(up.upload, home=rt.settings.home)
                spill = await run_in_threadpool(open, original, "xb")
            if spill is not None and sum(map(len, chunks)) >= _BATCH:
                await run_in_threadpool(spill.writelines, chunks)
                chunks = []
        if spill is not None:
            await run_in_threadpool(spill.writelines, chunks)
            await run_in_threadpool(spill.close)
            spill = None
        result = await run_in_threadpool(
            service.put_file,
            up.upload,
            name,
            original if original is not None else b"".join(chunks),
            settings=up.settings,
            sessions=rt.sessions,
            secret_key=rt.settings.secret_key,
            home=rt.settings.home,
            read_sessions=read_sessions(rt),
            blobs=rt.blobs,
        )
    finally:
        if spill is not None:
            spill.close()
        if original is not None:
            original.unlink(missing_ok=True)
    return UploadFileRead(**result.as_dict())


@router.post(
    "/projects/{project_id}/uploads/{upload_id}/commit", response_model=JobRead, status_code=202
)
async def commit_upload(up: Upload, actor: ActorDep, session: SessionDep, rt: RuntimeDep) -> JobRead:
    """Import what was prepared: an ``items.import_session`` job (202 + the job) groups and
    stores the files as a multipart import does; its result is the import report. Once only
    (409 after; again after a failed job); 422 when no file was PUT."""

    def queue() -> JobRead:
        job = service.commit(session, actor, up.upload, home=rt.settings.home)
        session.commit()
        return JobRead.model_validate(job)

    job = await run_in_threadpool(queue)
    await run_in_threadpool(rt.enqueue, job.id)
    return job
