"""The quarantine, de-identification settings, the PHI map, and the DB-backed deid stores."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from medlabel.items.models import PseudonymEntry
from medlabel.items.stores import DbDateOffsetStore, DbPseudonymStore, project_secret
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent

from ..foundation.helpers import error_of, make_project, make_user, session_headers
from .factories import PATIENT_ID, by_name, ct_series, import_via_api


@pytest.fixture
def team(runtime):
    ids = {n: make_user(runtime, n) for n in ("boss", "ann")}
    ids["root"] = make_user(runtime, "root", "admin")
    pid = make_project(runtime, "Admin", {"boss": ["manager"], "ann": ["annotator"]})
    return pid, {n: session_headers(runtime, i) for n, i in ids.items()}


def _actions(rt, action):
    with session_scope(rt.sessions) as s:
        return s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)).all()


def test_quarantine_hold_clear_and_reject(client, runtime, team):
    pid, h = team
    files = [Path(get_testdata_file(n)) for n in ("US1_UNCR.dcm", "SC_rgb.dcm", "CT_small.dcm")]
    report = by_name(import_via_api(client, runtime, h["boss"], pid, files))
    assert report["US1_UNCR.dcm"]["status"] == "quarantined"
    assert "Burned In Annotation" in report["US1_UNCR.dcm"]["message"]
    assert report["CT_small.dcm"]["status"] == "imported"
    us, sc = report["US1_UNCR.dcm"]["item_id"], report["SC_rgb.dcm"]["item_id"]
    listed = client.get(f"/api/v1/projects/{pid}/items", headers=h["ann"]).json()
    assert [i["id"] for i in listed["items"]] == [report["CT_small.dcm"]["item_id"]]
    # held images: annotators may not see the pixels, managers may (to decide)
    r = client.get(f"/api/v1/items/{us}/frames/0/rendered", headers=h["ann"])
    assert r.status_code == 409 and error_of(r)["code"] == "quarantined"
    assert client.get(f"/api/v1/items/{us}/frames/0/rendered", headers=h["boss"]).status_code == 200
    assert client.get(f"/api/v1/projects/{pid}/quarantine", headers=h["ann"]).status_code == 403
    q = client.get(f"/api/v1/projects/{pid}/quarantine", headers=h["boss"]).json()
    by_item = {e["item_id"]: e for e in q}
    assert set(by_item) == {us, sc} and all(e["status"] == "pending" for e in q)
    r = client.post(
        f"/api/v1/projects/{pid}/quarantine/{by_item[us]['id']}/clear",
        headers=h["boss"],
        json={"note": "checked: no text in the image"},
    )
    assert r.status_code == 200 and r.json()["status"] == "cleared"
    r = client.post(
        f"/api/v1/projects/{pid}/quarantine/{by_item[sc]['id']}/reject", headers=h["boss"], json={}
    )
    assert r.json()["status"] == "rejected"
    r = client.post(
        f"/api/v1/projects/{pid}/quarantine/{by_item[sc]['id']}/clear", headers=h["boss"], json={}
    )
    assert r.status_code == 409
    assert client.get(f"/api/v1/items/{us}/frames/0/rendered", headers=h["ann"]).status_code == 200
    assert client.get(f"/api/v1/items/{sc}/frames/0/rendered", headers=h["ann"]).status_code == 409
    statuses = {
        i["id"]: i["status"]
        for i in client.get(f"/api/v1/projects/{pid}/items?status=all", headers=h["ann"]).json()["items"]
    }
    assert statuses[us] == "ready" and statuses[sc] == "rejected"
    assert [e.detail["quarantine_id"] for e in _actions(runtime, "quarantine.clear")] == [by_item[us]["id"]]
    assert client.get(f"/api/v1/projects/{pid}/quarantine?status=all", headers=h["boss"]).json()[0][
        "decided_by"
    ]


def test_pseudonym_map_is_admin_only_and_audited(client, runtime, team, tmp_path):
    pid, h = team
    paths, _ = ct_series(tmp_path / "a", slices=3)
    other, _ = ct_series(tmp_path / "b", slices=3, seed=1, patient_id="OTHER-99")
    import_via_api(client, runtime, h["boss"], pid, paths + other)
    for who in ("boss", "ann"):
        r = client.get(f"/api/v1/admin/pseudonyms?project_id={pid}", headers=h[who])
        assert r.status_code == 403
    assert _actions(runtime, "phi.read") == []
    rows = client.get(f"/api/v1/admin/pseudonyms?project_id={pid}", headers=h["root"]).json()
    assert sorted(r["original_patient_id"] for r in rows) == sorted([PATIENT_ID, "OTHER-99"])
    assert len({r["pseudonym"] for r in rows}) == 2
    items = client.get(f"/api/v1/projects/{pid}/items", headers=h["ann"]).json()["items"]
    assert {i["patient_pseudonym"] for i in items} == {r["pseudonym"] for r in rows}
    (event,) = _actions(runtime, "phi.read")
    assert event.actor == "root" and event.project_id == pid and event.detail == {"rows": 2}
    assert client.get("/api/v1/admin/pseudonyms?project_id=9999", headers=h["root"]).status_code == 404


def test_turning_deidentification_off_needs_an_admin_and_a_reason(client, runtime, team, tmp_path):
    pid, h = team
    url = f"/api/v1/projects/{pid}/deid"
    assert client.get(url, headers=h["ann"]).json()["enabled"] is True
    r = client.patch(url, headers=h["boss"], json={"enabled": False, "reason": "research on raw data"})
    assert r.status_code == 403
    r = client.patch(url, headers=h["root"], json={"enabled": False})
    assert r.status_code == 422 and error_of(r)["detail"]["field"] == "reason"
    r = client.patch(url, headers=h["boss"], json={"enabled": True, "options": ["retain_uids", "nonsense"]})
    assert r.status_code == 422
    r = client.patch(
        url,
        headers=h["boss"],
        json={
            "enabled": True,
            "options": ["retain_longitudinal_full_dates", "retain_longitudinal_modified_dates"],
        },
    )
    assert r.status_code == 422 and "exclude" in error_of(r)["message"]
    r = client.patch(
        url, headers=h["root"], json={"enabled": False, "reason": "IRB 2024-17: identified cohort"}
    )
    assert r.status_code == 200 and r.json()["enabled"] is False
    change = _actions(runtime, "project.update")[-1]
    assert change.detail["after"]["enabled"] is False and change.detail["after"]["reason"].startswith("IRB")
    paths, _ = ct_series(tmp_path / "raw", slices=2)
    result = import_via_api(client, runtime, h["boss"], pid, paths)
    item = client.get(f"/api/v1/items/{result['items'][0]}", headers=h["boss"]).json()
    assert item["patient_pseudonym"] == PATIENT_ID  # stored as uploaded
    r = client.patch(url, headers=h["boss"], json={"enabled": True})
    assert r.status_code == 200 and r.json()["enabled"] is True


def test_db_stores_agree_under_concurrency(runtime):
    pid = make_project(runtime, "Stores")
    secret = project_secret(runtime.settings.secret_key, pid)
    assert (
        secret
        == project_secret(runtime.settings.secret_key, pid)
        != project_secret(runtime.settings.secret_key, pid + 1)
    )
    results: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            p = DbPseudonymStore(runtime.sessions, pid, secret)  # separate caches: must meet in the DB
            d = DbDateOffsetStore(runtime.sessions, pid, secret)
            name = p.get_or_create("PAT-1", "HOSP")
            results.append((name, d.get_or_create(name)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1 and results[0][1] <= -365
    store = DbPseudonymStore(runtime.sessions, pid, secret)
    assert store.get_or_create("PAT-1", "OTHER") != results[0][0]
    assert store.get_or_create("PAT-1", "HOSP") == results[0][0]
    with session_scope(runtime.sessions) as s:
        assert len(s.scalars(select(PseudonymEntry).where(PseudonymEntry.project_id == pid)).all()) == 2


def test_deidentified_dates_shift_consistently_per_patient(client, runtime, team, tmp_path):
    pid, h = team
    a, _ = ct_series(tmp_path / "a", slices=2)
    b, _ = ct_series(tmp_path / "b", slices=2, seed=3)  # same patient, another study
    result = import_via_api(client, runtime, h["boss"], pid, a + b)
    from medlabel.items.models import Instance

    with session_scope(runtime.sessions) as s:
        digests = s.scalars(select(Instance.blob_sha256).where(Instance.item_id.in_(result["items"]))).all()
    import io

    dates = {pydicom.dcmread(io.BytesIO(runtime.blobs.get(d))).StudyDate for d in digests}
    assert len(dates) == 1 and dates != {"20240315"}
