"""Import: uploaded files and archives → de-identified blobs → items.

The flow (see ``docs/ingest.md``):

1. **Expand** the upload folder: ZIP archives are unpacked member by member with caps (no
   absolute or ``..`` paths, a compression-ratio cap, a total-size cap counted on the bytes
   actually inflated, a member-count cap).
2. **Sniff** each file by content and read it with the imaging core. DICOM is de-identified
   (PS3.15 Annex E via ``medlabel.deid``) before anything is stored; NIfTI headers are scrubbed;
   PNG/JPEG/TIFF are re-encoded as PNG (no metadata survives); pyramidal TIFF/SVS slides lose their
   label/macro images and identifying tags (``medlabel.deid.slide``), the pyramid is kept.
3. **Group** DICOM instances into series stacks (``medlabel.imaging.series``): stacks of two or
   more single-frame grey slices become ``volume`` items, everything else ``image`` items.
4. **Store**: the item's blobs are written first, then the item, its instances, its quarantine
   entry and the audit record in one transaction. A failure leaves no item (orphan blobs are
   content-addressed and harmless).

Every file gets a line in the report; one bad file never stops the rest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction
from medlabel.deid import DeidConfig, DeidContext, Option, deidentify_dataset, deidentify_nifti
from medlabel.deid.slide import scrub_slide_tiff
from medlabel.errors import InvalidInput, MedlabelError, NotFound, UnsupportedMedia
from medlabel.imaging import FileKind, open_slide, read_itk, read_nifti, read_raster, sniff
from medlabel.imaging.dicom import image_from_dataset, info_from_dataset, open_dataset
from medlabel.imaging.model import ImageInfo
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
from medlabel.storage.blobs import BlobStore
from medlabel.storage.models import Project

__all__ = [
    "safe_name",
    "IngestLimits",
    "FileReport",
    "ImportReport",
    "run_import",
    "uploads_root",
    "new_upload_dir",
    "borrowed_sessions",
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


@dataclass(slots=True)
class _Dicom:
    name: str
    path: Path
    info: ImageInfo
    sha256: str
    reasons: tuple[str, ...]
    pseudonym: str
    warnings: list[str]


def _prepare_dicom(
    cand: Candidate,
    *,
    config: DeidConfig | None,
    ctx: DeidContext | None,
    limits: IngestLimits,
    work: Path,
) -> _Dicom:
    sink: list[str] = []
    ds = open_dataset(str(cand.path), warnings_sink=sink)
    if getattr(ds, "file_meta", None) is not None and ds.file_meta.get("MediaStorageSOPClassUID") == (
        "1.2.840.10008.1.3.10"
    ):
        raise UnsupportedMedia("a DICOMDIR index, not an image; import the files it references")
    if not any(t in ds for t in _PIXEL_TAGS):
        sop = str(ds.get("SOPClassUID", "") or "unknown")
        raise UnsupportedMedia(f"no Pixel Data (7FE0,0010): SOP Class {sop} is not an image")
    # decode once: truncated or undecodable pixel data is refused before anything is stored
    image_from_dataset(ds, limits=limits.image, warnings_sink=sink)
    reasons: tuple[str, ...] = ()
    pseudonym = str(ds.get("PatientID", "") or "")
    out: Dataset = ds
    if config is not None and ctx is not None:
        res = deidentify_dataset(ds, config, ctx)
        out, reasons, pseudonym = res.dataset, res.reasons, res.pseudonym
        sink.extend(res.warnings)
    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(buf, out, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidInput(f"cannot write the de-identified data set: {exc}") from exc
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    target = work / f"{sha}.dcm"
    target.write_bytes(data)
    info = info_from_dataset(out)
    return _Dicom(cand.name, target, info, sha, tuple(reasons), pseudonym, list(dict.fromkeys(sink)))


def _window_meta(info: ImageInfo) -> list[dict[str, Any]]:
    return [{"center": w.center, "width": w.width, "explanation": w.explanation} for w in info.windows]


def _presets_for(modality: str) -> list[str]:
    return sorted(PRESETS) if modality.upper() == "CT" else []


# ---------------------------------------------------------------- the run


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

    def put_file(self, path: Path) -> str:
        with open(path, "rb") as fh:
            return self.blobs.put_stream(fh)

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

    def create_item(
        self,
        item: Item,
        *,
        instances: list[Instance] | None = None,
        study: tuple[str, str, str] | None = None,
        reasons: tuple[str, ...] = (),
        blob: str = "",
        files: int = 1,
    ) -> int | None:
        """One transaction: study, item, instances, quarantine entry, audit record (last)."""
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
                for inst in instances or []:
                    inst.item_id = item.id
                    inst.study_id = study_id
                    s.add(inst)
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
                audit.record(
                    s,
                    self.actor.event(
                        AuditAction.IMAGE_IMPORT,
                        object_type="item",
                        object_id=str(item.id),
                        project_id=self.project_id,
                        detail={
                            "kind": item.kind,
                            "format": item.source_format,
                            "files": files,
                            "job_id": self.job_id,
                            "status": item.status,
                        },
                    ),
                )
                return item.id
        except IntegrityError:
            return None  # a concurrent import stored the same content first


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
                _store_image(run, m)
            except MedlabelError as exc:
                run.report.add(FileReport(m.name, "error", exc.message, exc.code))


def _store_volume(run: _Run, stack: SeriesStack, members: list[_Dicom]) -> None:
    first = members[0].info
    reasons = tuple(dict.fromkeys(r for m in members for r in m.reasons))
    digest = hashlib.sha256("\n".join(sorted(m.info.uids.sop_instance_uid for m in members)).encode())
    key = f"series:{first.uids.series_instance_uid}:{digest.hexdigest()[:16]}"[:128]
    blobs = [run.put_file(m.path) for m in members]
    ps = first.pixel_spacing or (1.0, 1.0)
    spacing = stack.spacing if stack.spacing > 0 else (first.slice_thickness or 1.0)
    warnings = list(dict.fromkeys(list(stack.warnings) + [w for m in members for w in m.warnings]))
    item = _new_item(
        run,
        kind="volume",
        source_format="dicom",
        name=f"{first.modality or 'DICOM'} series ({len(members)} slices)",
        dedup_key=key,
        patient_pseudonym=members[0].pseudonym[:64],
        study_uid=first.uids.study_instance_uid,
        series_uid=first.uids.series_instance_uid,
        modality=first.modality[:16],
        width=first.columns,
        height=first.rows,
        frames=len(members),
        meta={
            "spacing": [float(spacing), float(ps[0]), float(ps[1])],
            "windows": _window_meta(first),
            "presets": _presets_for(first.modality),
            "photometric": str(first.photometric),
            "warnings": warnings[:50],
        },
    )
    instances = [
        Instance(
            project_id=run.project_id,
            series_uid=m.info.uids.series_instance_uid,
            sop_instance_uid=m.info.uids.sop_instance_uid,
            blob_sha256=b,
            slice_index=i,
            position=float(stack.positions[i]),
            frames=1,
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


def _store_image(run: _Run, m: _Dicom) -> None:
    info = m.info
    blob = run.put_file(m.path)
    item = _new_item(
        run,
        kind="image",
        source_format="dicom",
        name=f"{info.modality or 'DICOM'} image",
        dedup_key=f"sop:{info.uids.sop_instance_uid}"[:128],
        patient_pseudonym=m.pseudonym[:64],
        study_uid=info.uids.study_instance_uid,
        series_uid=info.uids.series_instance_uid,
        modality=info.modality[:16],
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
    inst = Instance(
        project_id=run.project_id,
        series_uid=info.uids.series_instance_uid,
        sop_instance_uid=info.uids.sop_instance_uid,
        blob_sha256=blob,
        slice_index=0,
        position=None,
        frames=info.frames,
    )
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


# ---------------------------------------------------------------- NIfTI, raster, slides


def _import_nrrd(run: _Run, cand: Candidate, deid: bool) -> None:
    """NRRD volumes are read with SimpleITK and stored as NIfTI; only geometry and voxels are
    carried over, so the NRRD header's free-text fields (comments, keys) never reach storage."""
    stem = uuid.uuid4().hex
    path = cand.path
    if path.suffix.lower() not in (".nrrd", ".nhdr"):  # SimpleITK chooses its reader by extension
        path = run.work / f"{stem}.nrrd"
        shutil.copyfile(cand.path, path)
    vol = read_itk(str(path), limits=run.limits.image)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine()  # LPS → RAS, index order (x, y, z)
    img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(vol.array, (2, 1, 0))), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    converted = run.work / f"{stem}-converted.nii"
    nib.save(img, str(converted))
    _import_nifti(run, Candidate(cand.name, converted), deid)


def _import_nifti(run: _Run, cand: Candidate, deid: bool) -> None:
    vol = read_nifti(str(cand.path), limits=run.limits.image)  # validates geometry and data
    try:
        img = nib.load(str(cand.path))
    except (nib.filebasedimages.ImageFileError, OSError, ValueError) as exc:
        raise UnsupportedMedia(f"not a readable NIfTI file: {exc}") from exc
    assert isinstance(img, nib.Nifti1Image | nib.Nifti2Image)
    if deid:
        img = deidentify_nifti(img)
    try:
        raw = img.to_bytes()
    except (ValueError, OSError, EOFError) as exc:
        raise UnsupportedMedia(f"NIfTI data unreadable (truncated?): {exc}") from exc
    data = gzip.compress(raw, compresslevel=6, mtime=0)
    sha = hashlib.sha256(data).hexdigest()
    key = f"sha:{sha}"
    if run.known_key(key) is not None:
        run.report.add(FileReport(cand.name, "duplicate", "already imported (same content)"))
        return
    blob = run.blobs.put(data)
    z, y, x = vol.shape
    n_vol = int(img.shape[3]) if len(img.shape) >= 4 else 1
    item = _new_item(
        run,
        kind="volume",
        source_format="nifti",
        name=f"NIfTI volume {x}x{y}x{z}",
        dedup_key=key,
        width=x,
        height=y,
        frames=z,
        blob_sha256=blob,
        meta={
            "spacing": [float(v) for v in vol.spacing],
            "windows": [],
            "presets": [],
            "volumes": n_vol,
            "warnings": list(vol.warnings)[:50],
        },
    )
    _report_single(run, cand.name, run.create_item(item, blob=blob), (), list(vol.warnings))


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


def _deid_for(
    settings: DeidSettings, secret_key: bytes, sessions: sessionmaker[Session], project_id: int
) -> tuple[DeidConfig | None, DeidContext | None]:
    if not settings.enabled:
        return None, None
    secret = project_secret(secret_key, project_id)
    config = DeidConfig(project_secret=secret, options=frozenset(Option(o) for o in settings.options))
    ctx = DeidContext(
        pseudonyms=DbPseudonymStore(sessions, project_id, secret),
        date_offsets=DbDateOffsetStore(sessions, project_id, secret),
    )
    return config, ctx


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
    try:
        with sessions() as s:
            project = s.get(Project, project_id)
            if project is None:
                raise NotFound(f"no project with id {project_id}")
            settings = deid_settings(project)
        config, ctx = _deid_for(settings, secret_key, sessions, project_id)
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
        total = max(len(candidates), 1)
        progress(1, f"{len(candidates)} files to read")
        dicoms: list[_Dicom] = []
        last_pct = -1
        for i, cand in enumerate(candidates):
            try:
                kind = sniff(cand.path)
                if kind is FileKind.DICOM:
                    dicoms.append(_prepare_dicom(cand, config=config, ctx=ctx, limits=limits, work=work))
                elif kind is FileKind.DICOMDIR:
                    report.add(
                        FileReport(
                            cand.name,
                            "skipped",
                            "DICOMDIR index (its records repeat patient identity); the image files "
                            "it references are imported on their own",
                        )
                    )
                elif kind is FileKind.NIFTI:
                    _import_nifti(run, cand, deid=settings.enabled)
                elif kind is FileKind.NRRD:
                    _import_nrrd(run, cand, deid=settings.enabled)
                elif kind in (FileKind.PNG, FileKind.JPEG, FileKind.TIFF):
                    _import_raster(run, cand, kind)
                elif kind is FileKind.WSI_TIFF:
                    _import_slide(run, cand, deid=settings.enabled)
                elif kind is FileKind.ZIP:
                    raise UnsupportedMedia(
                        "nested archives are not unpacked; upload the inner archive itself"
                    )
                else:
                    raise UnsupportedMedia(
                        f"file kind {kind.value!r} is not importable (DICOM, NIfTI, NRRD, PNG, JPEG, TIFF, "
                        "pyramidal TIFF/SVS, or a ZIP of those)"
                    )
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
        if dicoms:
            progress(85, f"storing {len(dicoms)} DICOM instances")
            _import_dicoms(run, dicoms)
        progress(99, "done")
        return report
    finally:
        if cleanup:
            shutil.rmtree(upload_dir, ignore_errors=True)
