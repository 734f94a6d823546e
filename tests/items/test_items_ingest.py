"""Import through the API (multipart) and the CLI: real pydicom files, a generated CT series,
de-identification, de-duplication, per-file errors, archives with traversal and bombs."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from sqlalchemy import func, select

from medlabel.items.models import Instance, Item
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import (
    PATIENT_ID,
    by_name,
    ct_series,
    import_via_api,
    run_job,
    upload,
    zip_bytes,
)

DICOMDIR_ROOT = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Imports", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def _counts(rt, pid):
    with session_scope(rt.sessions) as s:
        items = s.scalar(select(func.count(Item.id)).where(Item.project_id == pid))
        insts = s.scalar(select(func.count(Instance.id)).where(Instance.project_id == pid))
    return items, insts, len(list(rt.blobs.digests()))


def test_generated_series_is_one_deidentified_volume_in_slice_order(client, runtime, team, tmp_path):
    pid, h = team
    paths, hu = ct_series(tmp_path / "ct", slices=10)
    result = import_via_api(client, runtime, h, pid, paths)
    assert result["counts"] == {"imported": 10}
    page = client.get(f"/api/v1/projects/{pid}/items", headers=h).json()
    assert page["total"] == 1
    item = page["items"][0]
    assert (item["kind"], item["frames"], item["width"], item["height"]) == ("volume", 10, 40, 32)
    assert item["meta"]["spacing"] == item["spacing"] == [1.0, 1.0, 1.0]
    assert "ct_lung" in item["presets"]
    assert item["patient_pseudonym"].startswith("ANON-") and PATIENT_ID not in item["patient_pseudonym"]
    with session_scope(runtime.sessions) as s:
        insts = s.scalars(
            select(Instance).where(Instance.item_id == item["id"]).order_by(Instance.slice_index)
        ).all()
        blobs = [(i.blob_sha256, i.position) for i in insts]
    assert [p for _, p in blobs] == sorted(p for _, p in blobs)
    for k, (digest, _) in enumerate(blobs):
        raw = runtime.blobs.get(digest)
        for phi in (PATIENT_ID, "Doe", "Elsewhere", "19700101"):
            assert phi.encode() not in raw
        ds = pydicom.dcmread(__import__("io").BytesIO(raw))
        assert ds.PatientID == item["patient_pseudonym"] and ds.PatientIdentityRemoved == "YES"
        assert ds.StudyDate != "20240315"  # shifted (Retain Longitudinal Modified Dates)
        np.testing.assert_array_equal(ds.pixel_array.astype(np.int32) - 1024, hu[k])


def test_reimport_is_a_no_op(client, runtime, team, tmp_path):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=6)
    png = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 7).save(png)
    first = import_via_api(client, runtime, h, pid, [*paths, png, Path(get_testdata_file("CT_small.dcm"))])
    assert first["counts"] == {"imported": 8}
    before = _counts(runtime, pid)
    again = import_via_api(client, runtime, h, pid, [*paths, png, Path(get_testdata_file("CT_small.dcm"))])
    assert again["counts"] == {"duplicate": 8}
    assert _counts(runtime, pid) == before == (3, 7, 8)


def test_real_and_broken_files_each_get_a_report_line(client, runtime, team, tmp_path):
    pid, h = team
    names = [
        "CT_small.dcm",
        "MR_small.dcm",
        "emri_small.dcm",
        "MR_truncated.dcm",
        "rtplan_truncated.dcm",
        "no_meta.dcm",
        "badVR.dcm",
    ]
    files = [(n, Path(get_testdata_file(n)).read_bytes()) for n in names] + [
        ("notes.txt", b"hello, not an image\n")
    ]
    job = upload(client, h, pid, files)
    assert job["kind"] == "items.import" and job["state"] == "queued"
    report = by_name(run_job(runtime, job["id"]))
    assert {n: report[n]["status"] for n in report} == {
        "CT_small.dcm": "imported",
        "MR_small.dcm": "imported",
        "emri_small.dcm": "imported",
        "MR_truncated.dcm": "error",
        "rtplan_truncated.dcm": "error",
        "no_meta.dcm": "error",
        "badVR.dcm": "error",
        "notes.txt": "error",
    }
    assert "truncated" in report["MR_truncated.dcm"]["message"]
    assert "(7FE0,0010)" in report["rtplan_truncated.dcm"]["message"]
    assert "(0028,0008)" in report["badVR.dcm"]["message"]
    # nothing stored for the failures: one instance and one blob per good file
    assert _counts(runtime, pid) == (3, 3, 3)
    # the multi-frame MR is one image item with its 10 frames
    items = client.get(f"/api/v1/projects/{pid}/items", headers=h).json()["items"]
    emri = next(i for i in items if i["id"] == report["emri_small.dcm"]["item_id"])
    assert (emri["kind"], emri["frames"]) == ("image", 10)
    # the upload area is gone
    assert not any((runtime.settings.home / "uploads").iterdir())


def test_dicomdir_tree_imports_every_referenced_image(client, runtime, team):
    pid, h = team
    fs = FileSet(DICOMDIR_ROOT / "DICOMDIR")
    referenced = [Path(inst.path) for inst in fs]
    archive = zip_bytes(
        {"DICOMDIR": (DICOMDIR_ROOT / "DICOMDIR").read_bytes()}
        | {str(p.relative_to(DICOMDIR_ROOT)): p.read_bytes() for p in referenced}
    )
    report = run_job(runtime, upload(client, h, pid, [("media.zip", archive)])["id"])
    assert report["counts"] == {"imported": len(referenced), "skipped": 1}
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Instance.id))) == len(referenced)


def test_zip_traversal_and_bombs_are_refused_per_member(client, runtime, team, monkeypatch):
    pid, h = team
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    mr = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    archive = zip_bytes(
        {
            "ok/CT_small.dcm": ct,
            "../evil.dcm": mr,
            "/etc/abs.dcm": mr,
            "a/../../up.dcm": mr,
            "bomb.bin": bytes(30 << 20),  # 30 MiB of zeros: ratio ~1000:1
        }
    )
    report = by_name(run_job(runtime, upload(client, h, pid, [("upload.zip", archive)])["id"]))
    assert report["upload.zip:ok/CT_small.dcm"]["status"] == "imported"
    for bad in ("../evil.dcm", "/etc/abs.dcm", "a/../../up.dcm"):
        assert report[f"upload.zip:{bad}"]["status"] == "error"
        assert "leaves the archive" in report[f"upload.zip:{bad}"]["message"]
    assert report["upload.zip:bomb.bin"]["code"] == "too_large"
    assert "ratio" in report["upload.zip:bomb.bin"]["message"]
    assert not list(Path(runtime.settings.home).rglob("evil.dcm"))
    assert _counts(runtime, pid) == (1, 1, 1)

    # the total unpacking cap is counted across members: the second one no longer fits
    monkeypatch.setenv("MEDLABEL_IMPORT_MAX_UNPACKED_BYTES", str(len(mr) + 100))
    archive = zip_bytes({"first.dcm": mr, "second.dcm": ct})
    report = by_name(run_job(runtime, upload(client, h, pid, [("two.zip", archive)])["id"]))
    assert report["two.zip:first.dcm"]["status"] == "imported"
    assert report["two.zip:second.dcm"]["code"] == "too_large"

    # the file-count cap covers archive members and plain files together
    monkeypatch.delenv("MEDLABEL_IMPORT_MAX_UNPACKED_BYTES")
    monkeypatch.setenv("MEDLABEL_IMPORT_MAX_FILES", "2")
    archive = zip_bytes({"a.dcm": mr, "b.dcm": ct, "c.dcm": ct})
    report = run_job(runtime, upload(client, h, pid, [("three.zip", archive)])["id"])
    assert [f["status"] for f in report["files"] if f["status"] == "error"] == ["error"]
    assert "more than 2 files" in next(f["message"] for f in report["files"] if f["status"] == "error")


def test_a_lying_zip_header_is_caught_while_inflating(client, runtime, team):
    pid, h = team
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("liar.bin", bytes(200_000))
    data = bytearray(buf.getvalue())
    # shrink the declared sizes (local header and central directory) to 1000 bytes
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig)
        data[i + off : i + off + 4] = (1000).to_bytes(4, "little")
    report = by_name(run_job(runtime, upload(client, h, pid, [("liar.zip", bytes(data))])["id"]))
    assert report["liar.zip:liar.bin"]["status"] == "error"
    assert _counts(runtime, pid) == (0, 0, 0)


def test_nifti_headers_are_scrubbed(client, runtime, team):
    pid, h = team
    src = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    report = by_name(import_via_api(client, runtime, h, pid, [src]))
    item_id = report["anatomical.nii"]["item_id"]
    item = client.get(f"/api/v1/items/{item_id}", headers=h).json()
    assert (item["kind"], item["source_format"], item["width"], item["height"], item["frames"]) == (
        "volume",
        "nifti",
        33,
        41,
        25,
    )
    with session_scope(runtime.sessions) as s:
        digest = s.get(Item, item_id).blob_sha256
    stored = nibabel.Nifti1Image.from_bytes(__import__("gzip").decompress(runtime.blobs.get(digest)))
    assert bytes(stored.header["descrip"]).strip(b"\x00") == b""
    original = nibabel.load(src)
    np.testing.assert_array_equal(np.asanyarray(stored.dataobj), np.asanyarray(original.dataobj))
    np.testing.assert_allclose(stored.affine, original.affine)


def test_cli_import_of_a_folder_with_progress(runtime, settings, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medlabel.cli.main import app

    pid = make_project(runtime, "Shell")
    paths, _ = ct_series(tmp_path / "series", slices=5)
    (tmp_path / "series" / "readme.txt").write_text("not an image")
    monkeypatch.setenv("MEDLABEL_HOME", str(settings.home))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", settings.database_url)
    from medlabel.cli import items as cli_items

    linked: list[str] = []
    real_link = os.link
    monkeypatch.setattr(cli_items.os, "link", lambda a, b: (linked.append(str(a)), real_link(a, b))[1])
    before = {p: p.read_bytes() for p in paths}
    res = CliRunner().invoke(app, ["import", str(pid), str(tmp_path / "series")])
    assert res.exit_code == 0, res.output
    assert "5 imported" in res.output and "1 error" in res.output and "readme.txt" in res.output
    # the files went into the upload folder as hard links, and the originals are as they were
    assert len([a for a in linked if a.startswith(str(tmp_path / "series"))]) == 6
    assert all(p.read_bytes() == data and p.stat().st_nlink == 1 for p, data in before.items())
    res = CliRunner().invoke(app, ["import", "Shell", str(tmp_path / "series")])
    assert "5 duplicate" in res.output
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Item.id)).where(Item.project_id == pid)) == 1
    res = CliRunner().invoke(app, ["import", "No such project", str(paths[0])])
    assert res.exit_code == 1 and "no project" in res.output
    assert os.listdir(settings.home / "uploads") == []


def test_oversized_and_unsupported_images_are_refused_before_decoding(client, runtime, team, tmp_path):
    import struct
    import zlib

    pid, h = team
    big = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    big.Rows, big.Columns, big.NumberOfFrames = 60000, 60000, 400  # header promises 1.4e12 pixels
    big.save_as(tmp_path / "huge.dcm")
    # a real but unsupported transfer syntax (MPEG2), patched into the File Meta bytes
    raw = bytearray(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    i = raw.find(b"\x02\x00\x10\x00UI")
    n = int.from_bytes(raw[i + 6 : i + 8], "little")
    new = b"1.2.840.10008.1.2.4.100\x00"
    raw[i + 6 : i + 8 + n] = len(new).to_bytes(2, "little") + new
    g = raw.find(b"\x02\x00\x00\x00UL")
    raw[g + 8 : g + 12] = (int.from_bytes(raw[g + 8 : g + 12], "little") + len(new) - n).to_bytes(4, "little")
    (tmp_path / "odd.dcm").write_bytes(bytes(raw))
    assert pydicom.dcmread(tmp_path / "odd.dcm").file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.100"

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    paths = [
        tmp_path / "huge.dcm",
        tmp_path / "odd.dcm",
        tmp_path / "bomb.png",
        Path(get_testdata_file("MR_small.dcm")),
    ]
    report = by_name(import_via_api(client, runtime, h, pid, paths))
    assert report["huge.dcm"]["code"] == "too_large"
    assert (
        report["odd.dcm"]["code"] == "unsupported_media"
        and "1.2.840.10008.1.2.4.100" in report["odd.dcm"]["message"]
    )
    assert report["bomb.png"]["code"] == "too_large"
    assert report["MR_small.dcm"]["status"] == "imported"
    assert _counts(runtime, pid) == (1, 1, 1)


def test_two_imports_of_the_same_series_at_once_store_it_once(runtime, team, tmp_path):
    import shutil
    import threading

    from medlabel.accounts.service import Actor
    from medlabel.items.ingest import new_upload_dir, run_import

    pid, _h = team
    paths, _ = ct_series(tmp_path / "ct", slices=8)
    reports: list[dict] = []

    def go() -> None:
        up = new_upload_dir(runtime.settings.home)
        for i, p in enumerate(paths):
            shutil.copyfile(p, up / f"{i:06d}-{p.name}")
        rep = run_import(
            sessions=runtime.sessions,
            blobs=runtime.blobs,
            secret_key=runtime.settings.secret_key,
            actor=Actor(None, "t", "admin"),
            project_id=pid,
            upload_dir=up,
        )
        reports.append(rep.as_dict())

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(tuple(sorted(r["counts"].items())) for r in reports) == [
        (("duplicate", 8),),
        (("imported", 8),),
    ]
    assert _counts(runtime, pid) == (1, 8, 8)


def test_an_unexpected_failure_in_one_file_does_not_stop_the_import(
    client, runtime, team, tmp_path, monkeypatch
):
    from medlabel.items import ingest

    pid, h = team
    real = ingest.deidentify_dataset

    def flaky(ds, config, ctx, **kw):
        if str(ds.get("Modality")) == "MR":
            raise RuntimeError("simulated library bug")
        return real(ds, config, ctx, **kw)

    monkeypatch.setattr(ingest, "deidentify_dataset", flaky)
    files = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm")]
    report = by_name(import_via_api(client, runtime, h, pid, files))
    assert report["CT_small.dcm"]["status"] == "imported"
    assert (
        report["MR_small.dcm"]["code"] == "unreadable"
        and "simulated library bug" in report["MR_small.dcm"]["message"]
    )
    assert _counts(runtime, pid) == (1, 1, 1)


# ---------------------------------------------------------------- the fast path (docs/performance.md)


def test_native_pixels_are_length_checked_and_odd_lengths_decoded(client, runtime, team, tmp_path):
    """Native pixel data of exactly the described length is not decoded; any other length goes
    to the decoder, whose refusal (short) or warning (padding) is reported as before."""
    pid, h = team
    paths, hu = ct_series(tmp_path / "ct", slices=3, shuffle=False)
    long = pydicom.dcmread(paths[1])
    long.PixelData = long.PixelData + b"\0\0\0\0"  # excess padding: the decoder warns, imports
    long.save_as(paths[1])
    short = pydicom.dcmread(paths[2])
    short.PixelData = short.PixelData[:-64]
    short.save_as(tmp_path / "short.dcm")
    short.SOPInstanceUID = short.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    report = by_name(import_via_api(client, runtime, h, pid, [*paths[:2], tmp_path / "short.dcm"]))
    assert report["short.dcm"]["status"] == "error" and "truncated" in report["short.dcm"]["message"]
    assert report["img000.dcm"]["status"] == report["img001.dcm"]["status"] == "imported"
    assert any("excess padding" in w for w in report["img001.dcm"]["warnings"])
    assert not report["img000.dcm"].get("warnings")


def test_upload_is_streamed_to_the_upload_folder(client, runtime, team, monkeypatch):
    pid, h = team
    url = f"/api/v1/projects/{pid}/imports"
    dcm = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    # other form fields are ignored; names, empty files and order are kept
    r = client.post(
        url,
        headers=h,
        data={"note": "ignored"},
        files=[("files", ("a/../b c.dcm", dcm, "application/dicom")), ("files", ("empty.txt", b"", "text/plain"))],
    )
    assert r.status_code == 202, r.text
    report = by_name(run_job(runtime, r.json()["id"]))
    assert report["b_c.dcm"]["status"] == "imported"
    assert report["empty.txt"]["status"] == "error"
    # not multipart, no 'files' part, too many files: refused, nothing left behind
    assert client.post(url, headers=h, content=b"x", params={}).status_code == 422
    r = client.post(url, headers=h, files=[("other", ("x.dcm", dcm, "application/dicom"))])
    assert r.status_code == 422 and "files" in r.text
    monkeypatch.setenv("MEDLABEL_IMPORT_MAX_FILES", "2")
    r = client.post(url, headers=h, files=[("files", (f"{i}.dcm", dcm, "application/dicom")) for i in range(3)])
    assert r.status_code == 413
    assert not any((runtime.settings.home / "uploads").iterdir())
    monkeypatch.delenv("MEDLABEL_IMPORT_MAX_FILES")
    # a body cut short inside a part: refused whole (no half file imported), nothing left behind;
    # a preamble before the first boundary (RFC 2046) is skipped
    part = b'--B\r\nContent-Disposition: form-data; name="files"; filename="x.dcm"\r\n\r\n' + dcm + b"\r\n"
    mp = {**h, "Content-Type": "multipart/form-data; boundary=B"}
    r = client.post(url, headers=mp, content=(part + part)[: len(part) + 500])
    assert r.status_code == 422 and "ends inside a part" in r.text, r.text
    assert not any((runtime.settings.home / "uploads").iterdir())
    r = client.post(url, headers=mp, content=b"a preamble\r\n" + part + b"--B--\r\n")
    assert r.status_code == 202, r.text
    assert by_name(run_job(runtime, r.json()["id"]))["x.dcm"]["status"] == "duplicate"  # read whole: imported above
    # access is checked before the body is read
    assert client.post(url, files=[("files", ("x.dcm", dcm, "application/dicom"))]).status_code == 401


def test_worker_process_preparation_matches_this_process(runtime, team, tmp_path):
    """A worker process writes exactly the file this process would; a patient not resolved by
    the parent comes back instead of getting a pseudonym of the worker's own."""
    from medlabel.deid import DeidConfig, DeidContext, InMemoryDateOffsetStore, InMemoryPseudonymStore, Option
    from medlabel.items import ingest
    from medlabel.items.unpack import Candidate, IngestLimits

    paths, _ = ct_series(tmp_path / "ct", slices=2)
    cfg = DeidConfig(
        project_secret=b"0123456789abcdef0123",
        options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS}),
    )
    names = ingest.RecordingPseudonymStore(InMemoryPseudonymStore())
    days = ingest.RecordingDateOffsetStore(InMemoryDateOffsetStore(b"0123456789abcdef0123"))
    work = tmp_path / "work"
    work.mkdir()
    limits = IngestLimits()
    here = ingest._prepare_dicom(
        Candidate("a", paths[0]), config=cfg, ctx=DeidContext(names, days), limits=limits, work=work
    )
    unknown = ingest._Remote(cfg, {}, {}, limits, work)
    assert ingest._prepare_remote(Candidate("a", paths[0]), unknown) == ("unknown", None, None)
    known = ingest._Remote(cfg, dict(names.known), dict(days.known), limits, work)
    kind, remote, digest = ingest._prepare_remote(Candidate("a", paths[0]), known)
    assert kind == "ok" and remote.path != here.path
    assert remote.path.read_bytes() == here.path.read_bytes()
    assert digest == __import__("hashlib").sha256(here.path.read_bytes()).hexdigest()
    assert (remote.info, remote.pseudonym, remote.reasons) == (here.info, here.pseudonym, here.reasons)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(paths[1].read_bytes()[:2000])
    kind, message, code = ingest._prepare_remote(Candidate("bad", bad), known)
    assert kind == "error" and code == "dicom_error"


def test_import_through_worker_processes(client, runtime, team, tmp_path, monkeypatch):
    from medlabel.items import ingest

    pid, h = team
    monkeypatch.setattr(ingest, "POOL_MIN_FILES", 2)
    monkeypatch.setenv("MEDLABEL_IMPORT_PROCESSES", "1")
    here = []
    real = ingest._prepare_dicom
    monkeypatch.setattr(ingest, "_prepare_dicom", lambda cand, **kw: here.append(cand) or real(cand, **kw))
    try:
        assert ingest.start_import_workers(timeout=300) == 1
        paths, hu = ct_series(tmp_path / "ct", slices=12)
        result = import_via_api(client, runtime, h, pid, paths)
    finally:
        pooled = ingest._POOL
        if pooled is not None:
            ingest._drop_pool(pooled[0])
    assert result["counts"] == {"imported": 12}
    assert 1 <= len(here) <= 10  # the first file here (it resolves the patient), some in the worker
    item = client.get(f"/api/v1/projects/{pid}/items", headers=h).json()["items"][0]
    assert (item["kind"], item["frames"]) == ("volume", 12)
    with session_scope(runtime.sessions) as s:
        digests = s.scalars(
            select(Instance.blob_sha256).where(Instance.item_id == item["id"]).order_by(Instance.slice_index)
        ).all()
    for k, digest in enumerate(digests):
        raw = runtime.blobs.get(digest)
        assert PATIENT_ID.encode() not in raw and b"Elsewhere" not in raw
        ds = pydicom.dcmread(__import__("io").BytesIO(raw))
        assert ds.PatientID == item["patient_pseudonym"]
        np.testing.assert_array_equal(ds.pixel_array.astype(np.int32) - 1024, hu[k])


def test_a_broken_worker_pool_falls_back_to_this_process(client, runtime, team, tmp_path, monkeypatch):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from medlabel.items import ingest

    class Broken:
        def submit(self, *a, **k):
            raise BrokenProcessPool("a worker died")

        def shutdown(self, *a, **k):
            pass

    ready: Future[int] = Future()
    ready.set_result(1)
    monkeypatch.setattr(ingest, "POOL_MIN_FILES", 2)
    monkeypatch.setattr(ingest, "_worker_pool", lambda: (Broken(), ready, 1))
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=5)
    assert import_via_api(client, runtime, h, pid, paths)["counts"] == {"imported": 5}


def test_blobs_are_adopted_by_link_and_their_folders_synced(runtime, tmp_path):
    import hashlib

    store = runtime.blobs
    src = runtime.settings.home / "uploads" / "x.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(b"adopted")
    digest = hashlib.sha256(b"adopted").hexdigest()
    assert store.adopt(src, digest) == digest and store.adopt(src, digest) == digest
    assert store.get(digest) == b"adopted" and src.exists()
    store.sync_dirs([digest])
    src.unlink()
    assert store.get(digest) == b"adopted"


def test_cli_import_copies_files_big_enough_to_be_mapped(runtime, settings, tmp_path, monkeypatch):
    """A file the import memory-maps is copied, not linked: someone cutting the original short
    meanwhile must not crash the process reading the mapping."""
    from typer.testing import CliRunner

    from medlabel.cli import items as cli_items
    from medlabel.cli.main import app
    from medlabel.items.ingest import MAP_BYTES_ENV

    pid = make_project(runtime, "Big")
    paths, _ = ct_series(tmp_path / "series", slices=3)
    monkeypatch.setenv("MEDLABEL_HOME", str(settings.home))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv(MAP_BYTES_ENV, "0")  # every file is "big"
    linked: list[str] = []
    real_link = os.link
    monkeypatch.setattr(cli_items.os, "link", lambda a, b: (linked.append(str(a)), real_link(a, b))[1])
    res = CliRunner().invoke(app, ["import", str(pid), str(tmp_path / "series")])
    assert res.exit_code == 0 and "3 imported" in res.output, res.output
    assert not [a for a in linked if a.startswith(str(tmp_path / "series"))]
