"""Import: uploaded files and archives → de-identified blobs → items.

The flow (see ``docs/ingest.md``):

1. **Expand** the upload folder: ZIP archives are unpacked member by member with caps (no
   absolute or ``..`` paths, a compression-ratio cap, a total-size cap counted on the bytes
   actually inflated, a member-count cap).
2. **Sniff** each file by content and read it with the imaging core. DICOM is de-identified
   (PS3.15 Annex E via ``medlabel.deid``) before anything is stored; NIfTI headers are scrubbed;
   PNG/JPEG/TIFF are re-encoded as PNG (no metadata survives); pyramidal TIFF/SVS slides lose their
   label/macro images and identifying tags (``medlabel.deid.slide``), the pyramid is kept.
3. **Group** DICOM instances: the VOLUME instances of one VL Whole Slide Microscopy series
   become one ``slide`` item (validated with ``open_dicom_slide``; LABEL/OVERVIEW/THUMBNAIL
   instances are not stored); the rest form series stacks (``medlabel.imaging.series``): stacks of
   two or more single-frame grey slices become ``volume`` items, everything else ``image`` items.
4. **Store**: the item's blobs are written first, then the item, its instances, its quarantine
   entry and the audit record in one transaction. A failure leaves no item (orphan blobs are
   content-addressed and harmless).

Every file gets a line in the report; one bad file never stops the rest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import logging
import multiprocessing
import os
import posixpath
import shutil
import threading
import traceback
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.uid import UID
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.deid import DeidConfig, DeidContext, Option, deidentify_dataset, deidentify_nifti
from medlabel.deid.engine import DeidResult
from medlabel.deid.reuse import Scan, SeriesTemplates, scan
from medlabel.deid.slide import scrub_slide_tiff
from medlabel.deid.stores import (
    MappedDateOffsetStore,
    MappedPseudonymStore,
    RecordingDateOffsetStore,
    RecordingPseudonymStore,
    UnknownPatient,
)
from medlabel.errors import InvalidInput, MedlabelError, NotFound, UnsupportedMedia
from medlabel.imaging import FileKind, open_slide, read_itk, read_nifti, read_raster, sniff
from medlabel.imaging.dicom import image_from_dataset, info_from_dataset, open_dataset
from medlabel.imaging.dicom_encode import encode_dataset
from medlabel.imaging.dicom_map import decodable, open_mapped
from medlabel.imaging.dicom_wsi import WSI_SOP_CLASS, open_dicom_slide
from medlabel.imaging.limits import check_budget
from medlabel.imaging.model import ImageInfo
from medlabel.imaging.multiframe import read_multiframe_volumes
from medlabel.imaging.render import PRESETS
from medlabel.imaging.series import SeriesStack, SliceHeader, group_series
from medlabel.items.models import Instance, Item, QuarantineEntry, Study
from medlabel.items.settings import DeidSettings, deid_settings
from medlabel.items.stores import DbDateOffsetStore, DbPseudonymStore, project_secret
from medlabel.items.unpack import (
    Candidate,
    FileReport,
    ImportReport,
    IngestLimits,
    display_name,
    expand_zip,
    new_upload_dir,
    safe_name,
    uploads_root,
)
from medlabel.pickling import by_fields
from medlabel.storage.blobs import BlobStore
from medlabel.storage.files import write_new_file
from medlabel.storage.models import Project

__all__ = [
    "start_import_workers",
    "safe_name",
    "IngestLimits",
    "FileReport",
    "ImportReport",
    "run_import",
    "uploads_root",
    "new_upload_dir",
    "borrowed_sessions",
    "PreparedDicom",
    "ByteBudget",
    "prepare_dicom_file",
    "write_prepared",
    "store_prepared",
    "deid_for",
    "not_importable",
    "DICOMDIR_NOTE",
    "MAP_BYTES_ENV",
    "map_bytes",
]

log = logging.getLogger(__name__)

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_CHUNK = 1 << 20


class _Borrowed:
    """Looks like a ``sessionmaker`` but hands out one open session; ``begin()`` is a SAVEPOINT.

    For callers already inside a transaction (the demo hook): on SQLite a second session would
    wait for the first one's write lock forever.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def __call__(self) -> _Borrowed:
        return self

    def __enter__(self) -> _Borrowed:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def begin(self) -> Any:
        return self._session.begin_nested()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def borrowed_sessions(session: Session) -> sessionmaker[Session]:
    """A session factory that reuses ``session`` (savepoints instead of transactions)."""
    return cast("sessionmaker[Session]", _Borrowed(session))


# ---------------------------------------------------------------- DICOM


@by_fields
@dataclass(slots=True)
class _Dicom:
    name: str
    path: Path
    """The de-identified file in the work folder (being written while ``stage`` runs)."""
    info: ImageInfo
    reasons: tuple[str, ...]
    pseudonym: str
    warnings: list[str]


#: Transfer syntaxes whose Pixel Data value is the pixels as they are (pydicom inflates a
#: deflated data set on reading).
_NATIVE_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}
)
_NATIVE_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL"})


def _prepare_dicom(
    cand: Candidate,
    *,
    config: DeidConfig | None,
    ctx: DeidContext | None,
    limits: IngestLimits,
    work: Path,
    stage: Callable[[Path, list[bytes | memoryview]], None] | None = None,
    source: bytes | None = None,
) -> _Dicom:
    """Read, check, de-identify (in place: the original is never stored) and serialise one file.

    The file is ``cand.path``, or ``source`` when given (its bytes, received in memory). The
    de-identified file goes to ``work``: through ``stage(path, data)`` when given (the run
    hashes, writes and fsyncs it on an I/O thread while this thread reads the next file), else
    written here.
    """
    target = work / f"{os.getpid()}-{next(_WORK_NAMES):08d}.dcm"  # unique across worker processes
    raw: Scan | None = None
    if config is not None and ctx is not None:
        if source is None:
            source = _small_file(cand.path)
        raw = scan(source) if source is not None else None
        if raw is not None and source is not None:
            reused = _SERIES.apply(source, raw, config=config, ctx=ctx)
            if reused is not None:
                info = reused.info
                _native_budget(limits, info.rows, info.columns, info.frames, info.samples_per_pixel, info.bits_allocated)
                _write_or_stage(target, reused.pieces, stage)
                return _Dicom(cand.name, target, info, reused.reasons, reused.pseudonym, [])
    sink: list[str] = []
    ds = _mapped(cand.path, sink) if source is None else None
    if ds is None:
        ds = open_dataset(source if source is not None else str(cand.path), warnings_sink=sink)
    if getattr(ds, "file_meta", None) is not None and ds.file_meta.get("MediaStorageSOPClassUID") == (
        "1.2.840.10008.1.3.10"
    ):
        raise UnsupportedMedia("a DICOMDIR index, not an image; import the files it references")
    if not any(t in ds for t in _PIXEL_TAGS):
        sop = str(ds.get("SOPClassUID", "") or "unknown")
        raise UnsupportedMedia(f"no Pixel Data (7FE0,0010): SOP Class {sop} is not an image")
    # truncated or undecodable pixel data is refused before anything is stored
    with decodable(ds):
        native = _check_pixels(ds, limits, sink)
    reasons: tuple[str, ...] = ()
    pseudonym = str(ds.get("PatientID", "") or "")
    out: Dataset = ds
    res: DeidResult | None = None
    if config is not None and ctx is not None:
        res = deidentify_dataset(ds, config, ctx, in_place=True)
        out, reasons, pseudonym = res.dataset, res.reasons, res.pseudonym
        sink.extend(res.warnings)
    info = info_from_dataset(out)
    try:
        data = encode_dataset(out)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidInput(f"cannot write the de-identified data set: {exc}") from exc
    if raw is not None and source is not None and res is not None and native and not sink:
        assert config is not None
        _SERIES.learn(source, raw, config=config, result=res, pieces=data, info=info)
    _write_or_stage(target, data, stage)
    return _Dicom(cand.name, target, info, tuple(reasons), pseudonym, list(dict.fromkeys(sink)))


#: The templates of the series this process prepared lately (``medlabel.deid.reuse``): the next
#: files of a series are prepared from them, byte for byte as the whole way would.
_SERIES = SeriesTemplates()


def _small_file(path: Path) -> bytes | None:
    """The file's bytes when it is read whole anyway (under ``map_bytes()``), else None."""
    try:
        if path.stat().st_size >= map_bytes():
            return None
        return path.read_bytes()
    except OSError:
        return None  # the reader reports it


def _write_or_stage(
    target: Path, data: list[bytes | memoryview], stage: Callable[[Path, list[bytes | memoryview]], None] | None
) -> None:
    if stage is None:
        with open(target, "wb") as fh:
            fh.writelines(data)
    else:
        stage(target, data)


_WORK_NAMES = itertools.count()
MAP_BYTES_ENV = "MEDLABEL_IMPORT_MAP_BYTES"


def map_bytes() -> int:
    """Files from this size on have their Pixel Data mapped, not read (``MEDLABEL_IMPORT_MAP_BYTES``,
    default 64 MiB; ``medlabel.imaging.dicom_map``)."""
    raw = os.environ.get(MAP_BYTES_ENV, "").strip()
    try:
        return max(0, int(raw)) if raw else 64 << 20
    except ValueError:
        return 64 << 20


def _mapped(path: Path, sink: list[str]) -> Dataset | None:
    """``open_mapped(path)`` for a big file (None: read it whole)."""
    try:
        if path.stat().st_size < map_bytes():
            return None
        return open_mapped(path, warnings_sink=sink)
    except (OSError, MedlabelError):
        return None  # the whole-file read reports it
def _check_pixels(ds: Dataset, limits: IngestLimits, sink: list[str]) -> bool:
    """Refuse pixel data that cannot be read (the rule is in ``docs/ingest.md``).

    Native (uncompressed) Pixel Data is not decoded: pydicom's decoder validates the image
    description (group 0028) and the value must hold exactly Rows x Columns x Samples per Pixel x
    Bits Allocated / 8 x Number of Frames bytes (one more when that is odd), which is all a native
    decode checks. Everything else (a value of another length, PALETTE COLOR, sub-sampled YBR,
    single-bit or float pixels, compressed syntaxes) is decoded as before, so the errors and
    warnings are the decoder's own: whole-slide instances on their first and last frames, other
    files on every frame.
    """
    if _native_pixels_ok(ds, limits, sink):
        return True
    image_from_dataset(ds, limits=limits.image, frames=_frames_to_check(ds), warnings_sink=sink)
    return False


def _native_pixels_ok(ds: Dataset, limits: IngestLimits, sink: list[str]) -> bool:
    """True when ``ds`` has native Pixel Data of exactly the described length (budget checked);
    False when it must be decoded to tell."""
    meta = getattr(ds, "file_meta", None)
    try:
        ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
        if ts not in _NATIVE_SYNTAXES or 0x7FE00010 not in ds or any(t in ds for t in _PIXEL_TAGS[1:]):
            return False
        photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
        if photometric not in _NATIVE_PHOTOMETRICS:
            return False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner = DecodeRunner(UID(ts))
            runner.set_source(ds)
            if ds[0x7FE00010].is_undefined_length:
                return False
            runner._validate_options()  # noqa: SLF001  (the decoder's own header checks)
            bits = runner.bits_allocated
            rows, columns, frames = runner.rows, runner.columns, runner.number_of_frames
            samples = runner.samples_per_pixel
            if bits not in (8, 16, 32, 64) or samples != (3 if photometric in ("RGB", "YBR_FULL") else 1):
                return False
            expected = rows * columns * samples * (bits // 8) * frames
            actual = len(runner.src)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001  (whatever it is, the full decode reports it properly)
        return False
    if actual not in (expected, expected + expected % 2):
        return False
    _native_budget(limits, rows, columns, frames, samples, bits)
    for w in caught:
        msg = str(w.message).split(" Please see <")[0]
        if msg not in sink:
            sink.append(msg)
    return True


def _native_budget(limits: IngestLimits, rows: int, columns: int, frames: int, samples: int, bits: int) -> None:
    check_budget(
        limits.image,
        pixels=rows * columns * frames,
        samples=samples,
        bytes_per_sample=bits // 8,
        what=f"DICOM {rows}x{columns}x{frames} frames",
    )


def _frames_to_check(ds: Dataset) -> list[int] | None:
    """Frames decoded on ingest: all (``None``), except for whole-slide instances, whose tens of
    thousands of tiles are checked on the first and the last (a truncated file fails there)."""
    if str(ds.get("SOPClassUID", "") or "") != WSI_SOP_CLASS:
        return None
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return None  # let the full decode report the bad (0028,0008)
    return sorted({0, max(n - 1, 0)})


def _window_meta(info: ImageInfo) -> list[dict[str, Any]]:
    return [{"center": w.center, "width": w.width, "explanation": w.explanation} for w in info.windows]


def _presets_for(modality: str) -> list[str]:
    return sorted(PRESETS) if modality.upper() == "CT" else []


# ---------------------------------------------------------------- the run

#: I/O threads per import: hashing, writing and fsync'ing de-identified files release the GIL,
#: and fsyncs issued together share the file system's journal commits.
_IO_THREADS = 4
#: Bytes of de-identified files waiting for an I/O thread (one bigger file goes alone).
_IO_IN_FLIGHT_BYTES = 256 << 20


class ByteBudget:
    """A byte budget for data handed to I/O threads (bounds the memory an import, or a server
    process's batch uploads, hold): ``acquire`` waits while others hold ``limit`` bytes (one
    bigger piece of data goes alone)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            while self._used and self._used + n > self._limit:
                self._cond.wait()
            self._used += n

    def release(self, n: int) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()

    @property
    def held(self) -> int:
        return self._used


def _size(pieces: list[bytes | memoryview]) -> int:
    return sum(memoryview(p).nbytes for p in pieces)


def _write_synced(
    path: Path, pieces: list[bytes | memoryview], budget: ByteBudget, blobs: BlobStore | None = None
) -> str:
    """Write ``pieces`` to the new file ``path`` and fsync it; returns its SHA-256 (I/O thread).
    With ``blobs``, the blob's directories are made too (``BlobStore.reserve``)."""
    try:
        digest = write_new_file(path, pieces, sync=True, hashed=True)
        assert digest is not None
        if blobs is not None:
            blobs.reserve(digest)
        return digest
    finally:
        budget.release(_size(pieces))


def _fsync_file(path: Path, digest: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest


@dataclass
class _Run:
    sessions: sessionmaker[Session]
    blobs: BlobStore
    actor: Actor
    project_id: int
    job_id: str | None
    limits: IngestLimits
    report: ImportReport
    work: Path
    #: de-identified files being written and fsync'd on the I/O threads → their SHA-256
    staged: dict[Path, Future[str]] = field(default_factory=dict)
    #: blobs linked into the store whose directory entries are not fsync'd yet
    unsynced: set[str] = field(default_factory=set)
    #: prepared files already linked into the store with their directories fsync'd
    stored: set[Path] = field(default_factory=set)
    _io: ThreadPoolExecutor | None = None
    _budget: ByteBudget = field(default_factory=lambda: ByteBudget(_IO_IN_FLIGHT_BYTES))

    def stage(self, path: Path, pieces: list[bytes | memoryview]) -> None:
        """Hash, write and fsync ``pieces`` as ``path`` on an I/O thread (``put_file`` waits)."""
        if self._io is None:
            self._io = ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="medlabel-import-io")
        size = _size(pieces)
        self._budget.acquire(size)
        try:
            self.staged[path] = self._io.submit(_write_synced, path, pieces, self._budget, self.blobs)
        except BaseException:
            self._budget.release(size)
            raise

    def written(self, dicoms: list[_Dicom]) -> list[_Dicom]:
        """Wait until the staged files are on disk; one that could not be written is reported."""
        ok = []
        for d in dicoms:
            fut = self.staged.get(d.path)
            try:
                if fut is not None:
                    fut.result()
            except OSError as exc:
                self.staged.pop(d.path, None)
                self.report.add(
                    FileReport(d.name, "error", f"unreadable: {type(exc).__name__}: {exc}", "unreadable")
                )
                continue
            ok.append(d)
        return ok

    def close(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True, cancel_futures=True)
            self._io = None

    def sync_written(self, path: Path, digest: str) -> None:
        """fsync ``path`` (written by a worker process, SHA-256 ``digest``) on an I/O thread."""
        if self._io is None:
            self._io = ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="medlabel-import-io")
        self.staged[path] = self._io.submit(_fsync_file, path, digest)

    def put_file(self, path: Path) -> str:
        fut = self.staged.get(path)
        if fut is None:
            with open(path, "rb") as fh:
                return self.blobs.put_stream(fh)
        # written and fsync'd already: linked into the store, not copied or hashed again
        digest = fut.result()
        if path in self.stored and self.blobs.refresh(digest):
            return digest  # linked, its directories fsync'd, when it was received (time refreshed)
        digest = self.blobs.adopt(path, digest)  # (the sweep may have taken it meanwhile)
        self.unsynced.add(digest)
        return digest

    def known_sops(self, uids: Iterable[str]) -> set[str]:
        uids = list(uids)
        found: set[str] = set()
        with self.sessions() as s:
            for i in range(0, len(uids), 500):
                chunk = uids[i : i + 500]
                found.update(
                    s.scalars(
                        select(Instance.sop_instance_uid).where(
                            Instance.project_id == self.project_id, Instance.sop_instance_uid.in_(chunk)
                        )
                    )
                )
        return found

    def known_key(self, key: str) -> int | None:
        with self.sessions() as s:
            return s.scalar(select(Item.id).where(Item.project_id == self.project_id, Item.dedup_key == key))

    def _audit(self, s: Session, item: Item, *, files: int, **extra: Any) -> None:
        """The ``image.import`` record of a stored item (last in its transaction)."""
        detail = {
            "kind": item.kind,
            "format": item.source_format,
            "files": files,
            "job_id": self.job_id,
            "status": item.status,
            **extra,
        }
        audit.record(
            s,
            self.actor.event(
                AuditAction.IMAGE_IMPORT,
                object_type="item",
                object_id=str(item.id),
                project_id=self.project_id,
                detail=detail,
            ),
        )

    def create_items(self, items: list[Item], *, blob: str) -> list[int] | None:
        """Several items of one stored file in one transaction (an audit record each); None when
        a concurrent import stored them first."""
        if blob in self.unsynced:
            self.blobs.sync_dirs({blob})
            self.unsynced.discard(blob)
        try:
            with self.sessions() as s, s.begin():
                for item in items:
                    item.status = "ready"
                    s.add(item)
                s.flush()
                for item in items:
                    self._audit(s, item, files=1, volume_index=(item.meta or {}).get("volume_index", 0))
                return [item.id for item in items]
        except IntegrityError:
            return None

    def create_item(
        self,
        item: Item,
        *,
        instances: list[dict[str, Any]] | None = None,
        study: tuple[str, str, str] | None = None,
        reasons: tuple[str, ...] = (),
        blob: str = "",
        files: int = 1,
    ) -> int | None:
        """One transaction: study, item, instances, quarantine entry, audit record (last)."""
        linked = ({blob} | {i["blob_sha256"] for i in instances or []}) & self.unsynced
        if linked:  # the blobs' names are durable before a row names them
            self.blobs.sync_dirs(linked)
            self.unsynced -= linked
        try:
            with self.sessions() as s, s.begin():
                study_id = None
                if study is not None:
                    uid, pseudonym, modality = study
                    st = s.scalar(
                        select(Study).where(Study.project_id == self.project_id, Study.study_uid == uid)
                    )
                    if st is None:
                        st = Study(
                            project_id=self.project_id,
                            study_uid=uid,
                            patient_pseudonym=pseudonym,
                            modality=modality,
                            created_at=clock.now(),
                        )
                        s.add(st)
                        s.flush()
                    study_id = st.id
                item.status = "quarantined" if reasons else "ready"
                s.add(item)
                s.flush()
                if instances:
                    s.execute(insert(Instance), [{**i, "item_id": item.id, "study_id": study_id} for i in instances])
                if reasons:
                    s.add(
                        QuarantineEntry(
                            project_id=self.project_id,
                            item_id=item.id,
                            blob_sha256=blob,
                            reasons=list(reasons),
                            status="pending",
                            created_at=clock.now(),
                            note="",
                        )
                    )
                s.flush()
                self._audit(s, item, files=files)
                return item.id
        except IntegrityError:
            return None  # a concurrent import stored the same content first


def _dicom_item(run: _Run, m: _Dicom, **kw: Any) -> Item:
    """``_new_item`` for DICOM: patient, study, series and modality from the (first) file ``m``."""
    info = m.info
    return _new_item(
        run,
        source_format="dicom",
        patient_pseudonym=m.pseudonym[:64],
        study_uid=info.uids.study_instance_uid,
        series_uid=info.uids.series_instance_uid,
        modality=info.modality[:16],
        **kw,
    )


def _new_item(run: _Run, **kw: Any) -> Item:
    return Item(
        project_id=run.project_id,
        created_at=clock.now(),
        created_by=run.actor.user_id,
        import_job_id=run.job_id,
        priority=0.0,
        **kw,
    )


def _import_dicoms(run: _Run, prepared: list[_Dicom]) -> None:
    # de-duplicate by de-identified SOP Instance UID: against the project, then inside the batch
    by_uid: dict[str, _Dicom] = {}
    for d in prepared:
        uid = d.info.uids.sop_instance_uid
        if not uid:
            run.report.add(FileReport(d.name, "error", "(0008,0018) SOP Instance UID missing", "dicom_error"))
        elif uid in by_uid:
            run.report.add(FileReport(d.name, "duplicate", f"same SOP Instance UID as {by_uid[uid].name}"))
        else:
            by_uid[uid] = d
    known = run.known_sops(by_uid)
    for uid in known:
        run.report.add(
            FileReport(by_uid.pop(uid).name, "duplicate", "already imported (same SOP Instance UID)")
        )
    wsi = [d for d in by_uid.values() if d.info.uids.sop_class_uid == WSI_SOP_CLASS]
    if wsi:
        for d in wsi:
            del by_uid[d.info.uids.sop_instance_uid]
        _import_wsi(run, wsi)
    headers = [SliceHeader(path=str(d.path), info=d.info) for d in by_uid.values()]
    by_path = {str(d.path): d for d in by_uid.values()}
    for stack in group_series(headers):
        members = [by_path[h.path] for h in stack.slices]
        first = members[0].info
        try:
            if len(stack) >= 2 and not first.is_color and all(m.info.frames == 1 for m in members):
                _store_volume(run, stack, members)
                continue
        except MedlabelError as exc:
            for m in members:
                run.report.add(FileReport(m.name, "error", exc.message, exc.code))
            continue
        for m in members:
            try:
                if not (m.info.frames > 1 and not m.info.is_color and _store_multiframe_volume(run, m)):
                    _store_image(run, m)
            except MedlabelError as exc:
                run.report.add(FileReport(m.name, "error", exc.message, exc.code))


def _store_multiframe_volume(run: _Run, m: _Dicom) -> bool:
    """An enhanced (or legacy converted) multi-frame file that is one evenly spaced volume, every
    frame at its own position, becomes a ``volume`` item (one instance, ``meta.multiframe``), as
    the same slices in single-frame files would; True when stored. Anything else (not enhanced,
    gaps, frames sharing positions: cine, diffusion) stays a multi-frame ``image``, every frame
    kept, with the reason among its warnings (False)."""
    try:
        if "PerFrameFunctionalGroupsSequence" not in open_dataset(str(m.path), stop_before_pixels=True):
            return False  # not enhanced: no per-frame geometry (and the pixels are not read again)
        volumes = read_multiframe_volumes(str(m.path), limits=run.limits.image)
    except UnsupportedMedia:
        return False
    except MedlabelError as exc:
        m.warnings.append(f"multi-frame geometry unusable ({exc.message}); kept as a multi-frame image")
        return False
    if len(volumes) != 1 or volumes[0].shape[0] != m.info.frames:
        m.warnings.append(
            f"multi-frame with {m.info.frames} frames does not make one volume (gaps or frames sharing "
            "positions); kept as a multi-frame image"
        )
        return False
    vol = volumes[0]
    info = m.info
    blob = run.put_file(m.path)
    z, y, x = vol.shape
    item = _dicom_item(
        run,
        m,
        kind="volume",
        name=f"{info.modality or 'DICOM'} multi-frame volume ({z} slices)",
        dedup_key=f"sop:{info.uids.sop_instance_uid}"[:128],
        width=x,
        height=y,
        frames=z,
        meta={
            "spacing": [float(v) for v in vol.spacing],
            "windows": _window_meta(info),
            "presets": _presets_for(info.modality),
            "photometric": str(info.photometric),
            "multiframe": True,
            "warnings": list(dict.fromkeys([*vol.warnings, *m.warnings]))[:50],
        },
    )
    _store_single_file(run, m, item, blob)
    return True


def _store_volume(run: _Run, stack: SeriesStack, members: list[_Dicom]) -> None:
    first = members[0].info
    reasons = tuple(dict.fromkeys(r for m in members for r in m.reasons))
    digest = hashlib.sha256("\n".join(sorted(m.info.uids.sop_instance_uid for m in members)).encode())
    key = f"series:{first.uids.series_instance_uid}:{digest.hexdigest()[:16]}"[:128]
    blobs = [run.put_file(m.path) for m in members]
    ps = first.pixel_spacing or (1.0, 1.0)
    spacing = stack.spacing if stack.spacing > 0 else (first.slice_thickness or 1.0)
    warnings = list(dict.fromkeys(list(stack.warnings) + [w for m in members for w in m.warnings]))
    item = _dicom_item(
        run,
        members[0],
        kind="volume",
        name=f"{first.modality or 'DICOM'} series ({len(members)} slices{', ' + stack.label if stack.label else ''})",
        dedup_key=key,
        width=first.columns,
        height=first.rows,
        frames=len(members),
        meta={
            "spacing": [float(spacing), float(ps[0]), float(ps[1])],
            "windows": _window_meta(first),
            "presets": _presets_for(first.modality),
            "photometric": str(first.photometric),
            "warnings": warnings[:50],
            **({"stack": stack.label} if stack.label else {}),
        },
    )
    _store_members(run, item, members, blobs, reasons, positions=[float(p) for p in stack.positions])


def _store_image(run: _Run, m: _Dicom) -> None:
    info = m.info
    blob = run.put_file(m.path)
    item = _dicom_item(
        run,
        m,
        kind="image",
        name=f"{info.modality or 'DICOM'} image",
        dedup_key=f"sop:{info.uids.sop_instance_uid}"[:128],
        width=info.columns,
        height=info.rows,
        frames=info.frames,
        meta={
            "spacing": list(info.pixel_spacing) if info.pixel_spacing else None,
            "windows": _window_meta(info),
            "presets": _presets_for(info.modality),
            "photometric": str(info.photometric),
            "warnings": m.warnings[:50],
        },
    )
    _store_single_file(run, m, item, blob)


def _instance_row(
    run: _Run, series_uid: str, sop_uid: str, blob: str, index: int, position: float | None, frames: int
) -> dict[str, Any]:
    """The values of an ``Instance`` row (``create_item`` adds the item and study): a series
    has hundreds, inserted in one statement, not as ORM objects."""
    return {
        "project_id": run.project_id,
        "series_uid": series_uid,
        "sop_instance_uid": sop_uid,
        "blob_sha256": blob,
        "slice_index": index,
        "position": position,
        "frames": frames,
    }


def _store_single_file(run: _Run, m: _Dicom, item: Item, blob: str) -> None:
    """Store ``item`` made of the one file ``m`` (its instance row, study, quarantine, audit) and
    report the file."""
    info = m.info
    inst = _instance_row(run, info.uids.series_instance_uid, info.uids.sop_instance_uid, blob, 0, None, info.frames)
    item_id = run.create_item(
        item,
        instances=[inst],
        study=(info.uids.study_instance_uid, m.pseudonym[:64], info.modality[:16]),
        reasons=m.reasons,
        blob=blob,
    )
    _report_single(run, m.name, item_id, m.reasons, m.warnings)


def _report_single(
    run: _Run, name: str, item_id: int | None, reasons: tuple[str, ...], warnings: list[str]
) -> None:
    if item_id is None:
        run.report.add(FileReport(name, "duplicate", "stored by a concurrent import"))
        return
    status = "quarantined" if reasons else "imported"
    run.report.add(FileReport(name, status, "; ".join(reasons), item_id=item_id, warnings=warnings))
    run.report.items.append(item_id)


# ---------------------------------------------------------------- DICOM in worker processes

#: An import prepares its DICOM files in worker processes from this many files on.
POOL_MIN_FILES = 16
_POOL_LOCK = threading.Lock()
_POOL: tuple[ProcessPoolExecutor, Future[int], int] | None = None


def _pool_processes() -> int:
    """``MEDLABEL_IMPORT_PROCESSES`` (0: none), else one per CPU but two, at most 8.

    Two CPUs are left to the job's own process (it prepares files too, and stores them) and to
    the rest (the API server, the I/O threads): on two CPUs a worker gains 10-20 % once started,
    but starting it (its imports) costs more CPU than a few hundred files save.
    """
    raw = os.environ.get("MEDLABEL_IMPORT_PROCESSES", "").strip()
    if raw.isdigit():
        return int(raw)
    return min(max((os.cpu_count() or 1) - 2, 0), 8)


def _worker_ready() -> int:
    return os.getpid()


def _worker_pool() -> tuple[ProcessPoolExecutor, Future[int], int] | None:
    """The process's pool of import workers (started on first use and kept: a worker pays for
    its imports once), its readiness and size; None when configured off."""
    global _POOL
    n = _pool_processes()
    if n <= 0:
        return None
    with _POOL_LOCK:
        if _POOL is None:
            pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
            _POOL = (pool, pool.submit(_worker_ready), n)
        return _POOL


def start_import_workers(timeout: float | None = None) -> int:
    """Start this process's import worker processes now (else the first big import does), and
    wait up to ``timeout`` seconds for them to be ready; returns how many (0: configured off)."""
    pooled = _worker_pool()
    if pooled is None:
        return 0
    pooled[1].result(timeout)
    return pooled[2]


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL[0] is pool:
            _POOL = None
    pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class _Remote:
    """What a worker process needs besides the file: the configuration and the patients the
    parent has resolved (the stores themselves are the parent's)."""

    config: DeidConfig | None
    pseudonyms: dict[tuple[str, str], str]
    offsets: dict[str, int]
    limits: IngestLimits
    work: Path


def _prepare_remote(cand: Candidate, job: _Remote) -> tuple[str, Any, Any]:
    """``_prepare_dicom`` in a worker process, which writes the file (its parent fsyncs it).

    Returns ``("ok", _Dicom, sha256)``, ``("unknown", None, None)`` for a patient the parent has
    not resolved yet, ``("error", message, code)``, or ``("crash", message, traceback)``.
    """
    ctx = None
    if job.config is not None:
        ctx = DeidContext(MappedPseudonymStore(job.pseudonyms), MappedDateOffsetStore(job.offsets))
    digests: list[str] = []

    def write(path: Path, pieces: list[bytes | memoryview]) -> None:
        h = hashlib.sha256()
        with open(path, "xb") as fh:
            for piece in pieces:
                h.update(piece)
                fh.write(piece)
        digests.append(h.hexdigest())

    try:
        d = _prepare_dicom(cand, config=job.config, ctx=ctx, limits=job.limits, work=job.work, stage=write)
    except UnknownPatient:
        return "unknown", None, None
    except MedlabelError as exc:
        return "error", exc.message, exc.code
    except Exception as exc:  # noqa: BLE001  (reported like in the parent)
        return "crash", f"unreadable: {type(exc).__name__}: {exc}", traceback.format_exc()
    return "ok", d, digests[0]


def _prepare_dicoms(
    run: _Run,
    cands: list[Candidate],
    *,
    config: DeidConfig | None,
    ctx: DeidContext | None,
    limits: IngestLimits,
    progress: Callable[[int], None] = lambda done: None,
) -> list[_Dicom]:
    """Prepare the DICOM files of an import, in candidate order; failures go to the report.

    With enough files, worker processes (``_worker_pool``) take files while this process takes
    one whenever they are all busy. Workers de-identify with the patients this process has
    resolved through the real stores; a file of a patient not seen yet comes back and is done
    here, which resolves the patient for the next ones. Until the pool has started (the first
    import of a process) everything is done here.
    """
    rctx = ctx
    pseudonyms: RecordingPseudonymStore | None = None
    offsets: RecordingDateOffsetStore | None = None
    if ctx is not None:
        pseudonyms = RecordingPseudonymStore(ctx.pseudonyms)
        offsets = RecordingDateOffsetStore(ctx.date_offsets) if ctx.date_offsets is not None else None
        rctx = DeidContext(pseudonyms, offsets)
    pooled = _worker_pool() if len(cands) >= POOL_MIN_FILES else None
    out: dict[int, _Dicom] = {}
    queue = deque(enumerate(cands))
    inflight: dict[Future[tuple[str, Any, Any]], tuple[int, Candidate]] = {}
    remote: _Remote | None = None
    done = 0

    def fail(cand: Candidate, exc: BaseException) -> None:
        if isinstance(exc, MedlabelError):
            run.report.add(FileReport(cand.name, "error", exc.message, exc.code))
        else:
            log.warning("import of %s failed unexpectedly", cand.name, exc_info=exc)
            run.report.add(
                FileReport(cand.name, "error", f"unreadable: {type(exc).__name__}: {exc}", "unreadable")
            )

    def here(i: int, cand: Candidate) -> None:
        nonlocal done
        try:
            out[i] = _prepare_dicom(cand, config=config, ctx=rctx, limits=limits, work=run.work, stage=run.stage)
        except Exception as exc:  # noqa: BLE001  (one unreadable file must not stop the import)
            fail(cand, exc)
        done += 1
        progress(done)

    while queue or inflight:
        if pooled is not None:
            pool, ready, size = pooled
            for fut in [f for f in inflight if f.done()]:
                i, cand = inflight.pop(fut)
                try:
                    kind, a, b = fut.result()
                except BrokenProcessPool:  # a worker died (a decoder crash?): no more workers
                    _drop_pool(pool)
                    pooled = None
                    queue.extendleft(reversed([(i, cand), *inflight.values()]))
                    inflight.clear()
                    break
                except Exception:  # noqa: BLE001  (e.g. a result that would not unpickle)
                    log.warning("import worker failed on %s; done here", cand.name, exc_info=True)
                    here(i, cand)
                    continue
                if kind == "unknown":
                    here(i, cand)  # resolves the patient for the next files
                    remote = None
                    continue
                if kind == "ok":
                    out[i] = a
                    run.sync_written(a.path, b)
                elif kind == "error":
                    run.report.add(FileReport(cand.name, "error", a, b))
                else:
                    log.warning("import of %s failed unexpectedly in a worker:\n%s", cand.name, b)
                    run.report.add(FileReport(cand.name, "error", a, "unreadable"))
                done += 1
                progress(done)
            if pooled is not None and ready.done() and ready.exception() is not None:
                log.warning("import worker processes failed to start: %s", ready.exception())
                _drop_pool(pool)  # (a script without ``if __name__ == "__main__"``?)
                pooled = None
            known = config is None or (pseudonyms is not None and bool(pseudonyms.known))
            while pooled is not None and queue and ready.done() and known and len(inflight) < size + 1:
                if remote is None:
                    remote = _Remote(
                        config,
                        dict(pseudonyms.known) if pseudonyms is not None else {},
                        dict(offsets.known) if offsets is not None else {},
                        limits,
                        run.work,
                    )
                i, cand = queue.popleft()
                try:
                    inflight[pool.submit(_prepare_remote, cand, remote)] = (i, cand)
                except (BrokenProcessPool, RuntimeError):
                    queue.appendleft((i, cand))
                    _drop_pool(pool)
                    pooled = None
        if queue:
            here(*queue.popleft())
        elif inflight:
            wait(inflight, return_when=FIRST_COMPLETED)
    return [out[i] for i in sorted(out)]


# ---------------------------------------------------------------- DICOM whole-slide (VL WSI)

#: Why a non-VOLUME instance of a VL Whole Slide Microscopy series is not stored, by Image Type
#: (0008,0008) value 3 (PS3.3 C.8.12.4.1.1).
_WSI_NOT_STORED = {
    "LABEL": "it shows the slide label (patient name, barcode) as pixels: burned-in identifying "
    "text that header de-identification cannot remove (PS3.15 Annex E, E.3.1)",
    "OVERVIEW": "it shows the whole glass slide, label included: burned-in identifying text that "
    "header de-identification cannot remove (PS3.15 Annex E, E.3.1)",
    "THUMBNAIL": "it repeats the pyramid at low resolution; the slide thumbnail is rendered from the "
    "pyramid's own levels",
}


@dataclass(frozen=True, slots=True)
class _WsiHeader:
    flavour: str
    """Image Type (0008,0008) value 3: VOLUME, LABEL, OVERVIEW, THUMBNAIL."""
    width: int
    height: int


def _wsi_header(path: Path) -> _WsiHeader:
    ds = pydicom.dcmread(
        str(path),
        stop_before_pixels=True,
        specific_tags=["ImageType", "TotalPixelMatrixColumns", "TotalPixelMatrixRows"],
    )
    raw = ds.get("ImageType")
    values = [raw] if isinstance(raw, str) else [str(v) for v in (raw or [])]
    flavour = values[2].strip().upper() if len(values) > 2 else ""
    try:
        width, height = (
            int(ds.get("TotalPixelMatrixColumns", 0) or 0),
            int(ds.get("TotalPixelMatrixRows", 0) or 0),
        )
    except (TypeError, ValueError):
        width = height = 0
    return _WsiHeader(flavour, width, height)


def _import_wsi(run: _Run, members: list[_Dicom]) -> None:
    """Each VL Whole Slide Microscopy series becomes one ``slide`` item of its VOLUME instances.

    LABEL, OVERVIEW and THUMBNAIL instances are reported ``skipped`` and not stored; a note naming
    them (by de-identified SOP Instance UID, never by file name) goes into the warnings of the
    slide item of the same series, or of the same study when they came in a series of their own.
    """
    series: dict[str, list[tuple[_Dicom, _WsiHeader]]] = {}
    notes: dict[str, list[str]] = {}
    study_of: dict[str, str] = {}
    for d in members:
        uid = d.info.uids.series_instance_uid
        study_of[uid] = d.info.uids.study_instance_uid
        head = _wsi_header(d.path)
        if head.flavour == "VOLUME":
            series.setdefault(uid, []).append((d, head))
            continue
        why = _WSI_NOT_STORED.get(
            head.flavour, f"Image Type (0008,0008) value 3 is {head.flavour or 'absent'}, not VOLUME"
        )
        run.report.add(
            FileReport(d.name, "skipped", f"DICOM-WSI {head.flavour or 'non-VOLUME'} image not stored: {why}")
        )
        notes.setdefault(uid, []).append(
            f"{head.flavour or 'non-VOLUME'} instance {d.info.uids.sop_instance_uid} not stored: {why}"
        )
    for uid, extra in notes.items():
        if uid not in series:  # label/overview in a series of their own: tell the study's slides
            for other in series:
                if study_of[other] == study_of[uid]:
                    notes.setdefault(other, []).extend(extra)
    for uid, group in series.items():
        group.sort(key=lambda m: (-m[1].width, -m[1].height, m[0].info.uids.sop_instance_uid))
        vols = [m[0] for m in group]
        try:
            _store_dicom_slide(run, vols, notes.get(uid, []))
        except MedlabelError as exc:
            for m in vols:
                run.report.add(FileReport(m.name, "error", f"DICOM-WSI series: {exc.message}", exc.code))


def _store_dicom_slide(run: _Run, members: list[_Dicom], notes: list[str]) -> None:
    """One ``slide`` item; ``members`` are the VOLUME instances, finest level first."""
    first = members[0].info
    key = f"wsi:{first.uids.series_instance_uid}"[:128]
    existing = run.known_key(key)
    if existing is not None:
        for m in members:
            run.report.add(
                FileReport(
                    m.name, "duplicate", f"its series is already slide item {existing}; not added to it"
                )
            )
        return
    # validate the pyramid as it will be served, before anything is stored
    with open_dicom_slide([m.path for m in members], limits=run.limits.image) as slide:
        info = slide.info
    if info.dtype != "uint8":
        raise UnsupportedMedia(
            f"{info.dtype} samples: Deep Zoom tiles need 8-bit slides ((0028,0100) Bits Allocated 8)"
        )
    reasons = tuple(dict.fromkeys(r for m in members for r in m.reasons))
    blobs = [run.put_file(m.path) for m in members]
    warnings = list(dict.fromkeys(list(info.warnings) + notes + [w for m in members for w in m.warnings]))
    item = _dicom_item(
        run,
        members[0],
        kind="slide",
        name=f"{first.modality or 'DICOM'} slide {info.width}x{info.height}",
        dedup_key=key,
        width=info.width,
        height=info.height,
        frames=1,
        meta={
            "levels": [[lv.width, lv.height] for lv in info.levels],
            "mpp": list(info.mpp) if info.mpp else None,
            "vendor": info.vendor,
            # the instances' blobs in level order, so tiles open without a database read
            "instance_blobs": blobs,
            "warnings": warnings[:50],
        },
    )
    _store_members(run, item, members, blobs, reasons, positions=None)


def _store_members(
    run: _Run,
    item: Item,
    members: Sequence[_Dicom],
    blobs: Sequence[str],
    reasons: tuple[str, ...],
    *,
    positions: Sequence[float] | None,
) -> None:
    """Store a multi-instance item (a series volume: one slice per instance at ``positions``; a
    DICOM-WSI slide: one pyramid level per instance) and report every member file."""
    first = members[0].info
    instances = [
        _instance_row(
            run,
            m.info.uids.series_instance_uid,
            m.info.uids.sop_instance_uid,
            b,
            i,
            None if positions is None else positions[i],
            1 if positions is not None else m.info.frames,
        )
        for i, (m, b) in enumerate(zip(members, blobs, strict=True))
    ]
    item_id = run.create_item(
        item,
        instances=instances,
        study=(first.uids.study_instance_uid, members[0].pseudonym[:64], first.modality[:16]),
        reasons=reasons,
        blob=blobs[0],
        files=len(members),
    )
    status = "quarantined" if reasons else "imported"
    for m in members:
        if item_id is None:
            run.report.add(FileReport(m.name, "duplicate", "stored by a concurrent import"))
        else:
            run.report.add(
                FileReport(m.name, status, "; ".join(reasons), item_id=item_id, warnings=m.warnings)
            )
    if item_id is not None:
        run.report.items.append(item_id)


# ---------------------------------------------------------------- NIfTI, raster, slides


def _import_nrrd(
    run: _Run, cand: Candidate, deid: bool, uploaded: Mapping[str, list[Path]] | None = None
) -> None:
    """NRRD volumes are read with SimpleITK and stored as NIfTI; only geometry and voxels are
    carried over, so the NRRD header's free-text fields (comments, keys) never reach storage.

    A detached header's ``data file`` must name a file of the same upload (as MetaImage's
    ElementDataFile): the header is rewritten to point at a working copy of it, so SimpleITK never
    opens a path the uploader chose.
    """
    lines, ref = _nrrd_header(cand.path)
    if ref is not None:
        data = _metaio_data_file(cand, ref, uploaded or {}, field="data file")
        assert data is not None  # NRRD has no LOCAL
        stem = uuid.uuid4().hex
        raw = run.work / f"{stem}.raw"
        _link_or_copy(data, raw)
        path = run.work / f"{stem}.nhdr"
        path.write_bytes("".join(f"{ln}\n" for ln in lines + [f"data file: {raw.name}"]).encode("latin-1"))
        _import_itk(run, cand, path, deid)
        return
    path = cand.path
    if path.suffix.lower() not in (".nrrd", ".nhdr"):  # SimpleITK chooses its reader by extension
        path = run.work / f"{uuid.uuid4().hex}.nrrd"
        shutil.copyfile(cand.path, path)
    _import_itk(run, cand, path, deid)


def _nrrd_header(path: Path) -> tuple[list[str], str | None]:
    """The header lines of an NRRD file without its ``data file`` field, and that field's value
    (``None`` when the data is attached)."""
    with open(path, "rb") as fh:
        raw = fh.read(_METAIO_MAX_HEADER)
    lines: list[str] = []
    ref: str | None = None
    for line in raw.decode("latin-1").split("\n"):
        line = line.rstrip("\r")
        if not line:
            break  # a blank line ends the header; attached data follows
        key, sep, value = line.partition(":")
        if sep and not value.startswith("=") and key.strip().lower() in ("data file", "datafile"):
            ref = value.strip()
            break  # LIST data files would follow; refused by the caller as multi-file
        lines.append(line)
    return lines, ref


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _import_itk(run: _Run, cand: Candidate, path: Path, deid: bool) -> None:
    """Read a volume with SimpleITK and import it as NIfTI (geometry and voxels only)."""
    stem = uuid.uuid4().hex
    vol = read_itk(str(path), limits=run.limits.image)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine()  # LPS → RAS, index order (x, y, z)
    img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(vol.array, (2, 1, 0))), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    converted = run.work / f"{stem}-converted.nii"
    nib.save(img, str(converted))
    _import_nifti(run, Candidate(cand.name, converted), deid)


# ---------------------------------------------------------------- MetaImage

#: MetaIO header keys carried over (geometry and data layout); everything else (Comment, Name,
#: and the free keys writers add, e.g. patient names) is dropped before SimpleITK reads the file.
_METAIO_KEEP = frozenset(
    {
        "ObjectType",
        "NDims",
        "DimSize",
        "ElementType",
        "ElementSpacing",
        "ElementSize",
        "Offset",
        "Position",
        "Origin",
        "TransformMatrix",
        "Rotation",
        "Orientation",
        "CenterOfRotation",
        "AnatomicalOrientation",
        "BinaryData",
        "BinaryDataByteOrderMSB",
        "ElementByteOrderMSB",
        "CompressedData",
        "CompressedDataSize",
        "ElementNumberOfChannels",
        "HeaderSize",
    }
)
_METAIO_MAX_HEADER = 64 * 1024


@dataclass(frozen=True, slots=True)
class _MetaHeader:
    entries: tuple[tuple[str, str], ...]
    data_file: str
    """ElementDataFile: ``LOCAL`` (voxels follow the header) or a file name."""
    data_offset: int


def _metaio_header(path: Path) -> _MetaHeader:
    with open(path, "rb") as fh:
        raw = fh.read(_METAIO_MAX_HEADER)
    pos, entries = 0, []
    while True:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            raise UnsupportedMedia(
                f"MetaImage header has no ElementDataFile line in its first {len(raw)} bytes"
            )
        line = raw[pos:nl].rstrip(b"\r").decode("latin-1")
        pos = nl + 1
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UnsupportedMedia(f"MetaImage header line {line[:40]!r} is not 'Key = value'")
        entries.append((key.strip(), value.strip()))
        if key.strip() == "ElementDataFile":
            return _MetaHeader(tuple(entries), value.strip(), pos)


def _metaio_data_file(
    header: Candidate, ref: str, uploaded: Mapping[str, list[Path]], *, field: str = "ElementDataFile"
) -> Path | None:
    """The uploaded file a header's ``field`` names (MetaImage ``ElementDataFile``, NRRD ``data
    file``); ``None`` for MetaImage's ``LOCAL``.

    It is looked up among the files of this import by their uploaded names (uploads are stored
    flattened): relative to the header's folder (inside its archive, for archive members), else by
    its base name alone when exactly one file of the same upload or archive has it. Absolute paths,
    drive letters and ``..`` are refused, so only files uploaded with the header are ever read.
    """
    if ref == "LOCAL" and field == "ElementDataFile":
        return None
    norm = ref.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in norm.split("/"):
        raise InvalidInput(
            f"{field} {ref!r} is an absolute path or leaves the upload ('..'); refused",
            detail={"field": field},
        )
    if not norm or norm.upper().startswith("LIST") or len(norm.split()) > 1 or "%" in norm:
        raise UnsupportedMedia(
            f"{field} {ref!r}: multi-file data (LIST or a file pattern) is not supported; "
            "use one data file or a .mha"
        )
    container, sep, member = header.name.rpartition(":")  # "archive.zip:dir/x.mhd" or "x.mhd"
    prefix = container + sep
    folder = posixpath.dirname(member)
    found = uploaded.get(prefix + posixpath.normpath(posixpath.join(folder, norm)), [])
    if not found:
        base = posixpath.basename(norm)
        found = [
            p
            for name, paths in uploaded.items()
            if name.startswith(prefix) and ":" not in name[len(prefix) :] and posixpath.basename(name) == base
            for p in paths
        ]
    if not found:
        raise InvalidInput(f"{field} {ref!r} is not in the upload; upload it with the header")
    if len(found) > 1:
        raise InvalidInput(f"{field} {ref!r}: {len(found)} uploaded files have that name")
    if found[0] == header.path:
        raise InvalidInput(f"{field} {ref!r} names the header itself")
    return found[0]


def _uploaded_names(candidates: list[Candidate]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for c in candidates:
        out.setdefault(c.name.replace("\\", "/"), []).append(c.path)
    return out


def _metaimage_data_files(candidates: list[Candidate], uploaded: Mapping[str, list[Path]]) -> dict[Path, str]:
    """Data files named by the MetaImage and detached NRRD headers of the upload (data file ->
    header name), so they are not imported on their own. Headers are found by extension here (a
    hint only)."""
    out: dict[Path, str] = {}
    for cand in candidates:
        suffix = cand.path.suffix.lower()
        if suffix not in (".mhd", ".mha", ".nhdr"):
            continue
        try:
            if suffix == ".nhdr":
                ref = _nrrd_header(cand.path)[1]
                data = _metaio_data_file(cand, ref, uploaded, field="data file") if ref else None
            elif sniff(cand.path) is FileKind.METAIMAGE:
                data = _metaio_data_file(cand, _metaio_header(cand.path).data_file, uploaded)
            else:
                continue
        except (MedlabelError, OSError):
            continue  # reported when the header itself is imported
        if data is not None:
            out[data] = cand.name
    return out


def _import_metaimage(run: _Run, cand: Candidate, uploaded: Mapping[str, list[Path]], deid: bool) -> None:
    """MetaImage (``.mha``, ``.mhd`` + data file) as a NIfTI volume, like NRRD. The header is
    rewritten with the geometry keys only, and the data file must lie in the upload."""
    header = _metaio_header(cand.path)
    data = _metaio_data_file(cand, header.data_file, uploaded)
    stem = uuid.uuid4().hex
    text = "".join(f"{k} = {v}\n" for k, v in header.entries if k in _METAIO_KEEP)
    if data is None:
        target = run.work / f"{stem}.mha"
        with open(cand.path, "rb") as src, open(target, "wb") as out:
            out.write(f"{text}ElementDataFile = LOCAL\n".encode("latin-1"))
            src.seek(header.data_offset)
            shutil.copyfileobj(src, out, _CHUNK)
    else:
        raw = run.work / f"{stem}.raw"
        _link_or_copy(data, raw)
        target = run.work / f"{stem}.mhd"
        target.write_bytes(f"{text}ElementDataFile = {raw.name}\n".encode("latin-1"))
    _import_itk(run, cand, target, deid)


def _import_nifti(run: _Run, cand: Candidate, deid: bool) -> None:
    """One ``volume`` item per NIfTI file; a 4D file (time points, diffusion directions, cardiac
    phases) gives one item per volume along its 4th axis, all on the one stored file
    (``meta.volume_index``), up to ``IngestLimits.max_volumes``; beyond that only volume 0, with
    a warning. The items of one file are stored in one transaction."""
    vol = read_nifti(str(cand.path), limits=run.limits.image)  # validates geometry and data
    try:
        img = nib.load(str(cand.path))
    except (nib.filebasedimages.ImageFileError, OSError, ValueError) as exc:
        raise UnsupportedMedia(f"not a readable NIfTI file: {exc}") from exc
    assert isinstance(img, nib.Nifti1Image | nib.Nifti2Image)
    n_vol = int(img.shape[3]) if len(img.shape) >= 4 else 1
    split = 1 < n_vol <= run.limits.max_volumes
    warnings = [w for w in vol.warnings if not w.startswith("4D NIfTI with")]
    if split:  # the last volume read too: a file cut short fails here, not when it is viewed
        read_nifti(str(cand.path), volume_index=n_vol - 1, limits=run.limits.image)
    elif n_vol > 1:
        warnings.append(
            f"4D NIfTI with {n_vol} volumes, more than {run.limits.max_volumes} "
            "(MEDLABEL_IMPORT_MAX_VOLUMES): only volume 0 is imported"
        )
    if deid:
        img = deidentify_nifti(img)
    try:
        raw = img.to_bytes()
    except (ValueError, OSError, EOFError) as exc:
        raise UnsupportedMedia(f"NIfTI data unreadable (truncated?): {exc}") from exc
    data = gzip.compress(raw, compresslevel=6, mtime=0)
    sha = hashlib.sha256(data).hexdigest()
    keys = [f"sha:{sha}"] + [f"sha:{sha}:v{t}" for t in range(1, n_vol if split else 1)]
    known = {k for k in keys if run.known_key(k) is not None}
    if len(known) == len(keys):
        run.report.add(FileReport(cand.name, "duplicate", "already imported (same content)"))
        return
    blob = run.blobs.put(data)
    z, y, x = vol.shape
    items = []
    for t, key in enumerate(keys):
        if key in known:  # e.g. volume 0 of a 4D file imported before volumes were split
            continue
        meta: dict[str, Any] = {
            "spacing": [float(v) for v in vol.spacing],
            "windows": [],
            "presets": [],
            "volumes": n_vol,
            "warnings": warnings[:50],
        }
        name = f"NIfTI volume {x}x{y}x{z}"
        if split:
            meta["volume_index"] = t
            name += f", volume {t + 1} of {n_vol}"
        items.append(
            _new_item(
                run,
                kind="volume",
                source_format="nifti",
                name=name,
                dedup_key=key,
                width=x,
                height=y,
                frames=z,
                blob_sha256=blob,
                meta=meta,
            )
        )
    ids = run.create_items(items, blob=blob)
    if ids is None:
        _report_single(run, cand.name, None, (), warnings)
        return
    if split:
        warnings = [f"4D NIfTI: {n_vol} volumes imported as items {', '.join(map(str, ids))}", *warnings]
    _report_single(run, cand.name, ids[0], (), warnings)
    run.report.items.extend(ids[1:])


def _png_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype == np.uint16 and arr.ndim == 2:
        im = PILImage.fromarray(arr)
    elif arr.dtype == np.uint8:
        im = PILImage.fromarray(arr)
    else:
        from medlabel.imaging.render import to_uint8

        im = PILImage.fromarray(to_uint8(arr))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _import_raster(run: _Run, cand: Candidate, kind: FileKind) -> None:
    image = read_raster(str(cand.path), limits=run.limits.image)
    data = _png_bytes(np.asarray(image.pixels[0]))
    sha = hashlib.sha256(data).hexdigest()
    key = f"sha:{sha}"
    if run.known_key(key) is not None:
        run.report.add(FileReport(cand.name, "duplicate", "already imported (same pixels)"))
        return
    blob = run.blobs.put(data)
    info = image.info
    item = _new_item(
        run,
        kind="image",
        source_format=kind.value,
        name=f"{kind.value.upper()} image {info.columns}x{info.rows}",
        dedup_key=key,
        width=info.columns,
        height=info.rows,
        frames=1,
        blob_sha256=blob,
        meta={
            "spacing": list(info.pixel_spacing) if info.pixel_spacing else None,
            "windows": [],
            "presets": [],
            "photometric": str(info.photometric),
            "warnings": list(info.warnings)[:50],
        },
    )
    _report_single(run, cand.name, run.create_item(item, blob=blob), (), list(info.warnings))


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _import_slide(run: _Run, cand: Candidate, deid: bool) -> None:
    with open_slide(str(cand.path), limits=run.limits.image) as slide:
        info = slide.info
    if deid:
        # the upload is a working copy: label/macro images and identifying tags are removed in place
        scrub = scrub_slide_tiff(cand.path)
        notes = [f"removed associated image: {x}" for x in scrub.removed_images]
        if scrub.dropped_fields:
            notes.append("removed description fields: " + ", ".join(scrub.dropped_fields))
    else:
        notes = ["de-identification is off for this project: slide stored as uploaded"]
    sha = _file_sha(cand.path)
    key = f"sha:{sha}"
    if run.known_key(key) is not None:
        run.report.add(FileReport(cand.name, "duplicate", "already imported (same content)"))
        return
    blob = run.put_file(cand.path)
    warnings = list(info.warnings) + notes
    item = _new_item(
        run,
        kind="slide",
        source_format="tiff",
        name=f"slide {info.width}x{info.height}",
        dedup_key=key,
        width=info.width,
        height=info.height,
        frames=1,
        blob_sha256=blob,
        meta={
            "levels": [[lv.width, lv.height] for lv in info.levels],
            "mpp": list(info.mpp) if info.mpp else None,
            "vendor": info.vendor,
            "warnings": warnings[:50],
        },
    )
    _report_single(run, cand.name, run.create_item(item, blob=blob), (), warnings)


# ---------------------------------------------------------------- entry


def deid_for(
    settings: DeidSettings, secret_key: bytes, sessions: sessionmaker[Session], project_id: int
) -> tuple[DeidConfig | None, DeidContext | None]:
    """The de-identification configuration and DB stores of a project (None, None when off)."""
    if not settings.enabled:
        return None, None
    secret = project_secret(secret_key, project_id)
    config = DeidConfig(project_secret=secret, options=frozenset(Option(o) for o in settings.options))
    ctx = DeidContext(
        pseudonyms=DbPseudonymStore(sessions, project_id, secret),
        date_offsets=DbDateOffsetStore(sessions, project_id, secret),
    )
    return config, ctx


DICOMDIR_NOTE = (
    "DICOMDIR index (its records repeat patient identity); the image files it references are "
    "imported on their own"
)


def not_importable(kind: FileKind) -> UnsupportedMedia:
    return UnsupportedMedia(
        f"file kind {kind.value!r} is not importable (DICOM, NIfTI, NRRD, MetaImage, PNG, JPEG, TIFF, "
        "pyramidal TIFF/SVS, or a ZIP of those)"
    )


# ---------------------------------------------------------------- prepared ahead (upload sessions)


@by_fields
@dataclass(slots=True)
class PreparedDicom:
    """A DICOM file prepared ahead of its import (an upload session's PUT): the de-identified
    file (written and fsync'd), its SHA-256, and what grouping and storing need."""

    dicom: _Dicom
    sha256: str
    synced: bool = True
    """False: written but not fsync'd yet (``store_prepared`` fsyncs it before linking)."""
    stored: bool = False
    """Linked into the blob store, its directories fsync'd, when it was received (a batch
    upload): ``store_prepared`` only checks that the blob is still there."""
    pieces: list[bytes | memoryview] | None = None
    """The de-identified file's bytes while they wait to be written (``prepare_dicom_file(...,
    defer=True)``): the file at ``path`` does not exist until ``write_prepared`` wrote them."""

    @property
    def path(self) -> Path:
        return self.dicom.path

    @property
    def sop_instance_uid(self) -> str:
        return self.dicom.info.uids.sop_instance_uid


def prepare_dicom_file(
    path: Path | bytes,
    name: str,
    *,
    config: DeidConfig | None,
    ctx: DeidContext | None,
    work: Path,
    limits: IngestLimits | None = None,
    sync: bool = True,
    defer: bool = False,
) -> PreparedDicom:
    """Prepare one DICOM file now, exactly as an import does (read, pixel check, de-identify in
    place, serialise) into ``work``, hashed (and fsync'd when ``sync``; else ``store_prepared``
    does it). Raises ``MedlabelError`` for a refused file. ``path`` is the original file (left
    for the caller to delete) or its bytes.

    With ``defer``, nothing is written: the result holds the bytes (``pieces``) for
    :func:`write_prepared`, so that the caller writes them on an I/O thread. Creating and
    writing a file can wait for the file system (its journal's commits behind other threads'
    fsyncs, or the inode allocator: ≈ 1 ms a file measured), which a thread doing CPU work
    should not."""
    digest: list[str] = []
    held: list[list[bytes | memoryview]] = []

    def write(target: Path, pieces: list[bytes | memoryview]) -> None:
        if defer:
            h = hashlib.sha256()
            for piece in pieces:
                h.update(piece)
            digest.append(h.hexdigest())
            held.append(pieces)
            return
        digest.append(write_new_file(target, pieces, sync=sync, hashed=True) or "")

    d = _prepare_dicom(
        Candidate(name, path if isinstance(path, Path) else work / name),
        config=config,
        ctx=ctx,
        limits=limits or IngestLimits.from_env(),
        work=work,
        stage=write,
        source=None if isinstance(path, Path) else path,
    )
    if defer:
        return PreparedDicom(d, digest[0], False, pieces=held[0])
    return PreparedDicom(d, digest[0], sync)


def write_prepared(prepared: PreparedDicom, *, deferred: bool = False) -> None:
    """Write and fsync the held bytes of a file prepared with ``defer`` (then dropped): the file
    is created at ``prepared.path`` (it must not exist; a failure leaves nothing there). With
    ``deferred``, not fsync'd (``prepared.synced`` stays False): the caller makes it durable
    with its group (``storage.files.FilesystemSync``)."""
    pieces = prepared.pieces
    if pieces is None:
        return
    try:
        write_new_file(prepared.path, pieces, sync=True, hashed=False, deferred=deferred)
    finally:
        prepared.pieces = None
    prepared.synced = not deferred


def store_prepared(
    *,
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    actor: Actor,
    project_id: int,
    prepared: list[PreparedDicom],
    report: ImportReport,
    work: Path,
    job_id: str | None = None,
    limits: IngestLimits | None = None,
) -> ImportReport:
    """Group and store files prepared ahead, as ``run_import`` does after its preparation step
    (de-duplication, series grouping, quarantine, blobs adopted by link, one transaction per
    item, audit); lines go to ``report``. The files in ``work`` are linked, not deleted."""
    run = _Run(sessions, blobs, actor, project_id, job_id, limits or IngestLimits.from_env(), report, work)
    try:
        for p in prepared:
            if getattr(p, "stored", False):  # (journals of an older version lack the field)
                run.stored.add(p.path)
            if not p.synced:
                run.sync_written(p.path, p.sha256)  # fsync'd on the I/O threads meanwhile
                continue
            done: Future[str] = Future()
            done.set_result(p.sha256)  # written and fsync'd when it was prepared
            run.staged[p.path] = done
        _import_dicoms(run, [p.dicom for p in prepared])
    finally:
        run.close()
    return report


def run_import(
    *,
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    secret_key: bytes,
    actor: Actor,
    project_id: int,
    upload_dir: Path,
    job_id: str | None = None,
    progress: Callable[[float, str], None] = lambda p, m: None,
    limits: IngestLimits | None = None,
    cleanup: bool = True,
) -> ImportReport:
    """Import every file under ``upload_dir`` into the project; returns the per-file report.

    ``upload_dir`` is deleted at the end when ``cleanup`` (the default).
    """
    limits = limits or IngestLimits.from_env()
    report = ImportReport()
    run: _Run | None = None
    try:
        with sessions() as s:
            project = s.get(Project, project_id)
            if project is None:
                raise NotFound(f"no project with id {project_id}")
            settings = deid_settings(project)
        config, ctx = deid_for(settings, secret_key, sessions, project_id)
        work = upload_dir / ".work"
        work.mkdir(exist_ok=True)
        unpack = upload_dir / ".unpacked"
        unpack.mkdir(exist_ok=True)
        run = _Run(sessions, blobs, actor, project_id, job_id, limits, report, work)

        top = sorted(
            p
            for p in upload_dir.rglob("*")
            if p.is_file() and ".work" not in p.parts and ".unpacked" not in p.parts
        )
        candidates: list[Candidate] = []
        kinds: dict[Path, FileKind] = {}  # sniffed once (archive members: below)
        budget = [limits.max_unpacked_bytes, limits.max_files]  # bytes, files left
        for n, p in enumerate(top):
            cand = Candidate(display_name(str(p.relative_to(upload_dir))), p)
            if budget[1] <= 0:
                report.add(
                    FileReport(
                        cand.name, "error", f"the import has more than {limits.max_files} files", "too_large"
                    )
                )
                continue
            try:
                kind = sniff(p)
            except OSError as exc:
                report.add(FileReport(cand.name, "error", f"cannot read: {exc}", "invalid_input"))
                continue
            if kind is FileKind.ZIP:
                sub = unpack / str(n)
                sub.mkdir()
                candidates.extend(expand_zip(cand, sub, limits, budget, report))
            else:
                budget[1] -= 1
                candidates.append(cand)
                kinds[p] = kind
        total = max(len(candidates), 1)
        progress(1, f"{len(candidates)} files to read")
        dicom_cands: list[Candidate] = []
        last_pct = -1
        uploaded = _uploaded_names(candidates)
        data_files = _metaimage_data_files(candidates, uploaded)
        for i, cand in enumerate(candidates):
            try:
                if cand.path in data_files:
                    report.add(FileReport(cand.name, "skipped", f"data file of {data_files[cand.path]}"))
                    continue
                kind = kinds[cand.path] if cand.path in kinds else sniff(cand.path)
                if kind is FileKind.DICOM:
                    dicom_cands.append(cand)  # prepared below, in worker processes when many
                elif kind is FileKind.DICOMDIR:
                    report.add(FileReport(cand.name, "skipped", DICOMDIR_NOTE))
                elif kind is FileKind.NIFTI:
                    _import_nifti(run, cand, deid=settings.enabled)
                elif kind is FileKind.NRRD:
                    _import_nrrd(run, cand, deid=settings.enabled, uploaded=uploaded)
                elif kind is FileKind.METAIMAGE:
                    _import_metaimage(run, cand, uploaded, deid=settings.enabled)
                elif kind in (FileKind.PNG, FileKind.JPEG, FileKind.TIFF):
                    _import_raster(run, cand, kind)
                elif kind is FileKind.WSI_TIFF:
                    _import_slide(run, cand, deid=settings.enabled)
                elif kind is FileKind.ZIP:
                    raise UnsupportedMedia(
                        "nested archives are not unpacked; upload the inner archive itself"
                    )
                else:
                    raise not_importable(kind)
            except MedlabelError as exc:
                report.add(FileReport(cand.name, "error", exc.message, exc.code))
            except Exception as exc:  # noqa: BLE001  (one unreadable file must not stop the import)
                log.warning("import of %s failed unexpectedly", cand.name, exc_info=True)
                report.add(
                    FileReport(cand.name, "error", f"unreadable: {type(exc).__name__}: {exc}", "unreadable")
                )
            pct = 1 + int(80 * (i + 1) / total)
            if pct != last_pct:
                last_pct = pct
                progress(pct, f"read {i + 1} of {len(candidates)} files")
        if dicom_cands:
            first = last_pct

            def dicom_progress(done: int) -> None:
                nonlocal last_pct
                pct = first + int((81 - first) * done / len(dicom_cands))
                if pct != last_pct:
                    last_pct = pct
                    progress(pct, f"read {done} of {len(dicom_cands)} DICOM files")

            dicoms = _prepare_dicoms(
                run, dicom_cands, config=config, ctx=ctx, limits=limits, progress=dicom_progress
            )
        else:
            dicoms = []
        dicoms = run.written(dicoms)
        if dicoms:
            progress(85, f"storing {len(dicoms)} DICOM instances")
            _import_dicoms(run, dicoms)
        progress(99, "done")
        return report
    finally:
        if run is not None:
            run.close()
        if cleanup:
            shutil.rmtree(upload_dir, ignore_errors=True)
