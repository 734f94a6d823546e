"""MetaImage (.mha, .mhd + data file) written by SimpleITK imports as a NIfTI volume, with the
header's free keys dropped, and a header that points outside the upload is refused."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy import func, select

from medlabel.items.models import Item
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import by_name, import_via_api, run_job, upload, zip_bytes

PLANTED = "DOE^JOHN 4711-0815"


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Atlas", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def volume() -> np.ndarray:
    return (np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7) * 7 - 300).astype(np.int16)  # (z, y, x)


def write(path: Path, *, compress: bool = False) -> np.ndarray:
    arr = volume()
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.9, 2.5))
    img.SetOrigin((-10.0, 20.0, 30.0))
    img.SetMetaData("PatientName", PLANTED)
    sitk.WriteImage(img, str(path), compress)
    return arr


def check_item(client, runtime, h, item_id: int, arr: np.ndarray) -> None:
    item = client.get(f"/api/v1/items/{item_id}", headers=h).json()
    assert (item["kind"], item["width"], item["height"], item["frames"]) == ("volume", 7, 6, 5)
    assert item["spacing"] == pytest.approx([2.5, 0.9, 0.7])
    with session_scope(runtime.sessions) as s:
        blob = s.scalar(select(Item.blob_sha256).where(Item.id == item_id))
    assert PLANTED.encode() not in gzip.decompress(runtime.blobs.get(blob))
    raw = client.get(f"/api/v1/items/{item_id}/frames/3/raw", headers=h)
    assert raw.status_code == 200
    rows, cols = (int(v) for v in raw.headers["x-shape"].split(","))
    got = np.frombuffer(raw.content, dtype=np.dtype(raw.headers["x-dtype"])).reshape(rows, cols)
    np.testing.assert_array_equal(got, arr[3])


def test_mha_single_file(client, runtime, team, tmp_path):
    pid, h = team
    path = tmp_path / "brain.mha"
    arr = write(path)
    assert PLANTED.encode() in path.read_bytes()
    entry = by_name(import_via_api(client, runtime, h, pid, [path]))["brain.mha"]
    assert entry["status"] == "imported", entry
    check_item(client, runtime, h, entry["item_id"], arr)
    again = by_name(import_via_api(client, runtime, h, pid, [path]))["brain.mha"]
    assert again["status"] == "duplicate"


@pytest.mark.parametrize("compress", [False, True])
def test_mhd_with_data_file_uploaded_beside_it(client, runtime, team, tmp_path, compress):
    pid, h = team
    header = tmp_path / "scan.mhd"
    arr = write(header, compress=compress)
    data = tmp_path / ("scan.zraw" if compress else "scan.raw")
    assert f"ElementDataFile = {data.name}" in header.read_text()
    # the data file first: it must still be recognised as the header's, not refused on its own
    report = by_name(import_via_api(client, runtime, h, pid, [data, header]))
    assert report["scan.mhd"]["status"] == "imported", report
    assert report[data.name]["status"] == "skipped" and "scan.mhd" in report[data.name]["message"]
    check_item(client, runtime, h, report["scan.mhd"]["item_id"], arr)


def test_mhd_in_a_zip_with_a_data_folder(client, runtime, team, tmp_path):
    pid, h = team
    header = tmp_path / "ct.mhd"
    arr = write(header)
    text = header.read_text().replace("ElementDataFile = ct.raw", "ElementDataFile = data/ct.raw")
    archive = zip_bytes(
        {"case/ct.mhd": text.encode(), "case/data/ct.raw": (tmp_path / "ct.raw").read_bytes()}
    )
    job = upload(client, h, pid, [("case.zip", archive)])
    report = by_name(run_job(runtime, job["id"]))
    (entry,) = [v for k, v in report.items() if k.endswith("ct.mhd")]
    assert entry["status"] == "imported", report
    check_item(client, runtime, h, entry["item_id"], arr)


@pytest.mark.parametrize(
    ("ref", "code", "words"),
    [
        ("../../../../etc/passwd", "invalid_input", "leaves the upload"),
        ("/etc/passwd", "invalid_input", "absolute path"),
        ("C:\\secret\\ct.raw", "invalid_input", "absolute path"),
        ("elsewhere.raw", "invalid_input", "not in the upload"),
        ("LIST", "unsupported_media", "multi-file"),
        ("slice%03d.raw 1 5 1", "unsupported_media", "multi-file"),
    ],
)
def test_data_file_outside_the_upload_is_refused(client, runtime, team, tmp_path, ref, code, words):
    pid, h = team
    header = tmp_path / "ct.mhd"
    write(header)
    secret = tmp_path / "outside.raw"
    secret.write_bytes((tmp_path / "ct.raw").read_bytes())
    header.write_text(header.read_text().replace("ElementDataFile = ct.raw", f"ElementDataFile = {ref}"))
    entry = by_name(import_via_api(client, runtime, h, pid, [header]))["ct.mhd"]
    assert entry["status"] == "error" and entry["code"] == code, entry
    assert words in entry["message"] and "ElementDataFile" in entry["message"]
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Item.id))) == 0


def test_traversal_inside_a_zip_is_refused(client, runtime, team, tmp_path):
    pid, h = team
    header = tmp_path / "ct.mhd"
    write(header)
    text = header.read_text().replace("ElementDataFile = ct.raw", "ElementDataFile = ../other/ct.raw")
    raw = (tmp_path / "ct.raw").read_bytes()
    archive = zip_bytes({"a/ct.mhd": text.encode(), "other/ct.raw": raw})
    job = upload(client, h, pid, [("case.zip", archive)])
    report = by_name(run_job(runtime, job["id"]))
    (entry,) = [v for k, v in report.items() if k.endswith("ct.mhd")]
    assert entry["status"] == "error" and "leaves the upload" in entry["message"], report
