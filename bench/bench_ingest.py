"""Ingest with de-identification: a generated 512x512 CT series through medlabel vs Orthanc.

medlabel: the files are POSTed as one multipart upload to ``/api/v1/projects/{id}/imports``
(in-process ASGI client) and the ``items.import`` job runs here: sniff, decode-check, PS3.15
de-identification, series grouping, blob writes, one volume item. Orthanc (Debian package
``orthanc``, started on loopback with a temporary configuration) receives each file with
``POST /instances`` over HTTP and indexes it (no de-identification).

Run: .venv/bin/python bench/bench_ingest.py [--quick] [--slices N]
Prints seconds, slices per second and the ratio medlabel / Orthanc (lower is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_series(folder: Path, slices: int, size: int = 512, seed: int = 0) -> list[Path]:
    """A CT series with a body-like ellipse and noise, one file per slice."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size]
    body = ((x - size / 2) / (0.42 * size)) ** 2 + ((y - size / 2) / (0.32 * size)) ** 2 < 1
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(slices):
        hu = np.where(body, 40, -1000) + rng.normal(0, 12, (size, size))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(generate_uid())
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.PatientBirthDate = "BENCH-0001", "Bench^Patient", "19600101"
        ds.StudyDate, ds.SeriesDate, ds.AccessionNumber = "20240101", "20240101", "ACC123456"
        ds.InstitutionName, ds.ReferringPhysicianName = "Bench Hospital", "Dr^Who"
        ds.Modality = "CT"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-180.0, -180.0, float(k)]
        ds.InstanceNumber = k + 1
        ds.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
        p = folder / f"ct{k:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def orthanc() -> Iterator[str | None]:
    """Start Orthanc on loopback with a throw-away configuration; yields its URL (None if absent)."""
    exe = shutil.which("Orthanc")
    if exe is None:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="orthanc-bench-"))
    port = free_port()
    cfg = {
        "Name": "bench",
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "index"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpThreadsCount": 50,
        "Plugins": [],
    }
    (tmp / "orthanc.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen(
        [exe, str(tmp / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            yield None
            return
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def orthanc_ingest(url: str, paths: list[Path], workers: int = 4) -> float:
    with httpx.Client(base_url=url, timeout=60) as client:

        def post(p: Path) -> None:
            r = client.post(
                "/instances", content=p.read_bytes(), headers={"Content-Type": "application/dicom"}
            )
            r.raise_for_status()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(post, paths))
        return time.perf_counter() - t0


def medlabel_ingest(paths: list[Path]) -> tuple[float, dict[str, object]]:
    from fastapi.testclient import TestClient

    from medlabel.accounts import service as accounts
    from medlabel.api.app import create_app
    from medlabel.config import Settings
    from medlabel.jobs import service as jobs
    from medlabel.projects import service as projects
    from medlabel.runtime import create_runtime
    from medlabel.storage.db import session_scope

    tmp = Path(tempfile.mkdtemp(prefix="medlabel-bench-"))
    rt = create_runtime(Settings(home=tmp / "home", database_url=f"sqlite:///{tmp / 'db.sqlite'}"))
    try:
        with session_scope(rt.sessions) as s:
            user = accounts.create_user(s, "bench", "a-long-enough-password", role="admin")
            actor = accounts.Actor(user.id, user.username, user.role)
            pid = projects.create_project(s, actor, "bench").id
        with TestClient(create_app(rt)) as client:
            r = client.post(
                "/api/v1/auth/login", json={"username": "bench", "password": "a-long-enough-password"}
            )
            headers = {"Authorization": f"Bearer {r.json()['token']}"}
            t0 = time.perf_counter()
            files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]
            job = client.post(f"/api/v1/projects/{pid}/imports", headers=headers, files=files).json()
            jobs.execute_job(rt, job["id"])
            elapsed = time.perf_counter() - t0
            with session_scope(rt.sessions) as s:
                result = dict(jobs.get_job(s, job["id"]).result or {})
        return elapsed, result
    finally:
        rt.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 slices instead of 300")
    ap.add_argument("--slices", type=int, default=None)
    args = ap.parse_args()
    n = args.slices or (40 if args.quick else 300)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        paths = ct_series(Path(d) / "series", n)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"generated {n} slices 512x512 ({mb:.0f} MB) in {time.perf_counter() - t0:.1f} s; cpus={os.cpu_count()}"
        )
        ours, result = medlabel_ingest(paths)
        print(
            f"medlabel (upload + de-identify + import): {ours:.2f} s, {n / ours:.0f} slices/s; {result['counts']}"
        )
        with orthanc() as url:
            if url is None:
                print("Orthanc: not available (apt-get install -y orthanc); no ratio")
                return
            theirs = orthanc_ingest(url, paths)
            print(
                f"Orthanc 1.x POST /instances (4 clients, no de-identification): {theirs:.2f} s, {n / theirs:.0f} slices/s"
            )
            print(f"ratio medlabel/Orthanc: {ours / theirs:.2f} (lower is faster)")


if __name__ == "__main__":
    main()
