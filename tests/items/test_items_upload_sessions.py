"""Upload sessions: files PUT one by one (prepared at once), then committed as one import.

The reference is the multipart import of the same files (tests/items/test_items_ingest.py checks
that one against pydicom and the source arrays): the same items, byte-identical stored
(de-identified) files and the same report."""

from __future__ import annotations

import io
import os
import time
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from medlabel import clock
from medlabel.items import blob_sweep, ingest
from medlabel.items import upload_sessions as service
from medlabel.items.models import Instance, Item, Study, UploadSession
from medlabel.items.stores import project_secret
from medlabel.jobs import service as jobs
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import PATIENT_ID, by_name, ct_series, import_via_api, run_job


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    make_user(runtime, "other")
    pid = make_project(runtime, "Sessions", {"boss": ["manager"], "other": ["manager"]})
    return pid, session_headers(runtime, uid)


def _open(client, h, pid) -> str:
    r = client.post(f"/api/v1/projects/{pid}/uploads", headers=h)
    assert r.status_code == 201, r.text
    assert set(r.json()) >= {"id", "expires_at"}
    return f"/api/v1/projects/{pid}/uploads/{r.json()['id']}"


def _put(client, h, url, name, data, ctype="application/dicom"):
    return client.put(f"{url}/files/{name}", headers={**h, "Content-Type": ctype}, content=data)


def _commit(client, rt, h, url) -> dict:
    r = client.post(f"{url}/commit", headers=h)
    assert r.status_code == 202, r.text
    return run_job(rt, r.json()["id"])


def _rows(rt, pid):
    with session_scope(rt.sessions) as s:
        return tuple(
            s.scalar(select(func.count(m.id)).where(m.project_id == pid)) for m in (Item, Instance, Study)
        )


def _staging(rt) -> list[Path]:
    root = service.staging_root(rt.settings.home)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _items(rt, project) -> list[tuple]:
    """A project's items as compared between import paths: their fields and their blobs."""
    with session_scope(rt.sessions) as s:
        out = []
        for it in s.scalars(select(Item).where(Item.project_id == project)).all():
            blobs = s.scalars(
                select(Instance.blob_sha256).where(Instance.item_id == it.id).order_by(Instance.slice_index)
            ).all()
            out.append(
                (it.kind, it.frames, it.width, it.height, it.status, it.study_uid, it.series_uid)
                + (it.patient_pseudonym, it.dedup_key, it.meta, list(blobs))
            )
        return out


def _lines(result):
    return sorted((f["name"], f["status"], f.get("code", ""), f.get("message", "")) for f in result["files"])


def test_session_import_equals_the_multipart_import(client, runtime, team, tmp_path, monkeypatch):
    pid, h = team
    other = make_project(runtime, "Reference", {"boss": ["manager"]})
    # one project secret for both projects: the same UIDs, pseudonyms and date offsets, so the
    # de-identified files of both imports must be byte-identical
    monkeypatch.setattr(ingest, "project_secret", lambda key, _pid: project_secret(key, 999))
    paths, _ = ct_series(tmp_path / "ct", slices=8)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(paths[0].read_bytes()[:-500])  # truncated pixel data
    files = [*paths, broken]
    reference = import_via_api(client, runtime, h, other, files)
    assert reference["counts"] == {"imported": 8, "error": 1}

    url = _open(client, h, pid)
    answers = {}
    for p in [paths[3], paths[5], broken, *paths]:  # two of them twice (re-sent after a "drop")
        r = _put(client, h, url, p.name, p.read_bytes())
        assert r.status_code == 200, r.text
        answers[p.name] = r.json()
    assert answers["broken.dcm"]["status"] == "error" and answers["broken.dcm"]["code"] == "dicom_error"
    assert "Pixel Data" in answers["broken.dcm"]["message"]
    assert {answers[p.name]["status"] for p in paths} == {"prepared"}
    listed = client.get(url, headers=h).json()
    assert listed["status"] == "open" and listed["counts"] == {"prepared": 8, "error": 1}
    assert sorted(f["name"] for f in listed["files"]) == sorted(p.name for p in files)
    # only de-identified files are kept: no original, nothing identifying; a name sent again
    # leaves its earlier prepared file until the session ends (the latest entry wins)
    staged = _staging(runtime)
    assert not [p for p in staged if p.parent.name == "incoming"]
    data = [p for p in staged if p.parent.name == "data"]
    assert len(data) == 8 + 2
    for p in data:
        raw = p.read_bytes()
        assert PATIENT_ID.encode() not in raw and b"Doe" not in raw

    result = _commit(client, runtime, h, url)
    assert result["counts"] == reference["counts"]
    assert _lines(result) == _lines(reference)
    assert _staging(runtime) == []
    # the same items, instances and stored files
    ours, theirs = _items(runtime, pid), _items(runtime, other)
    assert ours == theirs and len(ours) == 1 and len(ours[0][-1]) == 8
    ds = pydicom.dcmread(io.BytesIO(runtime.blobs.get(ours[0][-1][0])))
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("ANON-")
    # committed: no more files, no second commit
    assert client.post(f"{url}/commit", headers=h).status_code == 409
    r = _put(client, h, url, "late.dcm", paths[0].read_bytes())
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


def test_truncated_file_fails_at_put_and_the_rest_commits(client, runtime, team, tmp_path):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    url = _open(client, h, pid)
    r = _put(client, h, url, "MR_truncated.dcm", Path(get_testdata_file("MR_truncated.dcm")).read_bytes())
    assert r.status_code == 200 and r.json()["status"] == "error" and r.json()["code"] == "dicom_error"
    r = _put(client, h, url, "notes.txt", b"not an image at all", "application/octet-stream")
    assert r.json()["status"] == "error" and r.json()["code"] == "unsupported_media"
    r = _put(client, h, url, "x.dcm", paths[0].read_bytes(), "text/plain")
    assert r.status_code == 415
    for p in paths:
        assert _put(client, h, url, p.name, p.read_bytes()).json()["status"] == "prepared"
    result = _commit(client, runtime, h, url)
    files = by_name(result)
    assert result["counts"] == {"imported": 3, "error": 2}
    assert files["MR_truncated.dcm"]["code"] == "dicom_error"
    url2 = _open(client, h, pid)  # a file already in the project is a duplicate at once
    r = _put(client, h, url2, paths[1].name, paths[1].read_bytes())
    assert r.json()["status"] == "duplicate"


def test_another_users_session_is_404(client, runtime, team, tmp_path):
    pid, h = team
    url = _open(client, h, pid)
    other = session_headers(runtime, 2)  # a manager of the same project
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert client.get(url, headers=other).status_code == 404
    assert _put(client, other, url, "a.dcm", data).status_code == 404
    assert client.post(f"{url}/commit", headers=other).status_code == 404
    assert client.delete(url, headers=other).status_code == 404
    # nor through another project
    elsewhere = make_project(runtime, "Elsewhere", {"boss": ["manager"]})
    assert (
        client.get(url.replace(f"/projects/{pid}/", f"/projects/{elsewhere}/"), headers=h).status_code == 404
    )
    assert client.get(url, headers=h).status_code == 200
    assert client.post(f"{url}/commit", headers=h).status_code == 422  # nothing uploaded


def test_abandoned_session_leaves_nothing(client, runtime, team, tmp_path):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    url = _open(client, h, pid)
    for p in paths:
        assert _put(client, h, url, p.name, p.read_bytes()).json()["status"] == "prepared"
    assert _staging(runtime)
    service.settle()  # the PUTs' files were linked into the blob store after their answers
    linked = set(runtime.blobs.digests())
    assert len(linked) == 3
    assert client.delete(url, headers=h).status_code == 204
    assert _staging(runtime) == []
    assert not list(service.staging_root(runtime.settings.home).iterdir())
    assert client.get(url, headers=h).status_code == 404
    assert _rows(runtime, pid) == (0, 0, 0)
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(UploadSession.id))) == 0
    # no row names them: orphans, which the sweep removes once they are old enough
    for d in linked:
        old = time.time() - 48 * 3600
        os.utime(runtime.blobs.path(d), (old, old))
    report = blob_sweep.sweep_blobs(
        runtime.sessions, runtime.blobs, older_than=timedelta(hours=24), actor=service.Actor(None, "sweeper", "admin")
    )
    assert set(report.digests) == linked, report
    assert list(runtime.blobs.digests()) == []


def test_expired_sessions_are_removed(client, runtime, team, tmp_path, monkeypatch):
    pid, h = team
    monkeypatch.setenv(service.TTL_ENV, "0.1")  # 6 minutes (idle logoff is later)
    paths, _ = ct_series(tmp_path / "ct", slices=2)
    url = _open(client, h, pid)
    kept = _open(client, h, pid)
    assert _put(client, h, url, paths[0].name, paths[0].read_bytes()).json()["status"] == "prepared"
    clock.set_offset(timedelta(minutes=4))
    assert _put(client, h, kept, paths[1].name, paths[1].read_bytes()).json()["status"] == "prepared"
    clock.set_offset(timedelta(minutes=7))  # past the first one's TTL; the second was extended
    assert client.get(url, headers=h).status_code == 404
    assert client.get(kept, headers=h).status_code == 200
    clock.set_offset(timedelta(minutes=20))
    with session_scope(runtime.sessions) as s:
        assert service.reap_expired(s, runtime.settings.home) == 1
    assert _staging(runtime) == []


def test_a_failed_commit_stores_nothing_and_can_be_retried(client, runtime, team, tmp_path, monkeypatch):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=4)
    url = _open(client, h, pid)
    for p in paths:
        _put(client, h, url, p.name, p.read_bytes())

    class Broken:
        @staticmethod
        def record(*a, **kw):
            raise RuntimeError("disk full while auditing")

    real = ingest.audit
    monkeypatch.setattr(ingest, "audit", Broken)  # fails inside the item's transaction
    r = client.post(f"{url}/commit", headers=h)
    assert r.status_code == 202
    jobs.execute_job(runtime, r.json()["id"])
    with session_scope(runtime.sessions) as s:
        assert jobs.get_job(s, r.json()["id"]).state == "failed"
    assert _rows(runtime, pid) == (0, 0, 0)
    assert client.get(url, headers=h).json()["status"] == "failed"
    assert len([p for p in _staging(runtime) if p.parent.name == "data"]) == 4
    assert _put(client, h, url, "more.dcm", paths[0].read_bytes()).status_code == 409
    monkeypatch.setattr(ingest, "audit", real)
    result = _commit(client, runtime, h, url)
    assert result["counts"] == {"imported": 4}
    assert _rows(runtime, pid) == (1, 4, 1)
    assert client.get(url, headers=h).json()["status"] == "done"
    assert client.post(f"{url}/commit", headers=h).status_code == 409


def test_a_file_over_the_json_body_limit_is_taken(client, runtime, team, tmp_path):
    """Raw PUT bodies get the upload limit (MEDLABEL_MAX_UPLOAD_BYTES), not the 1 MiB JSON one,
    and only on this route."""
    pid, h = team
    (path,), _ = ct_series(tmp_path / "big", slices=1, rows=760, cols=760)
    data = path.read_bytes()
    assert len(data) > runtime.settings.max_body_bytes
    url = _open(client, h, pid)
    r = _put(client, h, url, path.name, data)
    assert r.status_code == 200 and r.json()["status"] == "prepared", r.text
    r = client.post(
        f"/api/v1/projects/{pid}/uploads",
        headers={**h, "Content-Type": "application/octet-stream"},
        content=data,
    )
    assert r.status_code == 413


def _one_file_put(client, runtime, team, tmp_path):
    """A session with a.dcm PUT: (url, upload id, home, staging folder, a.dcm's entry, the series'
    files)."""
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    url = _open(client, h, pid)
    upload_id = url.rsplit("/", 1)[1]
    home = runtime.settings.home
    assert _put(client, h, url, "a.dcm", paths[0].read_bytes()).json()["status"] == "prepared"
    (first,) = service._entries(home, upload_id)
    return url, upload_id, home, service.staging_root(home) / upload_id, first, paths


def test_the_latest_entry_of_a_name_wins_across_journals(client, runtime, team, tmp_path):
    """Each server process appends to its own journal; a name sent again (to any process)
    replaces the earlier file, a record cut short by a crash reads as never sent, and entry
    files of the version before the journals are still read."""
    url, upload_id, home, folder, first, paths = _one_file_put(client, runtime, team, tmp_path)
    h = team[1]
    # another process (its own journal) takes a.dcm again, later: that one wins
    other = service._Journals()
    later = service._Entry(
        "a.dcm", service.FileResult("a.dcm", "error", "replaced", "x"), None, clock.now(), "", first.seq + 1
    )
    other.append(folder, upload_id, service._record(later))
    (entry,) = service._entries(home, upload_id)
    assert entry.result.message == "replaced"
    # ... unless its record was cut short by a crash: then the earlier one stands
    journal = next(p for p in (folder / "files").iterdir() if other._token in p.name)
    journal.write_bytes(journal.read_bytes()[:-3])
    (entry,) = service._entries(home, upload_id)
    assert entry.result.status == "prepared" and entry.seq == first.seq
    # an entry file written before the journals existed
    legacy = service._Entry(
        "old.dcm", service.FileResult("old.dcm", "skipped", "legacy"), None, clock.now(), ""
    )
    del legacy.seq  # pickled by the older version of the class: no seq at all
    (folder / "files" / "0123.entry").write_bytes(__import__("pickle").dumps(legacy))
    names = {e.uploaded_name: e.result.status for e in service._entries(home, upload_id)}
    assert names == {"a.dcm": "prepared", "old.dcm": "skipped"}
    other.forget(upload_id)
    # the commit imports exactly what the entries say
    assert _put(client, h, url, "b.dcm", paths[1].read_bytes()).json()["status"] == "prepared"
    result = _commit(client, runtime, h, url)
    assert result["counts"] == {"imported": 2, "skipped": 1}


def test_a_recorded_group_is_one_journal_record(client, runtime, team, tmp_path):
    """A batch's group of files is one journal record (one pickle, paths as strings): read back
    whole, each prepared file under the session's data/ folder; cut short by a crash, the whole
    group reads as never sent (and the records before it stand)."""
    _url, upload_id, home, folder, first, _paths = _one_file_put(client, runtime, team, tmp_path)
    group = [
        service._Entry(
            f"g{i}.dcm",
            service.FileResult(f"g{i}.dcm", "prepared"),
            ingest.PreparedDicom(
                ingest._Dicom(f"g{i}.dcm", Path("/elsewhere/data") / f"{i}.dcm", first.prepared.dicom.info, (), "P", []),
                "ab" * 32,
            ),
            clock.now(),
            "",
            first.seq + 1 + i,
        )
        for i in range(3)
    ]
    record = service._record(group)
    assert b"PosixPath" not in record and b"/elsewhere/data/0.dcm" in record
    other = service._Journals()
    other.append(folder, upload_id, record)
    entries = {e.uploaded_name: e for e in service._entries(home, upload_id)}
    assert sorted(entries) == ["a.dcm", "g0.dcm", "g1.dcm", "g2.dcm"]
    assert entries["g1.dcm"].prepared.path == folder / "data" / "1.dcm"
    assert isinstance(entries["g1.dcm"].prepared.path, Path)
    assert entries["g2.dcm"].prepared.dicom.info == first.prepared.dicom.info
    journal = next(p for p in (folder / "files").iterdir() if other._token in p.name)
    journal.write_bytes(journal.read_bytes()[:-1])
    assert [e.uploaded_name for e in service._entries(home, upload_id)] == ["a.dcm"]
    other.forget(upload_id)


def test_a_put_takes_no_write_turn(client, runtime, team, tmp_path):
    """A PUT reads (access, duplicate check) without SQLite's write turn, so files keep coming
    in while another transaction writes; only a new patient's pseudonym is a write."""
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    url = _open(client, h, pid)
    assert _put(client, h, url, paths[0].name, paths[0].read_bytes()).json()["status"] == "prepared"
    with runtime.sessions() as s, s.begin():
        s.execute(select(func.count(Item.id)))  # BEGIN IMMEDIATE on SQLite: the write turn is held
        for p in paths[1:]:
            r = _put(client, h, url, p.name, p.read_bytes())
            assert r.status_code == 200 and r.json()["status"] == "prepared", r.text


def test_a_member_removed_cannot_put_any_more(client, runtime, team, tmp_path):
    """The PUT's access facts are cached, but a change in this process applies at once."""
    from medlabel.accounts.service import SYSTEM
    from medlabel.projects import service as projects
    from medlabel.storage.models import Project

    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=2)
    url = _open(client, h, pid)
    assert _put(client, h, url, paths[0].name, paths[0].read_bytes()).status_code == 200
    with session_scope(runtime.sessions) as s:
        projects.remove_member(s, SYSTEM, s.get(Project, pid), "boss", "manager")
    assert _put(client, h, url, paths[1].name, paths[1].read_bytes()).status_code == 404


def test_a_puts_file_is_fsynced_and_linked_after_the_answer_and_the_commit_skips_it(
    client, runtime, team, tmp_path, monkeypatch
):
    """After a PUT has answered, its prepared file is fsync'd and linked into the blob store on
    a background thread and its entry recorded again as synced and stored (same sequence
    number), so the commit job fsyncs nothing; one whose session was committed meanwhile is
    not recorded again, and the commit fsyncs it itself."""
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=3)
    fsynced: list[Path] = []
    real_fsync = ingest._fsync_file

    def spy(path, digest):
        fsynced.append(path)
        return real_fsync(path, digest)

    monkeypatch.setattr(ingest, "_fsync_file", spy)
    url = _open(client, h, pid)
    for p in paths:
        assert _put(client, h, url, p.name, p.read_bytes()).json()["status"] == "prepared"
    service.settle()
    upload_id = url.rsplit("/", 1)[-1]
    entries = service._entries(runtime.settings.home, upload_id)
    assert [(e.prepared.synced, e.prepared.stored) for e in entries] == [(True, True)] * 3
    assert all(runtime.blobs.exists(e.prepared.sha256) for e in entries)
    assert _commit(client, runtime, h, url)["counts"] == {"imported": 3}
    assert fsynced == []

    # committed before the background work ran: nothing recorded again, the commit does it
    real_complete = service._complete
    held: list[tuple] = []
    monkeypatch.setattr(service, "_complete", lambda *a: held.append(a))
    url = _open(client, h, pid)
    others, _ = ct_series(tmp_path / "ct2", slices=3, seed=4)
    for p in others:
        assert _put(client, h, url, p.name, p.read_bytes()).json()["status"] == "prepared"
    service.settle()
    r = client.post(f"{url}/commit", headers=h)
    assert r.status_code == 202, r.text
    assert len(held) == 3
    for args in held:
        real_complete(*args)
    upload_id = url.rsplit("/", 1)[-1]
    entries = service._entries(runtime.settings.home, upload_id)
    assert [(e.prepared.synced, e.prepared.stored) for e in entries] == [(False, False)] * 3
    assert run_job(runtime, r.json()["id"])["counts"] == {"imported": 3}
    assert sorted(fsynced) == sorted(e.prepared.path for e in entries)
