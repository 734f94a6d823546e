"""Factories for the items tests: generated CT series (pydicom datasets with known positions),
uploads through the API, and running an import job in-process."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medlabel.jobs import service as jobs
from medlabel.storage.db import session_scope

PATIENT_ID = "MRN-0042-7781"
PATIENT_NAME = "Doe^Jane^Q"


def ct_series(
    folder: Path,
    *,
    slices: int = 12,
    rows: int = 32,
    cols: int = 40,
    spacing: float = 1.0,
    seed: int = 0,
    shuffle: bool = True,
    patient_id: str = PATIENT_ID,
) -> tuple[list[Path], np.ndarray]:
    """Write a CT series; return the files (shuffled) and the expected HU volume (z ascending)."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1024, 2000, size=(slices, rows, cols), dtype=np.int16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(generate_uid())
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.PatientID = patient_id
        ds.PatientName = PATIENT_NAME
        ds.PatientBirthDate = "19700101"
        ds.StudyDate = "20240315"
        ds.InstitutionName = "St Elsewhere General Hospital"
        ds.Modality = "CT"
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = spacing
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, -20.0, 100.0 + spacing * k]
        ds.InstanceNumber = slices - k  # deliberately not the slice order
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype(np.uint16).tobytes()
        p = folder / f"img{k:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    if shuffle:
        random.Random(seed).shuffle(paths)
    return paths, hu


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def upload(
    client: Any, headers: dict[str, str], project_id: int, files: list[tuple[str, bytes]]
) -> dict[str, Any]:
    r = client.post(
        f"/api/v1/projects/{project_id}/imports",
        headers=headers,
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
    )
    assert r.status_code == 202, r.text
    return r.json()


def run_job(rt: Any, job_id: str) -> dict[str, Any]:
    """Run a queued job here (no worker needed) and return its result."""
    jobs.execute_job(rt, job_id)
    with session_scope(rt.sessions) as s:
        job = jobs.get_job(s, job_id)
        assert job.state == "succeeded", (job.state, job.message, job.error)
        return dict(job.result or {})


def import_via_api(
    client: Any, rt: Any, headers: dict[str, str], project_id: int, paths: list[Path]
) -> dict[str, Any]:
    job = upload(client, headers, project_id, [(p.name, p.read_bytes()) for p in paths])
    return run_job(rt, job["id"])


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in result["files"]}
