"""Batches into upload sessions: ``POST .../uploads/{upload_id}/files`` with multipart ``files``
parts, each part as if it were PUT in its order.

The reference is the PUT path (tests/items/test_items_upload_sessions.py compares that one with
the multipart import): the same per-file results, the same items and byte-identical stored
files, with both projects given one project secret."""

from __future__ import annotations

import ctypes
import errno
import io
import os
import re
import stat
import uuid
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from medlabel.api.routes import upload_sessions as routes
from medlabel.items import ingest
from medlabel.items import upload_sessions as service
from medlabel.items.models import Instance
from medlabel.items.stores import project_secret
from medlabel.storage import files
from medlabel.storage.db import session_scope
from medlabel.storage.files import FilesystemSync

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import PATIENT_ID, ct_series
from .test_items_upload_sessions import _commit, _items, _lines, _open, _put, _staging


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    make_user(runtime, "other")
    pid = make_project(runtime, "Batches", {"boss": ["manager"], "other": ["manager"]})
    return pid, session_headers(runtime, uid)


def _parts(named: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/dicom")) for name, data in named]


def _post(client, h, url, named: list[tuple[str, bytes]], **extra):
    return client.post(f"{url}/files", headers=h, files=_parts(named), **extra)


def _body(boundary: str, named: list[tuple[str, bytes]]) -> bytes:
    """A multipart body written by hand (to cut it short or break it)."""
    out = b""
    for name, data in named:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                "Content-Type: application/dicom\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out


def _upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_a_batch_equals_the_same_puts(client, runtime, team, tmp_path, monkeypatch):
    pid, h = team
    other = make_project(runtime, "Reference", {"boss": ["manager"]})
    # one project secret for both projects: the same UIDs, pseudonyms and date offsets
    monkeypatch.setattr(ingest, "project_secret", lambda key, _pid: project_secret(key, 999))
    paths, _ = ct_series(tmp_path / "ct", slices=8)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(paths[0].read_bytes()[:-500])  # truncated pixel data
    # two names twice (the later part wins, as a PUT again does) and a truncated file
    sent = [paths[3], paths[5], broken, *paths]
    named = [(p.name, p.read_bytes()) for p in sent]

    ref_url = _open(client, h, other)
    puts = []
    for name, data in named:
        r = _put(client, h, ref_url, name, data)
        assert r.status_code == 200, r.text
        puts.append(r.json())

    url = _open(client, h, pid)
    r = _post(client, h, url, named)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["files"] == puts  # per-file results in part order, SOP UIDs included
    assert body["counts"] == {"prepared": 10, "error": 1}
    assert body["files"][2]["code"] == "dicom_error" and "Pixel Data" in body["files"][2]["message"]
    assert client.get(url, headers=h).json()["files"] == client.get(ref_url, headers=h).json()["files"]
    # only de-identified files are staged; the batch's were fsync'd by the request already
    staged = [p for p in _staging(runtime) if _upload_id(url) in p.parts]
    assert not [p for p in staged if p.parent.name == "incoming"]
    for p in (p for p in staged if p.parent.name == "data"):
        assert PATIENT_ID.encode() not in p.read_bytes()
    entries = service._entries(runtime.settings.home, _upload_id(url))
    assert {e.prepared.synced for e in entries if e.prepared is not None} == {True}
    service.settle()  # a PUT's file is fsync'd and linked after its answer, then recorded again
    ref_entries = service._entries(runtime.settings.home, _upload_id(ref_url))
    assert {(e.prepared.synced, e.prepared.stored) for e in ref_entries if e.prepared is not None} == {(True, True)}

    ours, theirs = _commit(client, runtime, h, url), _commit(client, runtime, h, ref_url)
    assert ours["counts"] == theirs["counts"] == {"imported": 8, "error": 1}
    assert _lines(ours) == _lines(theirs)
    assert _items(runtime, pid) == _items(runtime, other) and len(_items(runtime, pid)[0][-1]) == 8
    ds = pydicom.dcmread(io.BytesIO(runtime.blobs.get(_items(runtime, pid)[0][-1][0])))
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("ANON-")
    # committed: no more batches
    r = _post(client, h, url, named[:1])
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


def test_bad_parts_are_per_file_errors_and_the_rest_commits(client, runtime, team, tmp_path):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    url = _open(client, h, pid)
    named = [
        ("MR_truncated.dcm", Path(get_testdata_file("MR_truncated.dcm")).read_bytes()),
        ("notes.txt", b"not an image at all"),
        ("empty.dcm", b""),
        *[(p.name, p.read_bytes()) for p in paths],
    ]
    r = _post(client, h, url, named)
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    assert [(f["name"], f["status"], f.get("code")) for f in files[:3]] == [
        ("MR_truncated.dcm", "error", "dicom_error"),
        ("notes.txt", "error", "unsupported_media"),
        ("empty.dcm", "error", "unsupported_media"),
    ]
    assert r.json()["counts"] == {"error": 3, "prepared": 3}
    result = _commit(client, runtime, h, url)
    assert result["counts"] == {"imported": 3, "error": 3}
    # a file already in the project is a duplicate at once
    url2 = _open(client, h, pid)
    r = _post(client, h, url2, [(paths[1].name, paths[1].read_bytes())])
    assert r.json()["files"][0]["status"] == "duplicate" and r.json()["counts"] == {"duplicate": 1}
    # checked per recorded group: duplicates among new files, their prepared files not kept
    fresh, _ = ct_series(tmp_path / "ct2", slices=1)
    named = [
        (paths[0].name, paths[0].read_bytes()),
        ("new.dcm", fresh[0].read_bytes()),
        (paths[2].name, paths[2].read_bytes()),
    ]
    r = _post(client, h, url2, named)
    assert [f["status"] for f in r.json()["files"]] == ["duplicate", "prepared", "duplicate"]
    data = runtime.settings.home / "upload-sessions" / _upload_id(url2) / "data"
    assert len(list(data.iterdir())) == 1  # the new file's; the duplicates' were deleted


def test_names_are_sanitised_and_checked(client, runtime, team, tmp_path):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    url = _open(client, h, pid)
    r = _post(client, h, url, [("../x.dcm", paths[0].read_bytes()), ("a/b\\c d.dcm", paths[1].read_bytes())])
    assert r.status_code == 200, r.text
    assert [f["name"] for f in r.json()["files"]] == ["x.dcm", "c_d.dcm"]
    home = runtime.settings.home
    assert not (service.staging_root(home) / _upload_id(url) / "x.dcm").exists()
    assert not list(home.rglob("x.dcm")) and not list(home.parent.rglob("x.dcm"))
    # a part without a file name, or with one over 255 characters: 422; the parts before stay
    for bad in ("", "y" * 256):
        r = _post(client, h, url, [(paths[2].name, paths[2].read_bytes()), (bad, paths[2].read_bytes())])
        assert r.status_code == 422, r.text
        assert r.json()["error"]["detail"]["recorded"] == 1
    listed = client.get(url, headers=h).json()
    assert listed["counts"] == {"prepared": 3}
    assert sorted(f["name"] for f in listed["files"]) == sorted(["x.dcm", "c_d.dcm", paths[2].name])
    assert _commit(client, runtime, h, url)["counts"] == {"imported": 3}


def test_refusals(client, runtime, team, tmp_path, monkeypatch):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    named = [(p.name, p.read_bytes()) for p in paths]
    url = _open(client, h, pid)
    # another user's session (a manager of the same project), or through another project: 404
    other = session_headers(runtime, 2)
    assert _post(client, other, url, named).status_code == 404
    elsewhere = make_project(runtime, "Elsewhere", {"boss": ["manager"]})
    assert (
        _post(client, h, url.replace(f"/projects/{pid}/", f"/projects/{elsewhere}/"), named).status_code
        == 404
    )
    missing = f"/api/v1/projects/{pid}/uploads/{uuid.uuid4().hex}"
    assert _post(client, h, missing, named).status_code == 404
    # not multipart, or no files part: 422
    r = client.post(f"{url}/files", headers={**h, "Content-Type": "application/dicom"}, content=named[0][1])
    assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "files"
    r = client.post(f"{url}/files", headers=h, data={"note": "x"}, files=[("other", ("a.dcm", b"x"))])
    assert r.status_code == 422
    # too many parts: 413 at the part after the limit; the ones before are recorded
    monkeypatch.setenv("MEDLABEL_IMPORT_MAX_FILES", "2")
    r = _post(client, h, url, named)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    assert r.json()["error"]["detail"]["recorded"] == 2
    assert client.get(url, headers=h).json()["counts"] == {"prepared": 2}
    monkeypatch.delenv("MEDLABEL_IMPORT_MAX_FILES")
    assert client.get(url, headers=other).status_code == 404
    # nothing of the refused requests is staged
    assert not [p for p in _staging(runtime) if p.parent.name == "incoming"]
    assert len([p for p in _staging(runtime) if p.parent.name == "data"]) == 2
    assert _commit(client, runtime, h, url)["counts"] == {"imported": 2}
    r = _post(client, h, url, named)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


@pytest.mark.parametrize("how", ["malformed", "cut short"])
def test_a_broken_body_keeps_the_parts_received_before(client, runtime, team, tmp_path, how):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=4)
    url = _open(client, h, pid)
    boundary = uuid.uuid4().hex
    body = _body(boundary, [(p.name, p.read_bytes()) for p in paths[:3]])
    if how == "malformed":  # a fourth part whose header line has no LF after its CR
        body += f"--{boundary}\r\nContent-Disposition: form-data; name=files\rX".encode() + b"x" * 1000
    else:  # the body ends in the middle of the third part's data
        body = body[: len(body) - 3000]
    r = client.post(
        f"{url}/files",
        headers={**h, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body,
    )
    assert r.status_code == 422, r.text
    kept = 3 if how == "malformed" else 2
    assert r.json()["error"]["detail"]["recorded"] == kept
    listed = client.get(url, headers=h).json()
    assert sorted(f["name"] for f in listed["files"]) == sorted(p.name for p in paths[:kept])
    assert not [p for p in _staging(runtime) if p.parent.name == "incoming"]
    assert _commit(client, runtime, h, url)["counts"] == {"imported": kept}


def test_big_parts_are_spooled_and_the_pipeline_is_bounded(client, runtime, team, tmp_path, monkeypatch):
    """Parts over the in-memory limit go to the session's incoming/ folder (deleted after their
    preparation); tiny bounds exercise the pacing: every part still gets its result, in order."""
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=12)
    monkeypatch.setattr(routes, "_IN_MEMORY", 1000)
    monkeypatch.setattr(routes, "_PARTS_HELD", 2)
    monkeypatch.setattr(routes, "_BYTES_HELD", 1)
    monkeypatch.setattr(routes, "_RECORD_EVERY", 3)
    spooled: list[Path] = []
    real = service.receive_path

    def spy(ref, *, home):
        p = real(ref, home=home)
        spooled.append(p)
        return p

    monkeypatch.setattr(service, "receive_path", spy)
    named = [(p.name, p.read_bytes()) for p in paths] + [("tiny.txt", b"tiny")]
    url = _open(client, h, pid)
    r = _post(client, h, url, named)
    assert r.status_code == 200, r.text
    assert [f["name"] for f in r.json()["files"]] == [n for n, _ in named]
    assert r.json()["counts"] == {"prepared": 12, "error": 1}
    assert len(spooled) == 1 + 12  # the route's first check, then one per big part
    assert not [p for p in spooled if p.exists()]
    assert _commit(client, runtime, h, url)["counts"] == {"imported": 12, "error": 1}


def test_a_commit_during_a_batch_keeps_what_was_recorded_before(client, runtime, team, tmp_path, monkeypatch):
    """The commit marker is checked under the file lock at every journal write: the groups
    recorded before the commit are in it, the rest of the batch answers 409 and is discarded."""
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=6)
    monkeypatch.setattr(routes, "_RECORD_EVERY", 2)
    monkeypatch.setattr(routes, "_PARTS_HELD", 2)
    monkeypatch.setattr(routes._Batch, "_synced", lambda self: len(self.ready))  # fsyncs or not
    url = _open(client, h, pid)
    calls = []
    real = service.record_files

    def commit_meanwhile(ref, staged, **kw):
        calls.append(len(staged))
        if len(calls) == 2:  # the client commits while the batch is still coming in
            r = client.post(f"{url}/commit", headers=h)
            assert r.status_code == 202, r.text
        return real(ref, staged, **kw)

    monkeypatch.setattr(service, "record_files", commit_meanwhile)
    r = _post(client, h, url, [(p.name, p.read_bytes()) for p in paths])
    first = calls[0]  # 2 or 3 files, as the preparations end
    assert r.status_code == 409 and r.json()["error"]["detail"]["recorded"] == first, r.text
    assert len(calls) == 2 and 2 <= first < len(paths)
    monkeypatch.setattr(service, "record_files", real)
    folder = service.staging_root(runtime.settings.home) / _upload_id(url)
    assert len(list((folder / "data").iterdir())) == first  # the refused parts' files are gone
    job = client.get(url, headers=h).json()["job_id"]
    from .factories import run_job

    assert run_job(runtime, job)["counts"] == {"imported": first}


def test_record_files_keeps_the_order_of_one_name(runtime, team, tmp_path):
    """Two files of one name recorded together: the later one wins (as two PUTs)."""
    from medlabel.items.settings import deid_settings
    from medlabel.storage.models import Project

    pid, _ = team
    paths, _ = ct_series(tmp_path / "ct", slices=2)
    home = runtime.settings.home
    with session_scope(runtime.sessions) as s:
        actor = service.Actor(1, "boss", "user")
        ref = service.session_ref(service.create_session(s, actor, project=s.get(Project, pid), home=home))
        settings = deid_settings(s.get(Project, pid))
    kw = dict(settings=settings, sessions=runtime.sessions, secret_key=runtime.settings.secret_key, home=home)
    staged = [service.stage_file(ref, "same.dcm", p.read_bytes(), sync=True, **kw) for p in paths]
    service.record_files(ref, staged, sessions=runtime.sessions, home=home)
    (entry,) = service._entries(home, ref.id)
    assert (
        entry.result.sop_instance_uid
        == staged[1].result.sop_instance_uid
        != staged[0].result.sop_instance_uid
    )
    assert entry.prepared is not None and entry.prepared.synced


def test_the_batch_route_is_in_the_openapi_document(app):
    op = app.openapi()["paths"]["/api/v1/projects/{project_id}/uploads/{upload_id}/files"]["post"]
    body = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["files"] and body["properties"]["files"]["type"] == "array"
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/UploadBatchRead")


def test_a_file_whose_write_or_fsync_fails_is_refused_and_nothing_of_it_is_left(
    client, runtime, team, tmp_path, monkeypatch
):
    """A batch writes its prepared files on a background thread. One whose fsync fails is an
    ``error`` line ("send it again"; a second fsync after a failed one may claim data that was
    lost), its file is removed, and the other files are recorded and committed. (The fsync path:
    ``syncfs`` turned off, as on a file system shared with other writers.)"""
    monkeypatch.setenv("MEDLABEL_SYNCFS", "0")
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    real = os.fsync
    failed: list[int] = []

    def flaky(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode) and not failed:
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    url = _open(client, h, pid)
    monkeypatch.setattr(os, "fsync", flaky)
    r = _post(client, h, url, [(p.name, p.read_bytes()) for p in paths])
    monkeypatch.setattr(os, "fsync", real)
    assert r.status_code == 200 and r.json()["counts"] == {"prepared": 2, "error": 1}, r.text
    (bad,) = [f for f in r.json()["files"] if f["status"] == "error"]
    assert "could not be written" in bad["message"] and "Input/output error" in bad["message"], bad
    assert bad["code"] == "unreadable"
    folder = runtime.settings.home / "upload-sessions" / _upload_id(url) / "data"
    assert len(list(folder.iterdir())) == 2  # nothing of the refused file
    entries = service._entries(runtime.settings.home, _upload_id(url))
    assert all(e.prepared.synced and e.prepared.pieces is None for e in entries if e.prepared is not None)
    assert _commit(client, runtime, h, url)["counts"] == {"imported": 2, "error": 1}


def test_the_bytes_waiting_to_be_written_are_bounded(client, runtime, team, tmp_path, monkeypatch):
    """Prepared files wait for their write within a per-process byte budget: with a budget of
    one file, every file still arrives, and none is held once the request has answered."""
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=4)
    budget = ingest.ByteBudget(1)
    seen: list[tuple[int, int]] = []
    take = budget.acquire

    def spy(n):
        take(n)
        seen.append((n, budget.held))  # with a budget of 1, one file's bytes at a time

    monkeypatch.setattr(budget, "acquire", spy)
    monkeypatch.setattr(service, "_WRITE_BUDGET", budget)
    url = _open(client, h, pid)
    r = _post(client, h, url, [(p.name, p.read_bytes()) for p in paths])
    assert r.status_code == 200 and r.json()["counts"] == {"prepared": 4}, r.text
    assert len(seen) == 4 and all(held == n > 1000 for n, held in seen), seen
    assert budget.held == 0
    assert _commit(client, runtime, h, url)["counts"] == {"imported": 4}


def test_batch_files_are_stored_as_they_arrive_and_the_commit_checks_them(
    client, runtime, team, tmp_path, monkeypatch
):
    """A batch links its fsync'd files into the blob store and fsyncs the directories that
    name them while the upload goes on (``stored``); the commit only checks the blobs are
    there. One the sweep took meanwhile (an open session's blobs are orphans to it) is linked
    again by the commit, and its directories fsync'd, before a row names it."""
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    url = _open(client, h, pid)
    r = _post(client, h, url, [(p.name, p.read_bytes()) for p in paths])
    assert r.status_code == 200, r.text
    entries = service._entries(runtime.settings.home, _upload_id(url))
    digests = [e.prepared.sha256 for e in entries]
    assert all(e.prepared.synced and e.prepared.stored for e in entries)
    assert all(runtime.blobs.exists(d) for d in digests)  # before any commit
    swept = digests[1]
    (runtime.blobs.root / swept[:2] / swept[2:4] / swept).unlink()
    synced: list[set[str]] = []
    real = type(runtime.blobs).sync_dirs

    def spy(self, wanted):
        synced.append(set(wanted))
        return real(self, wanted)

    monkeypatch.setattr(type(runtime.blobs), "sync_dirs", spy)
    result = _commit(client, runtime, h, url)
    assert result["counts"] == {"imported": 3}
    assert all(runtime.blobs.exists(d) for d in digests)
    assert [s for s in synced if s] == [{swept}]  # only the one linked again
    with session_scope(runtime.sessions) as s:
        named = set(s.scalars(select(Instance.blob_sha256).where(Instance.project_id == pid)))
    assert named == set(digests)


def test_the_directories_of_a_group_are_fsynced_at_once_and_only_then_stored(
    client, runtime, team, tmp_path, monkeypatch
):
    """The files of a recorded group have their blob directories fsync'd in one call before
    their entries say ``stored``; when that fails, the entries say synced but not stored, and
    the commit fsyncs the directories itself before a row names the blobs. (The fsync path:
    ``syncfs`` turned off.)"""
    monkeypatch.setenv("MEDLABEL_SYNCFS", "0")
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    blob_type = type(runtime.blobs)
    real = blob_type.sync_dirs
    calls: list[set[str]] = []

    def spy(self, wanted):
        calls.append(set(wanted))
        return real(self, wanted)

    monkeypatch.setattr(blob_type, "sync_dirs", spy)
    url = _open(client, h, pid)
    r = _post(client, h, url, [(p.name, p.read_bytes()) for p in paths])
    assert r.status_code == 200, r.text
    entries = service._entries(runtime.settings.home, _upload_id(url))
    assert calls == [{e.prepared.sha256 for e in entries}]  # one call for the group of 3
    assert all(e.prepared.stored for e in entries)

    def broken(self, wanted):
        calls.append(set(wanted))
        raise OSError(errno.EIO, "Input/output error")

    calls.clear()
    monkeypatch.setattr(blob_type, "sync_dirs", broken)
    url = _open(client, h, pid)
    others, _ = ct_series(tmp_path / "ct2", slices=3, seed=5)
    r = _post(client, h, url, [(p.name, p.read_bytes()) for p in others])
    assert r.status_code == 200 and r.json()["counts"] == {"prepared": 3}, r.text
    entries = service._entries(runtime.settings.home, _upload_id(url))
    assert [(e.prepared.synced, e.prepared.stored) for e in entries] == [(True, False)] * 3
    calls.clear()
    monkeypatch.setattr(blob_type, "sync_dirs", spy)
    assert _commit(client, runtime, h, url)["counts"] == {"imported": 3}
    assert set().union(*calls) == {e.prepared.sha256 for e in entries}


def _need_group_sync(runtime) -> None:  # type: ignore[no-untyped-def]
    """Skip where a batch cannot use ``syncfs`` (not Linux 5.8 or later)."""
    (runtime.settings.home / "upload-sessions").mkdir(parents=True, exist_ok=True)
    found = service.group_sync(runtime.settings.home, runtime.blobs)
    if found is None:
        pytest.skip("no syncfs here (not Linux 5.8 or later)")
    found.close()


def test_a_group_is_made_durable_by_one_syncfs(client, runtime, team, tmp_path, monkeypatch):
    """Where the staging folders and the blob store share a file system, a batch's files are
    written without an fsync each; a recorded group is made durable by one ``syncfs``, only
    then linked into the blob store (a blob is named once its data is durable), the links made
    durable by a second (no directory fsyncs), then recorded as synced and stored."""
    pid, h = team
    _need_group_sync(runtime)
    paths, _ = ct_series(tmp_path / "ct", slices=5)
    events: list[str] = []
    real_sync = FilesystemSync.sync
    real_adopt = type(runtime.blobs).adopt

    def counted(self):  # type: ignore[no-untyped-def]
        events.append("sync")
        return real_sync(self)

    def adopt(self, path, digest):  # type: ignore[no-untyped-def]
        events.append("link")
        return real_adopt(self, path, digest)

    fsynced: list[int] = []
    real_fsync = os.fsync

    def spy_fsync(fd):  # type: ignore[no-untyped-def]
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fsynced.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(FilesystemSync, "sync", counted)
    monkeypatch.setattr(type(runtime.blobs), "adopt", adopt)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(type(runtime.blobs), "sync_dirs", lambda self, wanted: pytest.fail("a directory fsync"))
    monkeypatch.setattr(routes, "_RECORD_EVERY", 2)
    url = _open(client, h, pid)
    r = _post(client, h, url, [(p.name, p.read_bytes()) for p in paths])
    assert r.status_code == 200 and r.json()["counts"] == {"prepared": 5}, r.text
    assert fsynced == []
    # each group: sync (the data), its links, sync (the names); 5 files in groups of 2 or more
    groups = "".join("s" if e == "sync" else "l" for e in events)
    assert re.fullmatch(r"(sl+s)+", groups) and groups.count("l") == 5, events
    entries = service._entries(runtime.settings.home, _upload_id(url))
    assert all(e.prepared.synced and e.prepared.stored for e in entries)
    monkeypatch.undo()
    assert _commit(client, runtime, h, url)["counts"] == {"imported": 5}


def test_a_failed_syncfs_refuses_the_group_and_the_rest_of_the_batch(
    client, runtime, team, tmp_path, monkeypatch
):
    """When ``syncfs`` reports a writeback error, nothing says which of the files written since
    reached the disk: the group's files, and every later one of the batch, are ``error`` lines
    ("send it again"), their files removed; nothing of them is committed."""
    pid, h = team
    _need_group_sync(runtime)
    paths, _ = ct_series(tmp_path / "ct", slices=4)
    calls: list[int] = []

    def broken(fd):  # type: ignore[no-untyped-def]
        calls.append(fd)
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(files, "_syncfs", broken)
    monkeypatch.setattr(routes, "_RECORD_EVERY", 2)
    url = _open(client, h, pid)
    r = _post(client, h, url, [(p.name, p.read_bytes()) for p in paths])
    assert r.status_code == 200, r.text
    assert r.json()["counts"] == {"error": 4}, r.text
    assert all("could not be made durable" in f["message"] and "syncfs" in f["message"] for f in r.json()["files"])
    assert len(calls) == 1  # the first failure is kept: no second syncfs claims the rest
    folder = runtime.settings.home / "upload-sessions" / _upload_id(url) / "data"
    assert list(folder.iterdir()) == []
    monkeypatch.undo()
    assert _commit(client, runtime, h, url)["counts"] == {"error": 4}


def test_no_group_sync_across_file_systems_or_when_turned_off(runtime, monkeypatch):
    home, blobs = runtime.settings.home, runtime.blobs
    (home / "upload-sessions").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MEDLABEL_SYNCFS", "0")
    assert service.group_sync(home, blobs) is None
    monkeypatch.delenv("MEDLABEL_SYNCFS")
    assert service.group_sync(home, None) is None
    real = os.stat

    def elsewhere(path, *a, **k):  # type: ignore[no-untyped-def]
        st = real(path, *a, **k)
        if os.fspath(path) == os.fspath(blobs.root):
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 1, *tuple(st)[3:]))
        return st

    monkeypatch.setattr(os, "stat", elsewhere)
    assert service.group_sync(home, blobs) is None  # blobs on another file system
