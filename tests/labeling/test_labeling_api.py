"""Labeling through the HTTP API: schema versions, guidelines, saves with If-Match, validation,
leases, heart-beats, overlap blindness, gold items, audits, assignment, history and timelines."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from medlabel import clock
from medlabel.labeling.models import AnnotationSetRow
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent, User
from tests.foundation.helpers import error_of, session_headers

from .helpers import CHEST_SCHEMA, ROOT, good_body, make_items, setup_project


def _headers(rt: Any, *names: str) -> dict[str, dict[str, str]]:
    with session_scope(rt.sessions) as s:
        ids = dict(s.execute(select(User.username, User.id)).all())
    return {n: session_headers(rt, ids[n]) for n in names}


def _claim(client: Any, pid: int, h: dict[str, str], stage: str) -> dict[str, Any] | None:
    r = client.post(f"/api/v1/projects/{pid}/tasks/next?stage={stage}", headers=h)
    assert r.status_code == 200, r.text
    return r.json()["task"]


def _annotate(client: Any, pid: int, h: dict[str, str], user: str, **kw: Any) -> dict[str, Any]:
    task = _claim(client, pid, h, "annotate")
    assert task is not None
    r = client.put(f"/api/v1/items/{task['item_id']}/annotations", json=good_body(user, **kw), headers=h)
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/projects/{pid}/tasks/{task['id']}/submit", headers=h)
    assert r.status_code == 200, r.text
    return task


def test_schema_versions_yaml_and_json_retire_removed_classes(client, runtime):
    pid, _ = setup_project(runtime, "Schemas", {"boss": ["manager"], "ann": ["annotator"]})
    h = _headers(runtime, "boss", "ann")
    assert client.get(f"/api/v1/projects/{pid}/schema", headers=h["ann"]).json()["version"] == 1
    doc = yaml.safe_load(CHEST_SCHEMA)
    doc["classes"] = [c for c in doc["classes"] if c["id"] != "pneumothorax"]
    r = client.put(
        f"/api/v1/projects/{pid}/schema",
        content=json.dumps(doc),
        headers={**h["boss"], "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["changes"]["retired"] == ["pneumothorax"]
    got = client.get(f"/api/v1/projects/{pid}/schema", headers=h["ann"]).json()
    retired = {c["id"]: c.get("retired", False) for c in got["document"]["classes"]}
    assert retired["pneumothorax"] is True and retired["effusion"] is False
    # YAML restores the class in version 3
    r = client.put(
        f"/api/v1/projects/{pid}/schema",
        content=CHEST_SCHEMA,
        headers={**h["boss"], "Content-Type": "application/yaml"},
    )
    assert (
        r.status_code == 200
        and r.json()["version"] == 3
        and r.json()["changes"]["restored"] == ["pneumothorax"]
    )
    assert (
        client.put(f"/api/v1/projects/{pid}/schema", content=CHEST_SCHEMA, headers=h["ann"]).status_code
        == 403
    )
    bad = client.put(f"/api/v1/projects/{pid}/schema", content="classes: [", headers=h["boss"])
    assert bad.status_code == 422 and "YAML" in error_of(bad)["message"]


def test_guidelines_must_be_acknowledged_before_the_next_task(client, runtime):
    pid, _ = setup_project(runtime, "Guides", {"boss": ["manager"], "ann": ["annotator"]}, n_items=2)
    h = _headers(runtime, "boss", "ann")
    assert (
        client.put(
            f"/api/v1/projects/{pid}/guidelines", json={"markdown": "# v1"}, headers=h["boss"]
        ).status_code
        == 200
    )
    r = client.post(f"/api/v1/projects/{pid}/tasks/next?stage=annotate", headers=h["ann"])
    assert r.status_code == 409 and error_of(r)["code"] == "guidelines_not_acknowledged"
    assert client.get(f"/api/v1/projects/{pid}/guidelines", headers=h["ann"]).json()["acknowledged"] is False
    assert (
        client.post(
            f"/api/v1/projects/{pid}/guidelines/ack", json={"version": 2}, headers=h["ann"]
        ).status_code
        == 409
    )
    assert (
        client.post(
            f"/api/v1/projects/{pid}/guidelines/ack", json={"version": 1}, headers=h["ann"]
        ).status_code
        == 204
    )
    assert _claim(client, pid, h["ann"], "annotate") is not None
    client.put(f"/api/v1/projects/{pid}/guidelines", json={"markdown": "# v2: stricter"}, headers=h["boss"])
    r = client.post(f"/api/v1/projects/{pid}/tasks/next?stage=annotate", headers=h["ann"])
    assert r.status_code == 409 and error_of(r)["detail"] == {"version": 2}


def test_stale_save_gets_412_and_loses_nothing(client, runtime):
    pid, items = setup_project(runtime, "Stale", {"ann": ["annotator"]}, n_items=1)
    h = _headers(runtime, "ann")["ann"]
    _claim(client, pid, h, "annotate")
    url = f"/api/v1/items/{items[0]}/annotations"
    assert client.put(url, json=good_body("ann", boxes=1), headers=h).json()["version"] == 1
    # two tabs both edited version 1: the first save wins, the second is refused
    first = client.put(url, json=good_body("ann", boxes=2), headers={**h, "If-Match": '"1"'})
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    stale = client.put(url, json=good_body("ann", boxes=3), headers={**h, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert error_of(stale)["detail"]["current_version"] == 2
    missing = client.put(url, json=good_body("ann", boxes=3), headers=h)
    assert missing.status_code == 412
    now = client.get(url, headers=h).json()
    assert now["version"] == 2 and len(now["annotations"]) == 2
    hist = client.get(url + "/history", headers=h).json()
    assert [v["version"] for v in hist] == [1, 2]
    assert [len(v["data"]["annotations"]) for v in hist] == [1, 2]
    with session_scope(runtime.sessions) as s:
        actions = Counter(
            s.scalars(
                select(AuditEvent.action).where(
                    AuditEvent.object_type == "item", AuditEvent.object_id == str(items[0])
                )
            )
        )
    # two saves went in (the refused ones left no trace but their 412); the reads are audited too
    assert actions["annotation.write"] == 2 and actions["annotation.read"] == 2
    assert (
        hist[1]["derived_from"] == 1 and hist[0]["saved_by_name"] == "ann" and hist[0]["stage"] == "annotate"
    )


def test_invalid_annotation_gets_422_naming_annotation_and_rule(client, runtime):
    pid, items = setup_project(runtime, "Invalid", {"ann": ["annotator"]}, n_items=1)
    h = _headers(runtime, "ann")["ann"]
    _claim(client, pid, h, "annotate")
    body = good_body("ann", boxes=1)
    body["annotations"][0]["class_id"] = "tumour"
    r = client.put(f"/api/v1/items/{items[0]}/annotations", json=body, headers=h)
    assert r.status_code == 422
    issues = error_of(r)["detail"]["issues"]
    assert issues[0]["rule"] == "class_unknown" and issues[0]["annotation_id"] == "ann-box-0"
    body = good_body("ann", boxes=1)
    body["annotations"][0]["attributes"] = {}
    r = client.put(f"/api/v1/items/{items[0]}/annotations", json=body, headers=h)
    assert r.status_code == 422 and error_of(r)["detail"]["issues"][0]["rule"] == "attribute_missing"
    r = client.put(f"/api/v1/items/{items[0]}/annotations?draft=true", json=body, headers=h)
    assert r.status_code == 200
    task_id = _claim(client, pid, h, "annotate")["id"]
    r = client.post(f"/api/v1/projects/{pid}/tasks/{task_id}/submit", headers=h)
    assert r.status_code == 422 and "attribute" in error_of(r)["message"]


def test_lease_expiry_returns_the_task_to_the_pool(client, runtime):
    pid, items = setup_project(
        runtime,
        "Lease",
        {"a1": ["annotator"], "a2": ["annotator"]},
        n_items=1,
        workflow={"lease_seconds": 60},
    )
    h = _headers(runtime, "a1", "a2")
    t1 = _claim(client, pid, h["a1"], "annotate")
    assert t1 is not None
    assert _claim(client, pid, h["a2"], "annotate") is None
    # past the lease, but nobody took the task yet: the holder may still work and renew it
    clock.set_offset(timedelta(seconds=61))
    saved = client.put(f"/api/v1/items/{items[0]}/annotations", json=good_body("a1"), headers=h["a1"])
    assert saved.status_code == 200
    beat = client.post(f"/api/v1/projects/{pid}/tasks/{t1['id']}/heartbeat", headers=h["a1"])
    assert beat.status_code == 200
    assert _claim(client, pid, h["a2"], "annotate") is None
    # a1 walks away: one lease later the task is back in the pool
    clock.set_offset(timedelta(seconds=61 + 61))
    t2 = _claim(client, pid, h["a2"], "annotate")
    assert t2 is not None and t2["id"] == t1["id"] and t2["item_id"] == items[0]
    late = client.post(f"/api/v1/projects/{pid}/tasks/{t1['id']}/submit", headers=h["a1"])
    assert late.status_code == 409 and error_of(late)["code"] == "task_not_held"
    assert (
        client.put(f"/api/v1/items/{items[0]}/annotations", json=good_body("a1"), headers=h["a1"]).status_code
        == 409
    )
    assert (
        client.post(f"/api/v1/projects/{pid}/tasks/{t1['id']}/heartbeat", headers=h["a1"]).status_code == 409
    )
    assert (
        client.post(f"/api/v1/projects/{pid}/tasks/{t1['id']}/release", headers=h["a2"]).json()["state"]
        == "open"
    )
    assert _claim(client, pid, h["a1"], "annotate")["id"] == t1["id"]


def test_heartbeats_count_active_time_and_extend_the_lease(client, runtime):
    pid, _ = setup_project(
        runtime, "Beat", {"ann": ["annotator"]}, n_items=1, workflow={"lease_seconds": 100}
    )
    h = _headers(runtime, "ann")["ann"]
    t = _claim(client, pid, h, "annotate")
    url = f"/api/v1/projects/{pid}/tasks/{t['id']}/heartbeat"
    clock.set_offset(timedelta(seconds=30))
    assert client.post(url, json={"active": True}, headers=h).json()["active_seconds"] == pytest.approx(
        30, abs=1
    )
    clock.set_offset(timedelta(seconds=60))
    assert client.post(url, json={"active": False}, headers=h).json()["active_seconds"] == pytest.approx(
        30, abs=1
    )
    clock.set_offset(timedelta(seconds=150))  # past the first lease, but the beat at 60 s renewed it
    r = client.post(url, json={"active": True}, headers=h).json()
    assert r["active_seconds"] == pytest.approx(30 + 90, abs=1)  # a 90 s gap at most counts
    assert r["lease_expires_at"] > clock.now().isoformat()


def test_the_active_time_gap_is_a_workflow_setting(client, runtime):
    pid, _ = setup_project(
        runtime, "Gap", {"ann": ["annotator"]}, n_items=1, workflow={"active_gap_seconds": 20}
    )
    h = _headers(runtime, "ann")["ann"]
    assert client.get(f"/api/v1/projects/{pid}/workflow", headers=h).json()["active_gap_seconds"] == 20
    t = _claim(client, pid, h, "annotate")
    clock.set_offset(timedelta(seconds=45))
    r = client.post(f"/api/v1/projects/{pid}/tasks/{t['id']}/heartbeat", json={"active": True}, headers=h)
    assert r.json()["active_seconds"] == pytest.approx(20, abs=1)  # 45 s of silence, 20 s count


def test_a_task_can_be_read_by_id(client, runtime):
    pid, _ = setup_project(runtime, "Read", {"ann": ["annotator"], "other": ["annotator"]}, n_items=2)
    h = _headers(runtime, "ann", "other")
    t = _claim(client, pid, h["ann"], "annotate")
    url = f"/api/v1/projects/{pid}/tasks/{t['id']}"
    mine = client.get(url, headers=h["ann"])
    assert mine.status_code == 200, mine.text
    assert mine.json()["id"] == t["id"] and mine.json()["state"] == "claimed"
    assert mine.json()["lease_expires_at"] == t["lease_expires_at"]
    assert client.get(url, headers=h["other"]).json()["assignee"] == mine.json()["assignee"]
    assert client.get(f"/api/v1/projects/{pid}/tasks/999999", headers=h["ann"]).status_code == 404


def test_overlap_items_are_blind_and_go_to_different_annotators(client, runtime):
    pid, items = setup_project(
        runtime,
        "Overlap",
        {"a1": ["annotator"], "a2": ["annotator"], "boss": ["manager"], "rev": ["reviewer"]},
        n_items=1,
        workflow={"overlap_fraction": 1.0, "overlap_k": 2},
    )
    h = _headers(runtime, "a1", "a2", "boss", "rev")
    url = f"/api/v1/items/{items[0]}/annotations"
    t1 = _claim(client, pid, h["a1"], "annotate")
    assert client.put(url, json=good_body("a1", boxes=2), headers=h["a1"]).json()["set"] == "work"
    assert (
        client.post(f"/api/v1/projects/{pid}/tasks/{t1['id']}/submit", headers=h["a1"]).json()["item_stage"]
        == "annotate"
    )
    assert _claim(client, pid, h["a1"], "annotate") is None  # the other slot is for someone else
    t2 = _claim(client, pid, h["a2"], "annotate")
    assert t2["item_id"] == items[0] and t2["id"] != t1["id"]
    mine = client.get(url, headers=h["a2"]).json()
    assert mine["set"] == "work" and mine["annotations"] == [] and mine["version"] == 0
    assert client.get(url + "?owner=a1", headers=h["a2"]).status_code == 403
    assert client.get(url, headers=h["rev"]).json()["annotations"] == []  # nothing in main yet
    client.put(url, json=good_body("a2", boxes=1), headers=h["a2"])
    copies_url = f"/api/v1/items/{items[0]}/annotations/copies"
    assert client.get(copies_url, headers=h["a2"]).status_code == 403  # annotators work blind
    r = client.get(copies_url, headers=h["rev"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "overlap_pending"
    assert (
        client.post(f"/api/v1/projects/{pid}/tasks/{t2['id']}/submit", headers=h["a2"]).json()["item_stage"]
        == "review"
    )
    # the main set was seeded from the consensus: the box both drew (a tie for the medoid goes
    # to slot 1, whose author's provenance it keeps) and the answers both gave
    main = client.get(url, headers=h["rev"]).json()
    assert main["set"] == "main" and len(main["annotations"]) == 1
    assert main["annotations"][0]["provenance"]["created_by_user"] == "a1"
    assert main["annotations"][0]["provenance"]["derived_from"] == "a1-box-0"
    assert main["answers"] == {"view": "PA", "quality": "diagnostic"}
    assert len(client.get(url + "?owner=a2", headers=h["boss"]).json()["annotations"]) == 1
    # the reviewer adjudicates with every copy and the finding only a1 drew
    view = client.get(copies_url, headers=h["rev"]).json()
    assert [c["annotator"] for c in view["copies"]] == ["a1", "a2"]
    assert [f["support"] for f in view["consensus"]["kept"]] == [["a1", "a2"]]
    assert [f["annotation"]["id"] for f in view["consensus"]["minority"]] == ["a1-box-1"]
    assert view["consensus"]["disputed_questions"] == []


def test_gold_tasks_look_like_normal_tasks_and_are_scored(client, runtime):
    pid, items = setup_project(
        runtime, "Gold", {"ann": ["annotator"], "boss": ["manager"]}, n_items=1, workflow={"gold_rate": 1.0}
    )
    h = _headers(runtime, "ann", "boss")
    gold = make_items(runtime, pid, 1, prefix="gold")[0]
    assert (
        client.put(f"/api/v1/items/{gold}/gold", json=good_body("ref", boxes=1), headers=h["ann"]).status_code
        == 403
    )
    assert (
        client.put(
            f"/api/v1/items/{gold}/gold", json=good_body("ref", boxes=1), headers=h["boss"]
        ).status_code
        == 200
    )
    t = _claim(client, pid, h["ann"], "annotate")
    assert t["item_id"] == gold
    assert client.get(f"/api/v1/items/{gold}/annotations?kind=gold", headers=h["ann"]).status_code == 403
    assert client.get(f"/api/v1/items/{gold}/annotations", headers=h["ann"]).json()["annotations"] == []
    client.put(f"/api/v1/items/{gold}/annotations", json=good_body("ann", boxes=1), headers=h["ann"])
    out = client.post(f"/api/v1/projects/{pid}/tasks/{t['id']}/submit", headers=h["ann"]).json()
    assert out["gold"]["passed"] is True and out["gold"]["score"] == pytest.approx(1.0)
    normal = _claim(client, pid, h["ann"], "annotate")  # each gold item once per person
    assert normal["item_id"] == items[0]
    assert set(normal) == set(t) and "gold" not in json.dumps({k: v for k, v in t.items() if k != "feedback"})
    scores = client.get(f"/api/v1/projects/{pid}/gold/scores", headers=h["boss"]).json()
    assert [(s["item_id"], s["user"], s["passed"]) for s in scores] == [(gold, "ann", True)]
    assert client.get(f"/api/v1/projects/{pid}/gold/scores", headers=h["ann"]).status_code == 403


def test_audit_failure_reopens_the_item_for_its_annotator(client, runtime):
    team = {"a1": ["annotator"], "a2": ["annotator"], "aud": ["auditor"], "boss": ["manager"]}
    pid, items = setup_project(
        runtime,
        "Audit",
        team,
        n_items=1,
        workflow={"review": False, "validate": False, "audit_fraction": 1.0},
    )
    h = _headers(runtime, *team)
    _annotate(client, pid, h["a1"], "a1")
    sample = client.post(f"/api/v1/projects/{pid}/audit/sample", json={"seed": 1}, headers=h["boss"]).json()
    assert sample["sampled"] == 1 and sample["per_annotator"] == {"a1": 1}
    r = client.post(f"/api/v1/projects/{pid}/tasks/next?stage=audit", headers=h["a1"])
    assert r.status_code == 403
    t = _claim(client, pid, h["aud"], "audit")
    url = f"/api/v1/projects/{pid}/tasks/{t['id']}/audit"
    assert client.post(url, json={"decision": "fail"}, headers=h["aud"]).status_code == 422
    assert (
        client.put(
            f"/api/v1/items/{items[0]}/annotations", json=good_body("aud"), headers=h["aud"]
        ).status_code
        == 403
    )
    err = {"category": "omission", "severity": "critical", "comment": "missed the left effusion"}
    assert (
        client.post(url, json={"decision": "fail", "errors": [err]}, headers=h["aud"]).json()["item_stage"]
        == "annotate"
    )
    assert _claim(client, pid, h["a2"], "annotate") is None
    rework = _claim(client, pid, h["a1"], "annotate")
    assert rework["item_id"] == items[0]
    assert (
        rework["feedback"]["decision"] == "fail" and rework["feedback"]["errors"][0]["category"] == "omission"
    )
    # the manager cannot hand rework to someone else
    r = client.post(
        f"/api/v1/projects/{pid}/tasks/assign",
        json={"task_id": rework["id"], "username": "a2"},
        headers=h["boss"],
    )
    assert r.status_code == 409 and error_of(r)["code"] == "workflow_rule"
    listed = client.get(f"/api/v1/projects/{pid}/tasks?item_id={items[0]}", headers=h["boss"]).json()
    assert [(t["stage"], t["state"], t["reserved"]) for t in listed] == [
        ("annotate", "done", False),
        ("audit", "done", False),
        ("annotate", "claimed", True),
    ]
    assert client.get(f"/api/v1/projects/{pid}/tasks", headers=h["a1"]).status_code == 403
    timeline = client.get(f"/api/v1/items/{items[0]}/timeline", headers=h["boss"]).json()
    decisions = [(e["user"], e["stage"], e["decision"]) for e in timeline if e["event"] == "decision"]
    assert decisions == [("a1", "annotate", "submit"), ("aud", "audit", "fail")]
    assert timeline[-1]["event"] == "task.claim" and timeline[-1]["user"] == "a1"


def test_nobody_reviews_their_own_work_and_edits_keep_lineage(client, runtime):
    team = {"both": ["annotator", "reviewer"], "rev": ["reviewer"], "boss": ["manager"]}
    pid, items = setup_project(runtime, "Own", team, n_items=1)
    h = _headers(runtime, *team)
    _annotate(client, pid, h["both"], "both")
    assert _claim(client, pid, h["both"], "review") is None
    t = _claim(client, pid, h["rev"], "review")
    r = client.post(
        f"/api/v1/projects/{pid}/tasks/assign",
        json={"task_id": t["id"], "username": "both"},
        headers=h["boss"],
    )
    assert r.status_code == 409
    url = f"/api/v1/items/{items[0]}/annotations"
    cur = client.get(url, headers=h["rev"])
    ann = cur.json()["annotations"][0]
    edited = {
        **ann,
        "id": ann["id"] + "-r",
        "geometry": {"x": 12.0, "y": 10.0, "width": 28.0, "height": 40.0},
        "provenance": {
            "created_at": clock.now().isoformat(),
            "created_by_user": "rev",
            "derived_from": ann["id"],
        },
    }
    body = {"annotations": [edited], "answers": cur.json()["answers"]}
    assert (
        client.put(url, json=body, headers={**h["rev"], "If-Match": cur.headers["etag"]}).status_code == 200
    )
    out = client.post(
        f"/api/v1/projects/{pid}/tasks/{t['id']}/review", json={"decision": "edit_accept"}, headers=h["rev"]
    )
    assert out.json()["item_stage"] == "done"
    hist = client.get(url + "/history", headers=h["boss"]).json()
    assert [(v["stage"], v["saved_by_name"]) for v in hist] == [("annotate", "both"), ("review", "rev")]
    from medlabel.annotations.model import Annotation, lineage

    known = [Annotation.from_dict(a) for v in hist for a in v["data"]["annotations"]]
    chain = lineage(ann["id"] + "-r", known)
    assert [a.provenance.created_by_user for a in chain] == ["both", "rev"]


def test_masks_are_stored_as_coco_rle(client, runtime):
    """A mask encoded by pycocotools round-trips through the API and the database as COCO RLE."""
    from pycocotools import mask as cocomask
    from skimage.draw import disk

    pid, items = setup_project(runtime, "Masks", {"ann": ["annotator"], "boss": ["manager"]}, sync=False)
    h = _headers(runtime, "ann", "boss")
    ct = (ROOT / "src" / "medlabel" / "annotations" / "examples" / "ct_lesion.yaml").read_text()
    assert client.put(f"/api/v1/projects/{pid}/schema", content=ct, headers=h["boss"]).status_code == 200
    item = make_items(runtime, pid, 1, width=96, height=64)[0]
    client.post(f"/api/v1/projects/{pid}/tasks/sync", headers=h["boss"])
    m = np.zeros((64, 96), dtype=np.uint8)
    rr, cc = disk((30, 40), 12, shape=m.shape)
    m[rr, cc] = 1
    rle = cocomask.encode(np.asfortranarray(m))
    body = {
        "annotations": [
            {
                "id": "liver-1",
                "type": "mask",
                "class_id": "liver",
                "geometry": {"rle": {"size": list(rle["size"]), "counts": rle["counts"].decode()}},
                "provenance": {"created_at": clock.now().isoformat(), "created_by_user": "ann"},
            }
        ],
        "answers": {"phase": "portal-venous"},
    }
    _claim(client, pid, h["ann"], "annotate")
    r = client.put(f"/api/v1/items/{item}/annotations", json=body, headers=h["ann"])
    assert r.status_code == 200, r.text
    with session_scope(runtime.sessions) as s:
        stored = s.scalar(select(AnnotationSetRow.data).where(AnnotationSetRow.item_id == item))
    geo = stored["annotations"][0]["geometry"]["rle"]
    assert isinstance(geo["counts"], str) and geo["size"] == [64, 96]
    back = cocomask.decode({"size": geo["size"], "counts": geo["counts"].encode()})
    assert np.array_equal(back, m) and int(cocomask.area(rle)) == int(m.sum())


def test_workflow_settings_and_project_error_categories(client, runtime):
    team = {"ann": ["annotator"], "rev": ["reviewer"], "boss": ["manager"]}
    pid, _ = setup_project(runtime, "Settings", team, n_items=1)
    h = _headers(runtime, *team)
    url = f"/api/v1/projects/{pid}/workflow"
    assert client.get(url, headers=h["ann"]).json()["validate"] is False
    assert client.put(url, json={"validate": True}, headers=h["ann"]).status_code == 403
    r = client.put(
        url,
        json={"validate": True, "error_categories": ["laterality"], "lease_seconds": 90},
        headers=h["boss"],
    )
    assert r.status_code == 200, r.text
    got = client.get(url, headers=h["rev"]).json()
    assert (
        got["validate"] is True and got["error_categories"] == ["laterality"] and got["lease_seconds"] == 90
    )
    assert client.put(url, json={"audit_fraction": 2}, headers=h["boss"]).status_code == 422
    assert client.put(url, json={"error_categories": ["Bad Name"]}, headers=h["boss"]).status_code == 422
    _annotate(client, pid, h["ann"], "ann")
    t = _claim(client, pid, h["rev"], "review")
    assert t["lease_expires_at"] is not None
    turl = f"/api/v1/projects/{pid}/tasks/{t['id']}/review"
    unknown = {"decision": "reject", "errors": [{"category": "handedness", "severity": "minor"}]}
    r = client.post(turl, json=unknown, headers=h["rev"])
    assert r.status_code == 422 and "taxonomy" in error_of(r)["message"]
    ok = {
        "decision": "reject",
        "errors": [{"category": "laterality", "severity": "minor", "annotation_id": "ann-box-0"}],
    }
    assert client.post(turl, json=ok, headers=h["rev"]).json()["item_stage"] == "annotate"
    assert client.post(turl, json=ok, headers=h["rev"]).status_code == 409  # already decided
