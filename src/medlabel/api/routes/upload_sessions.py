"""Upload sessions: create, PUT files one by one or POST them in batches (each prepared at once),
list, abandon, commit. Thin: parse, call ``medlabel.items.upload_sessions``, return; the batch
route also paces the preparation of its parts on threads while it receives the next ones."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from medlabel.api import uploads
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
from medlabel.errors import MedlabelError, UnsupportedMedia
from medlabel.items import upload_sessions as service
from medlabel.items.unpack import IngestLimits
from medlabel.projects.service import ProjectAccess
from medlabel.runtime import Runtime
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


class UploadBatchRead(BaseModel):
    """The result of every ``files`` part of a batch, in part order, and their counts by status."""

    files: list[UploadFileRead]
    counts: dict[str, int]


class UploadSessionDetail(UploadSessionRead):
    files: list[UploadFileRead]
    counts: dict[str, int]


def _counts(files: list[service.FileResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in files:
        counts[f.status] = counts.get(f.status, 0) + 1
    return counts


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
    return UploadSessionDetail(
        **_read(up.upload).model_dump(),
        files=[UploadFileRead(**f.as_dict()) for f in files],
        counts=_counts(files),
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


# ---------------------------------------------------------------- batches

_PARTS_HELD = 8  # parts of one request received and waiting for, or in, their preparation
_BYTES_HELD = 32 << 20  # bytes of those (one bigger part goes alone)
_RECORD_EVERY = 16  # prepared files recorded per journal write (the rest at the end)
#: Threads of a server process that prepare batch parts. One: the work is GIL-bound, and a
#: second thread (with the event loop and the fsync threads) cost ≈ 1 ms more server CPU a
#: file in GIL hand-offs (300-slice batches, 2 CPUs); other processes use the other CPUs.
_PREPARERS = 1

#: The batch body in the OpenAPI document.
_BATCH_BODY = uploads.openapi_body("DICOM files, each part's file name its name in the session (as {name} of the PUT)")

_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _preparers() -> ThreadPoolExecutor:
    """This process's threads for batch parts, shared by its batch requests (fairly: in order
    of arrival), so that concurrent batches do not multiply the threads fighting for the GIL."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(_PREPARERS, thread_name_prefix="medlabel-upload-batch"))
        return _pool[1]


class _Batch:
    """One batch request's pipeline. Each part received whole is prepared on the preparation
    threads (``service.stage_file``, its fsync started too) while the event loop receives the
    next ones; at most ``_PARTS_HELD`` parts / ``_BYTES_HELD`` bytes wait or are in preparation
    (then receiving waits: the client is held back, not memory). Prepared files are recorded in
    part order, ``_RECORD_EVERY`` or more per journal write and file lock once their fsyncs have
    ended (``service.record_files``; the rest at the end)."""

    def __init__(self, up: UploadPut, rt: Runtime) -> None:
        self.up = up
        self.rt = rt
        self.reads = read_sessions(rt)
        self.limits = IngestLimits.from_env()  # once per request, not per part
        self.flight: deque[tuple[int, asyncio.Future[service.Staged]]] = deque()  # (bytes, preparation)
        self.held = 0
        self.ready: list[service.Staged] = []
        self.results: list[service.FileResult] = []
        self.failed = False
        # opened before this request's first write: its groups are made durable by one syncfs
        # each (None: fsyncs file by file)
        self.fs_sync = service.group_sync(rt.settings.home, rt.blobs)

    def _stage(self, part: uploads.FilePart) -> service.Staged:
        original = part.data if part.data is not None else part.path
        assert original is not None
        return service.stage_file(
            self.up.upload,
            part.filename,
            original,
            settings=self.up.settings,
            sessions=self.rt.sessions,
            secret_key=self.rt.settings.secret_key,
            home=self.rt.settings.home,
            limits=self.limits,
            read_sessions=self.reads,
            blobs=self.rt.blobs,
            sync=True,
            check_duplicates=False,  # per group, when recorded
            group_sync=self.fs_sync is not None,
        )

    def submit(self, part: uploads.FilePart) -> None:
        held = len(part.data) if part.data is not None else 0
        self.flight.append((held, asyncio.wrap_future(_preparers().submit(self._stage, part))))
        self.held += held

    async def pace(self) -> None:
        """Wait while too much is held, take what is prepared, record a full group."""
        await self._guarded(self._pace())

    async def _pace(self) -> None:
        while self.flight and (len(self.flight) >= _PARTS_HELD or self.held >= _BYTES_HELD):
            await self._take()
        while self.flight and self.flight[0][1].done():
            await self._take()
        synced = self._synced()
        if synced >= _RECORD_EVERY:  # recording waits for the fsyncs: only those done, meanwhile
            await self._record(synced)

    async def finish(self) -> None:
        """Take and record every part still in preparation (nothing after a failure)."""
        if not self.failed:
            await self._guarded(self._finish())

    async def _finish(self) -> None:
        while self.flight:
            await self._take()
        await self._record()

    async def _guarded(self, step: Awaitable[None]) -> None:
        """A failure of a preparation or of a record ends the pipeline: what is not recorded
        is discarded (the parts before it are recorded: their order is kept)."""
        try:
            await step
        except Exception:
            self.failed = True
            await self._discard_rest()
            raise
        except BaseException:
            self.failed = True
            self.abandon()
            raise

    async def _discard_rest(self) -> None:
        """Wait for the parts still in preparation, then discard them with the rest (so that
        nothing of a refused batch is written after its answer)."""
        pending = [fut for _, fut in self.flight]
        self.flight.clear()
        self.held = 0
        done = await asyncio.gather(*pending, return_exceptions=True)
        service.discard([*self.ready, *(d for d in done if isinstance(d, service.Staged))])
        self.ready = []

    async def _take(self) -> None:
        held, fut = self.flight.popleft()
        self.held -= held
        self.ready.append(await fut)

    def _synced(self) -> int:
        """How many of the first prepared files have their fsync done."""
        n = 0
        for st in self.ready:
            if st.syncing is not None and not st.syncing.done():
                break
            n += 1
        return n

    async def _record(self, n: int | None = None) -> None:
        """Record the first ``n`` prepared files (all by default), in part order."""
        n = len(self.ready) if n is None else n
        group, self.ready = self.ready[:n], self.ready[n:]
        self.results += await run_in_threadpool(
            service.record_files,
            self.up.upload,
            group,
            sessions=self.rt.sessions,
            home=self.rt.settings.home,
            duplicates=self.reads,
            blobs=self.rt.blobs,
            fs_sync=self.fs_sync,
        )

    def abandon(self) -> None:
        """Discard what is not recorded, also the parts still in preparation (when they end)."""
        service.discard(self.ready)
        self.ready = []
        while self.flight:
            _, fut = self.flight.popleft()
            fut.add_done_callback(_discard_when_done)


def _discard_when_done(fut: asyncio.Future[service.Staged]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        service.discard([fut.result()])


@router.post(
    "/projects/{project_id}/uploads/{upload_id}/files",
    response_model=UploadBatchRead,
    openapi_extra=_BATCH_BODY,
)
async def post_upload_files(request: Request, up: UploadFile, rt: RuntimeDep) -> UploadBatchRead:
    """Several files in one request: a ``multipart/form-data`` body whose ``files`` parts are
    DICOM files, each part's file name its name (as ``{name}`` of the PUT). The same as PUTting
    the parts one by one in their order (the same preparation, results, ``duplicate`` check; a
    name sent again replaces, also within the batch), but cheaper per file: each part is
    prepared on a thread as soon as it has been received while the next ones arrive, and the
    results are recorded several at a time. The answer: every part's result in part order and
    the counts. Other form fields are ignored; at most ``MEDLABEL_IMPORT_MAX_FILES`` parts (413).

    Not all or nothing: when the body breaks off or is malformed (422), a part is refused (a
    name of 0 or over 255 characters: 422; one part too many: 413) or the session is committed
    meanwhile (409), the parts received whole before that point stay recorded, as PUTs would;
    the error's ``detail.recorded`` says how many (the first N parts; ``GET`` the session to see
    them), and the rest are to be sent again. 409 once the session is committed; 404 when it
    is gone; 422 when the body is not multipart or has no ``files`` part."""
    home = rt.settings.home
    ctype = request.headers.get("content-type", "")
    service.receive_path(up.upload, home=home)  # 409 when no longer open, 404 when gone
    batch = _Batch(up, rt)
    try:
        try:
            parts = uploads.iter_file_parts(
                ctype,
                request.stream(),
                max_files=batch.limits.max_files,
                in_memory=_IN_MEMORY,
                spool_to=lambda: service.receive_path(up.upload, home=home),
            )
            async with aclosing(parts):
                async for part in parts:
                    try:
                        service.check_name(part.filename)
                    except BaseException:
                        if part.path is not None:
                            part.path.unlink(missing_ok=True)
                        raise
                    batch.submit(part)
                    await batch.pace()
        finally:  # also after a broken body or a refused part: the parts before are kept
            await batch.finish()
    except MedlabelError as exc:
        if exc.detail is None or isinstance(exc.detail, dict):
            exc.detail = {**(exc.detail or {}), "recorded": len(batch.results)}
        raise
    except BaseException:
        batch.abandon()
        raise
    finally:
        if batch.fs_sync is not None:
            batch.fs_sync.close()
    results = batch.results
    return UploadBatchRead(files=[UploadFileRead(**f.as_dict()) for f in results], counts=_counts(results))


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
