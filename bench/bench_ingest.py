"""Ingest with de-identification: a generated 512x512 CT series through medlabel vs Orthanc.

Both servers run in their own processes on loopback and receive the same files over real HTTP.

medlabel: ``medlabel serve --workers 2 --no-worker`` (uvicorn, two server processes), measured
three ways on the same server (the goal, faster than Orthanc, is measured on the batched upload:
the API's path for bulk ingest; the other two rows are the per-file and the one-request paths):

* **upload session**: ``POST /api/v1/projects/{id}/uploads``, then each file
  ``PUT .../uploads/{upload_id}/files/{name}`` from ``--clients`` (4) client threads, as Orthanc
  gets them; each PUT is prepared at once in the server process that takes it (sniff, pixel
  check, PS3.15 de-identification with the project's stores, fsync'd staging), so the per-file
  work of the two server processes overlaps the upload; then ``POST .../commit`` and its
  ``items.import_session`` job (grouping, blobs linked, one volume item, audit) runs in this
  process the moment the 202 arrives, as a ``medlabel worker`` would.
* **upload session, batched** (the goal's figure): the same session route, but the files sent in
  batches of about ``--batch-files`` (20; as many batches as a multiple of the client threads,
  of one size: 16 of 18–19 files for 300 slices and 4 clients), each one multipart ``POST .../uploads/{upload_id}/files`` on
  a connection of its own (so that the server's processes share the batches: a process takes
  whole connections, and 4 long-lived connections on 2 processes often split 3-1), from
  ``--clients`` threads; the server prepares each part on a thread while it receives the next
  ones and fsyncs the prepared files meanwhile (the commit job skips them); then commit and
  job as above.
* **multipart** (third row): the files as one multipart ``POST /api/v1/projects/{id}/imports``,
  then the ``items.import`` job in this process (all the per-file work after the upload).

Timed from the first byte sent to the job's end.
Orthanc (Debian package ``orthanc``, its default ``SyncStorageArea`` fsync on, started with a
temporary configuration): each file ``POST /instances`` from 4 client threads (its API takes
one instance per request); stored and indexed, no de-identification. And batched (its own
batched upload since 1.8.2): the same batches as medlabel's as stored ZIP archives, each
``POST /instances``, from the same threads.

Clients: ``http.client``, one keep-alive connection per thread (≈ 0.1–0.3 ms of client CPU a
request; httpx, used before, needed ≈ 1 ms, taken from the same two CPUs as the servers').

All sides first take one untimed warm-up import of ``WARMUP`` other slices (medlabel: the server
processes' first requests, the import worker processes a long-running worker keeps; Orthanc:
its first-request work). Each repetition then uses fresh medlabel projects and a freshly started
Orthanc, alternating (session, multipart, batched, then Orthanc's two at once after the
batched run); the median of the repetitions is reported (runs vary by tens of percent on small
machines), and for the batched run also the median of each repetition's own ratio to Orthanc's
runs right after it (less moved by the machine's speed drifting over minutes).
``--batched-only`` runs the batched upload and Orthanc's two only (more repetitions in the
same time).

Run: .venv/bin/python bench/bench_ingest.py [--quick] [--slices N] [--repeat N] [--clients N] [--server-workers N]
Prints seconds, slices per second and the ratio medlabel / Orthanc (lower is faster).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

WARMUP = 20
#: Files per batched upload request, about (a 300-slice series from 4 clients: 16 requests of
#: 18 or 19; ``batches``).
BATCH_FILES = 20


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


class Lean:
    """A keep-alive ``http.client`` connection per thread: ≈ 0.1–0.3 ms of client CPU a request,
    against ≈ 1 ms for httpx. On a small machine the client shares the CPUs with the server it
    measures, so both servers are sent their files this way (since 2026-11-29, second session;
    httpx before)."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.headers = dict(headers or {})
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
        return conn

    def request(
        self,
        method: str,
        url: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        *,
        fresh: bool = False,
    ) -> object:
        """Send; the decoded JSON answer (raises on a status ≥ 400). ``fresh``: on a connection
        of its own, closed after (a multi-process server may hand it to another process)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=300) if fresh else self._conn()
        extra = {"Connection": "close"} if fresh else {}
        conn.request(method, url, body=body, headers={**self.headers, **(headers or {}), **extra})
        r = conn.getresponse()
        data = r.read()
        if fresh:
            conn.close()
        if r.status >= 400:
            raise RuntimeError(f"{method} {url}: {r.status} {data[:300]!r}")
        return json.loads(data) if data else None


def multipart(
    paths: list[Path], boundary: str = "medlabel-bench-boundary"
) -> tuple[Iterator[bytes], int, str]:
    """A ``multipart/form-data`` body of ``files`` parts, each file read when its turn comes:
    (chunks, Content-Length, Content-Type)."""
    heads = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{p.name}"\r\n'
            "Content-Type: application/dicom\r\n\r\n"
        ).encode()
        for p in paths
    ]
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + p.stat().st_size + 2 for h, p in zip(heads, paths, strict=True)) + len(tail)

    def chunks() -> Iterator[bytes]:
        for head, p in zip(heads, paths, strict=True):
            yield head
            yield p.read_bytes()
            yield b"\r\n"
        yield tail

    return chunks(), length, f"multipart/form-data; boundary={boundary}"


def split(paths: list[Path], parts: int) -> list[list[Path]]:
    """``paths`` in ``parts`` contiguous runs of sizes differing by at most one."""
    parts = max(1, min(parts, len(paths)))
    size, extra = divmod(len(paths), parts)
    out, at = [], 0
    for i in range(parts):
        n = size + (1 if i < extra else 0)
        out.append(paths[at : at + n])
        at += n
    return out


def batches(paths: list[Path], clients: int, batch_files: int = BATCH_FILES) -> list[list[Path]]:
    """The batches a client sends: about ``batch_files`` files each, as many as a multiple of
    ``clients`` (its connections), all of about one size, so that every connection has the same
    share and they end together (15 batches of 20 on 4 connections left the last round with
    3 batches, one connection idle and a server process under-used: ≈ 4 % of the time)."""
    rounds = max(1, -(-len(paths) // (clients * batch_files)))
    return split(paths, rounds * clients)


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
        _remove_later(tmp)


#: Folders to delete when the bench ends, not between runs: on ext4 without a journal (as on
#: these VMs) the inode allocator skips every inode freed in the last 30 s, so the files a run
#: deleted make the next run's file and directory creation slower (measured: a third of the
#: server's kernel time went to ``__ext4_new_inode``), whichever server comes next.
_LATER: list[Path] = []


def _remove_later(path: Path) -> None:
    _LATER.append(path)


def _remove_now() -> None:
    while _LATER:
        shutil.rmtree(_LATER.pop(), ignore_errors=True)


def orthanc_ingest(url: str, paths: list[Path], workers: int = 4) -> float:
    """POST every file from ``workers`` client threads; seconds until the last is stored."""
    client = Lean(url)

    def post(p: Path) -> None:
        client.request("POST", "/instances", p.read_bytes(), {"Content-Type": "application/dicom"})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, paths))
    return time.perf_counter() - t0


def orthanc_zip_ingest(
    url: str, paths: list[Path], workers: int = 4, batch_files: int = BATCH_FILES
) -> float:
    """Orthanc's batched upload (1.8.2+): the same batches as medlabel's, as ZIP archives
    (stored, not compressed; made before the clock starts), each POSTed to ``/instances`` from
    ``workers`` threads; seconds until the last archive's instances are stored."""
    archives = []
    for batch in batches(paths, workers, batch_files):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for p in batch:
                z.write(p, p.name)
        archives.append((len(batch), buf.getvalue()))
    client = Lean(url)

    def post(archive: tuple[int, bytes]) -> None:
        answer = client.request("POST", "/instances", archive[1], {"Content-Type": "application/zip"})
        if not isinstance(answer, list) or len(answer) != archive[0]:
            raise RuntimeError(f"Orthanc stored {answer!r:.200} of a ZIP of {archive[0]} files")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, archives))
    return time.perf_counter() - t0


@contextmanager
def medlabel_server(
    projects: int, server_workers: int = 2
) -> Iterator[tuple[str, dict[str, str], list[int], object]]:
    """A fresh home with ``projects`` projects (and one more for the warm-up), served by
    ``medlabel serve --workers N --no-worker`` on loopback; yields the URL, auth headers, the
    project ids and the runtime (for the jobs)."""
    from medlabel.accounts import service as accounts
    from medlabel.config import Settings
    from medlabel.projects import service as projects_service
    from medlabel.runtime import create_runtime
    from medlabel.storage.db import session_scope

    tmp = Path(tempfile.mkdtemp(prefix="medlabel-bench-"))
    db_url = f"sqlite:///{tmp / 'db.sqlite'}"
    rt = create_runtime(Settings(home=tmp / "home", database_url=db_url))
    proc = None
    try:
        with session_scope(rt.sessions) as s:
            user = accounts.create_user(s, "bench", "a-long-enough-password", role="admin")
            actor = accounts.Actor(user.id, user.username, user.role)
            pids = [projects_service.create_project(s, actor, f"bench {i}").id for i in range(projects + 1)]
        with session_scope(rt.sessions) as s:
            login = accounts.login(s, rt.settings, "bench", "a-long-enough-password", ip="127.0.0.1")
        port = free_port()
        env = {**os.environ, "MEDLABEL_HOME": str(tmp / "home"), "MEDLABEL_DATABASE_URL": db_url}
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("medlabel")), "serve", "--host", "127.0.0.1"]
            + ["--port", str(port), "--no-worker", "--no-access-log"]
            + (["--workers", str(server_workers)] if server_workers > 1 else []),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base, {"Authorization": f"Bearer {login.token}"}, pids, rt
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        rt.close()
        shutil.rmtree(tmp, ignore_errors=True)


def medlabel_ingest(
    base: str, headers: dict[str, str], pid: int, rt: object, paths: list[Path]
) -> tuple[float, float, dict[str, object]]:
    """Upload ``paths`` as one import and run its job; (total seconds, upload seconds, result)."""
    from medlabel.jobs import service as jobs
    from medlabel.storage.db import session_scope

    with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
        t0 = time.perf_counter()
        handles = [open(p, "rb") for p in paths]  # noqa: SIM115  (closed below; httpx streams them)
        try:
            files = [
                ("files", (p.name, fh, "application/dicom")) for p, fh in zip(paths, handles, strict=True)
            ]
            r = client.post(f"/api/v1/projects/{pid}/imports", files=files)
        finally:
            for fh in handles:
                fh.close()
        r.raise_for_status()
        uploaded = time.perf_counter() - t0
        job_id = r.json()["id"]
        jobs.execute_job(rt, job_id)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t0
    with session_scope(rt.sessions) as s:  # type: ignore[attr-defined]
        job = jobs.get_job(s, job_id)
        if job.state != "succeeded":
            raise RuntimeError(f"import job {job.state}: {job.error}")
        result = dict(job.result or {})
    return elapsed, uploaded, result


def medlabel_session_ingest(
    base: str, headers: dict[str, str], pid: int, rt: object, paths: list[Path], clients: int = 4
) -> tuple[float, float, dict[str, object]]:
    """Upload ``paths`` through an upload session (one PUT per file from ``clients`` threads),
    commit, run the job; (total seconds, upload seconds, result)."""

    client = Lean(base, headers)
    t0 = time.perf_counter()
    created = client.request("POST", f"/api/v1/projects/{pid}/uploads")
    url = f"/api/v1/projects/{pid}/uploads/{created['id']}"  # type: ignore[index]

    def put(p: Path) -> str:
        answer = client.request(
            "PUT", f"{url}/files/{p.name}", p.read_bytes(), {"Content-Type": "application/dicom"}
        )
        return str(answer["status"])  # type: ignore[index]

    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(put, paths))
    return _commit_session(client, url, rt, t0, statuses, len(paths))


def medlabel_batch_ingest(
    base: str,
    headers: dict[str, str],
    pid: int,
    rt: object,
    paths: list[Path],
    clients: int = 4,
    batch_files: int = BATCH_FILES,
) -> tuple[float, float, dict[str, object]]:
    """Upload ``paths`` through an upload session in contiguous batches of ``batch_files``, each
    one multipart POST on a connection of its own (so that the server's processes share them),
    from ``clients`` threads (files read as they are sent), commit, run the job; (total seconds,
    upload seconds, result)."""

    parts = batches(paths, clients, batch_files)
    client = Lean(base, headers)
    t0 = time.perf_counter()
    created = client.request("POST", f"/api/v1/projects/{pid}/uploads")
    url = f"/api/v1/projects/{pid}/uploads/{created['id']}"  # type: ignore[index]

    def send(batch: list[Path]) -> list[str]:
        chunks, length, ctype = multipart(batch)
        answer = client.request(
            "POST", f"{url}/files", chunks, {"Content-Type": ctype, "Content-Length": str(length)}, fresh=True
        )
        return [str(f["status"]) for f in answer["files"]]  # type: ignore[index]

    with ThreadPoolExecutor(clients) as pool:
        statuses = [s for answer in pool.map(send, parts) for s in answer]
    return _commit_session(client, url, rt, t0, statuses, len(paths))


def _commit_session(
    client: Lean, url: str, rt: object, t0: float, statuses: list[str], files: int
) -> tuple[float, float, dict[str, object]]:
    """Check every file was prepared, commit the session, run its job here as a worker would;
    (seconds since ``t0``, seconds until the commit was answered, the job's result)."""
    from medlabel.jobs import service as jobs
    from medlabel.storage.db import session_scope

    if set(statuses) != {"prepared"} or len(statuses) != files:
        raise RuntimeError(f"not every file was prepared: {sorted(set(statuses))}, {len(statuses)} answers")
    job_id = client.request("POST", f"{url}/commit")["id"]  # type: ignore[index]
    uploaded = time.perf_counter() - t0
    jobs.execute_job(rt, job_id)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    with session_scope(rt.sessions) as s:  # type: ignore[attr-defined]
        job = jobs.get_job(s, job_id)
        if job.state != "succeeded":
            raise RuntimeError(f"import job {job.state}: {job.error}")
        result = dict(job.result or {})
    return elapsed, uploaded, result


def main() -> None:
    try:
        _main()
    finally:
        _remove_now()


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 slices instead of 300, one repetition")
    ap.add_argument("--slices", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; --quick: 1)")
    ap.add_argument(
        "--orthanc-clients",
        "--clients",
        type=int,
        default=4,
        help="client threads (Orthanc, sessions, batches; 4)",
    )
    ap.add_argument("--server-workers", type=int, default=2, help="medlabel server processes (default 2)")
    ap.add_argument("--batch-files", type=int, default=BATCH_FILES, help=f"files per batch ({BATCH_FILES})")
    ap.add_argument(
        "--batched-only",
        action="store_true",
        help="only the batched upload and Orthanc's two (more repetitions in the same time)",
    )
    args = ap.parse_args()
    n = args.slices or (40 if args.quick else 300)
    repeat = args.repeat or (1 if args.quick else 3)
    clients = args.orthanc_clients
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        paths = ct_series(Path(d) / "series", n)
        warmup = ct_series(Path(d) / "warmup", WARMUP, seed=1)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"generated {n} slices 512x512 ({mb:.0f} MB) in {time.perf_counter() - t0:.1f} s; cpus={os.cpu_count()}"
        )
        sessions: list[float] = []
        batched: list[float] = []
        multipart: list[float] = []
        theirs: list[float] = []
        theirs_zip: list[float] = []
        with medlabel_server(3 * repeat + 2, args.server_workers) as (base, headers, pids, rt):
            medlabel_ingest(base, headers, pids[-1], rt, warmup)
            medlabel_session_ingest(
                base, headers, pids[-2], rt, ct_series(Path(d) / "warmup2", WARMUP, seed=2)
            )
            medlabel_batch_ingest(
                base, headers, pids[-3], rt, ct_series(Path(d) / "warmup3", WARMUP, seed=3), clients
            )
            try:
                from medlabel.items.ingest import start_import_workers
            except ImportError:  # a medlabel from before the import workers (comparisons)
                workers = 0
            else:
                workers = start_import_workers(timeout=120)  # as a long-running worker has them
            print(f"medlabel server processes: {args.server_workers}; import worker processes: {workers}")
            for k in range(repeat):
                if not args.batched_only:
                    total, upload, result = medlabel_session_ingest(
                        base, headers, pids[3 * k], rt, paths, clients
                    )
                    sessions.append(total)
                    print(
                        f"  run {k + 1}: medlabel session   {total:.2f} s ({n / total:.0f} slices/s; PUTs + commit "
                        f"{upload:.2f} s, job {total - upload:.2f} s) {result['counts']}",
                        flush=True,
                    )
                    total, upload, result = medlabel_ingest(base, headers, pids[3 * k + 2], rt, paths)
                    multipart.append(total)
                    print(
                        f"  run {k + 1}: medlabel multipart {total:.2f} s ({n / total:.0f} slices/s; upload {upload:.2f} s, "
                        f"import job {total - upload:.2f} s) {result['counts']}",
                        flush=True,
                    )
                total, upload, result = medlabel_batch_ingest(
                    base, headers, pids[3 * k + 1], rt, paths, clients, args.batch_files
                )
                batched.append(total)
                print(
                    f"  run {k + 1}: medlabel batched   {total:.2f} s ({n / total:.0f} slices/s; {clients} POSTs + "
                    f"commit {upload:.2f} s, job {total - upload:.2f} s) {result['counts']}",
                    flush=True,
                )
                with orthanc() as url:
                    if url is None:
                        continue
                    orthanc_ingest(url, warmup, clients)
                    theirs.append(orthanc_ingest(url, paths, clients))
                    print(
                        f"  run {k + 1}: Orthanc            {theirs[-1]:.2f} s ({n / theirs[-1]:.0f} slices/s)",
                        flush=True,
                    )
                with orthanc() as url:
                    assert url is not None
                    orthanc_zip_ingest(url, warmup, clients)
                    theirs_zip.append(orthanc_zip_ingest(url, paths, clients, args.batch_files))
                    print(
                        f"  run {k + 1}: Orthanc ZIPs       {theirs_zip[-1]:.2f} s ({n / theirs_zip[-1]:.0f} slices/s)",
                        flush=True,
                    )
        m = statistics.median(sessions) if sessions else float("nan")
        mbat = statistics.median(batched)
        mm = statistics.median(multipart) if multipart else float("nan")
        if sessions:
            print(
                f"medlabel upload session ({clients} clients, {args.server_workers} server processes; de-identify "
                f"+ import), median of {repeat}: {m:.2f} s, {n / m:.0f} slices/s"
            )
        print(
            f"medlabel upload session, batched ({args.batch_files} files a POST, {clients} clients), median of {repeat}: "
            f"{mbat:.2f} s, {n / mbat:.0f} slices/s"
        )
        if multipart:
            print(
                f"medlabel multipart (one POST + import job), median of {repeat}: {mm:.2f} s, {n / mm:.0f} slices/s"
            )
        if not theirs:
            print("Orthanc: not available (apt-get install -y orthanc); no ratio")
            return
        o = statistics.median(theirs)
        print(
            f"Orthanc POST /instances ({clients} clients, no de-identification), median of {repeat}: "
            f"{o:.2f} s, {n / o:.0f} slices/s"
        )
        oz = statistics.median(theirs_zip)
        print(
            f"Orthanc POST /instances, ZIP archives of {args.batch_files} files from {clients} clients, median of {repeat}: "
            f"{oz:.2f} s, {n / oz:.0f} slices/s"
        )
        ratios = [("session", m), ("batched", mbat), ("multipart", mm)]
        print(
            "ratio medlabel/Orthanc: "
            + ", ".join(f"{name} {t / o:.2f}" for name, t in ratios if t == t)  # (nan: not run)
            + " (lower is faster)"
        )
        print(f"ratio batched medlabel / batched Orthanc (ZIPs): {mbat / oz:.2f}")
        # each batched run is followed at once by Orthanc's two: the median of the runs' own
        # ratios is less moved by the machine's speed drifting over the minutes of the bench
        pairs = [a / b for a, b in zip(batched, theirs, strict=False)]
        pairs_zip = [a / b for a, b in zip(batched, theirs_zip, strict=False)]
        print(
            f"ratio batched medlabel / Orthanc, median of the {len(pairs)} runs' own ratios: "
            f"{statistics.median(pairs):.2f} (runs {min(pairs):.2f}-{max(pairs):.2f}); against its ZIPs "
            f"{statistics.median(pairs_zip):.2f} ({min(pairs_zip):.2f}-{max(pairs_zip):.2f})"
        )


if __name__ == "__main__":
    main()
