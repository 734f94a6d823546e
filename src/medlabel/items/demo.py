"""Demo content: a few real images in the demo project (idempotent: re-imports are no-ops)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian
from sqlalchemy.orm import Session

from medlabel.accounts.service import Actor
from medlabel.config import Settings, ensure_home
from medlabel.demo import DEMO_HOOKS
from medlabel.items.ingest import borrowed_sessions, new_upload_dir, run_import
from medlabel.storage.blobs import LocalBlobStore

__all__ = ["items_demo_hook", "phantom_ct_series"]


def phantom_ct_series(folder: Path, *, slices: int = 24, size: int = 96) -> list[Path]:
    """A CT series of a water ball with a bone rod in air, written as DICOM files (HU)."""
    folder.mkdir(parents=True, exist_ok=True)
    z, y, x = np.mgrid[0:slices, 0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    ball = (x - c) ** 2 + (y - c) ** 2 + ((z - slices / 2) * size / slices) ** 2 < (0.4 * size) ** 2
    rod = (x - c - size * 0.15) ** 2 + (y - c) ** 2 < (0.06 * size) ** 2
    hu = np.where(rod & ball, 700, np.where(ball, 0, -1000)).astype(np.int16)
    uid = "1.2.826.0.1.3680043.10.1466.900"
    paths = []
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(f"{uid}.3.{k + 1}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = f"{uid}.1"
        ds.SeriesInstanceUID = f"{uid}.2"
        ds.FrameOfReferenceUID = f"{uid}.4"
        ds.PatientID = "DEMO-0001"
        ds.PatientName = "Phantom^Demo"
        ds.StudyDate = "20240102"
        ds.Modality = "CT"
        ds.BurnedInAnnotation = "NO"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelSpacing = [2.0, 2.0]
        ds.SliceThickness = 2.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.InstanceNumber = k + 1
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype(np.uint16).tobytes()
        p = folder / f"slice{k:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def _real_files() -> list[Path]:
    out: list[Path] = []
    try:
        from pydicom.data import get_testdata_file

        for name in ("CT_small.dcm", "MR_small.dcm"):
            found = get_testdata_file(name)
            if isinstance(found, str):
                out.append(Path(found))
    except (ImportError, ValueError, OSError):
        pass
    try:
        import nibabel

        nii = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
        if nii.exists():
            out.append(nii)
    except ImportError:
        pass
    return out


def items_demo_hook(session: Session, home: Path, project_id: int, actor: Actor) -> list[str]:
    settings = ensure_home(Settings(home=Path(home), database_url=""))
    upload = new_upload_dir(settings.home)
    files = _real_files() + phantom_ct_series(upload / ".gen")
    for i, f in enumerate(files):
        shutil.copyfile(f, upload / f"{i:06d}-{f.name}")
    shutil.rmtree(upload / ".gen", ignore_errors=True)
    report = run_import(
        sessions=borrowed_sessions(session),
        blobs=LocalBlobStore(settings.blob_dir),
        secret_key=settings.secret_key,
        actor=actor,
        project_id=project_id,
        upload_dir=upload,
    )
    counts = report.as_dict()["counts"]
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return [f"demo images: {len(report.items)} new items ({summary} files)"]


if items_demo_hook not in DEMO_HOOKS:
    DEMO_HOOKS.append(items_demo_hook)
