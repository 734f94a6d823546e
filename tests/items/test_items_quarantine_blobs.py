"""Rejecting a quarantined item deletes its stored files, after the commit, unless shared."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.items import service as items
from medlabel.items.models import Instance, Item, QuarantineEntry
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import by_name, import_via_api


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Held", {"boss": ["manager"]})
    return pid, uid, session_headers(runtime, uid)


def _events(rt, action):
    with session_scope(rt.sessions) as s:
        return s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)).all()


def _held(client, runtime, h, pid):
    files = [Path(get_testdata_file(n)) for n in ("US1_UNCR.dcm", "CT_small.dcm")]
    report = by_name(import_via_api(client, runtime, h, pid, files))
    us, ct = report["US1_UNCR.dcm"], report["CT_small.dcm"]
    assert (us["status"], ct["status"]) == ("quarantined", "imported")
    with session_scope(runtime.sessions) as s:
        blob = {
            i.item_id: i.blob_sha256
            for i in s.scalars(select(Instance).where(Instance.item_id.in_([us["item_id"], ct["item_id"]])))
        }
        qid = s.scalar(select(QuarantineEntry.id).where(QuarantineEntry.item_id == us["item_id"]))
    return us["item_id"], blob[us["item_id"]], blob[ct["item_id"]], qid


def _sharer(s, project_id: int, digest: str, status: str = "ready") -> None:
    s.add(
        Item(
            project_id=project_id,
            kind="image",
            name="same bytes",
            dedup_key=f"test:{digest[:8]}:{status}",
            status=status,
            created_at=clock.now(),
            source_format="dicom",
            blob_sha256=digest,
            meta={},
        )
    )


def test_reject_deletes_unshared_blobs_and_audits(client, runtime, team):
    pid, _uid, h = team
    item_id, us_blob, ct_blob, qid = _held(client, runtime, h, pid)
    assert runtime.blobs.exists(us_blob)
    r = client.post(f"/api/v1/projects/{pid}/quarantine/{qid}/reject", headers=h, json={"note": "text"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert not runtime.blobs.exists(us_blob)
    assert runtime.blobs.exists(ct_blob)  # other items keep theirs
    (decision,) = _events(runtime, "quarantine.reject")
    assert decision.detail["blobs_to_delete"] == [us_blob]
    (deleted,) = _events(runtime, "blob.delete")
    assert deleted.object_id == str(item_id) and deleted.outcome == "success"
    assert deleted.detail == {"reason": "quarantine.reject", "deleted": [us_blob], "kept": [], "failed": []}
    assert deleted.seq > decision.seq
    # a rejected item is still listed (status rejected) and its pixels stay out of reach
    r = client.get(f"/api/v1/items/{item_id}/frames/0/rendered", headers=h)
    assert r.status_code == 404


def test_shared_blob_is_kept(client, runtime, team):
    pid, _uid, h = team
    _item_id, us_blob, _ct, qid = _held(client, runtime, h, pid)
    other = make_project(runtime, "Other")
    with session_scope(runtime.sessions) as s:
        _sharer(s, other, us_blob)  # another project's item with the same bytes
        _sharer(s, pid, us_blob, status="rejected")  # a rejected one does not count
    r = client.post(f"/api/v1/projects/{pid}/quarantine/{qid}/reject", headers=h, json={})
    assert r.status_code == 200
    assert runtime.blobs.exists(us_blob)
    assert _events(runtime, "quarantine.reject")[0].detail["blobs_to_delete"] == []
    assert _events(runtime, "blob.delete") == []


def test_references_are_checked_again_after_the_commit(client, runtime, team):
    pid, uid, h = team
    _item_id, us_blob, _ct, qid = _held(client, runtime, h, pid)
    actor = Actor(user_id=uid, username="boss", role="user", ip="")
    with session_scope(runtime.sessions) as s:
        items.decide_quarantine(s, actor, project_id=pid, qid=qid, decision="reject", blobs=runtime.blobs)
        _sharer(s, pid, us_blob)  # stored in the same commit, after the decision was taken
    assert runtime.blobs.exists(us_blob)
    (deleted,) = _events(runtime, "blob.delete")
    assert deleted.detail["kept"] == [us_blob] and deleted.detail["deleted"] == []


def test_nothing_is_deleted_when_the_decision_rolls_back(client, runtime, team):
    pid, uid, h = team
    _item_id, us_blob, _ct, qid = _held(client, runtime, h, pid)
    actor = Actor(user_id=uid, username="boss", role="user", ip="")
    s = runtime.sessions()
    try:
        items.decide_quarantine(s, actor, project_id=pid, qid=qid, decision="reject", blobs=runtime.blobs)
        s.rollback()
        s.commit()  # a later commit of the same session must not run the forgotten deletion
    finally:
        s.close()
    assert runtime.blobs.exists(us_blob)
    assert _events(runtime, "blob.delete") == []
    with session_scope(runtime.sessions) as s2:
        assert s2.get(QuarantineEntry, qid).status == "pending"
