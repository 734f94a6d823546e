"""The project quality report from real labeling rows: figures against scikit-learn, the JSON
route, the report job's files and the CLI."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from medlabel.accounts.service import Actor
from medlabel.annotations.geometry import BBox
from medlabel.annotations.model import Annotation, AnnotationSet, AnnotationType, Provenance
from medlabel.annotations.rle import encode as rle_encode
from medlabel.items.models import Item
from medlabel.labeling.models import AnnotationSetRow, GoldScoreRow, Review, ReviewError, Task
from medlabel.projects import service as projects
from medlabel.storage.db import session_scope

from ..foundation.helpers import login, make_user

WEEK = "2026-W47"
MONDAY = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
LABELS = ["none", "effusion", "pneumothorax"]


def _answers(seed: int, n: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    a = [LABELS[i] for i in rng.integers(0, 3, n)]
    b = [x if rng.random() < 0.7 else LABELS[int(rng.integers(0, 3))] for x in a]
    return a, b


def disk(shift: int) -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64]
    return (y - 32) ** 2 + (x - 32 - shift) ** 2 <= 100


def build_project(
    rt, n_items: int = 30, *, base: datetime = MONDAY, step: timedelta = timedelta(hours=1), masks: int = 0
) -> dict:
    ids = {name: make_user(rt, name) for name in ("ann1", "ann2", "rev", "boss")}
    a, b = _answers(7, n_items)
    with session_scope(rt.sessions) as s:
        admin = Actor(None, "t", "admin")
        p = projects.create_project(s, admin, "Chest QA")
        for name, role in (
            ("ann1", "annotator"),
            ("ann2", "annotator"),
            ("rev", "reviewer"),
            ("boss", "manager"),
        ):
            projects.add_member(s, admin, p, name, role)
        for i in range(n_items):
            at = base + i * step
            item = Item(
                project_id=p.id,
                kind="image",
                name=f"cxr{i}",
                dedup_key=f"k{i}",
                width=64,
                height=64,
                frames=1,
                created_at=at,
                meta={},
            )
            s.add(item)
            s.flush()
            for who, answer in (("ann1", a[i]), ("ann2", b[i])):
                prov = Provenance(created_at=at, created_by_user=who)
                anns = (
                    Annotation(
                        id=f"{who}-box",
                        type=AnnotationType.BBOX,
                        class_id="nodule",
                        geometry=BBox(10 + (i % 3), 10, 20, 20),
                        provenance=prov,
                    ),
                )
                if i < masks:
                    shape = disk(0 if who == "ann1" else i % 4)
                    mask = Annotation(
                        id=f"{who}-mask",
                        type=AnnotationType.MASK,
                        class_id="lesion",
                        geometry=rle_encode(shape),
                        provenance=prov,
                    )
                    anns += (mask,)
                aset = AnnotationSet(str(item.id), 1, anns, 1, {"finding": answer})
                s.add(
                    AnnotationSetRow(
                        project_id=p.id,
                        item_id=item.id,
                        kind="work",
                        owner_key=ids[who],
                        version=1,
                        schema_version=1,
                        data=aset.to_dict(),
                        updated_by=ids[who],
                        updated_at=at,
                    )
                )
                s.add(
                    Task(
                        project_id=p.id,
                        item_id=item.id,
                        stage="annotate",
                        state="done",
                        assignee_id=ids[who],
                        priority=0.0,
                        created_at=at,
                        claimed_at=at,
                        completed_at=at,
                        completed_by=ids[who],
                        active_seconds=60.0 + i,
                    )
                )
            decision = "reject" if i % 5 == 0 else "accept"
            r = Review(
                project_id=p.id,
                item_id=item.id,
                user_id=ids["rev"],
                username="rev",
                stage="review",
                decision=decision,
                to_stage="annotate" if decision == "reject" else "done",
                at=at + timedelta(minutes=5),
            )
            s.add(r)
            s.flush()
            if decision == "reject":
                s.add(ReviewError(review_id=r.id, category="boundary", severity="minor"))
            if i < 4:
                s.add(
                    GoldScoreRow(
                        project_id=p.id,
                        item_id=item.id,
                        user_id=ids["ann1"],
                        score=1.0 if i % 2 else 0.5,
                        passed=bool(i % 2),
                        at=at,
                    )
                )
        p.settings = {"quality": {"kappa": 0.95}}
        pid = p.id
    return {"project_id": pid, "a": a, "b": b, "ids": ids}


def _figure(doc: dict, metric: str, subject: str | None = None) -> dict:
    for f in doc["agreement"]:
        if f["metric"] == metric and (subject is None or f["subject"] == subject):
            return f
    raise AssertionError(
        f"no {metric} for {subject} in {[(f['metric'], f['subject']) for f in doc['agreement']]}"
    )


def test_report_json_matches_sklearn(client, runtime):
    data = build_project(runtime)
    make_user(runtime, "root", "admin")
    h = login(client, "root")
    r = client.get(
        f"/api/v1/projects/{data['project_id']}/quality", params={"week": WEEK, "bootstrap_n": 50}, headers=h
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    expected = cohen_kappa_score(data["a"], data["b"])
    kappa = _figure(doc, "cohen_kappa", "finding")
    assert kappa["value"] == pytest.approx(expected, abs=1e-9)
    assert kappa["n"] == 30
    assert any(a["metric"] == "kappa" for a in doc["alerts"]) or expected >= 0.95
    annotators = {a["annotator"]: a for a in doc["annotators"]}
    assert set(annotators) >= {"ann1", "ann2"}
    assert annotators["ann1"]["gold_items"] == 4


def test_bad_week_is_422(client, runtime):
    data = build_project(runtime, n_items=2)
    make_user(runtime, "root", "admin")
    h = login(client, "root")
    r = client.get(f"/api/v1/projects/{data['project_id']}/quality", params={"week": "2026-W60"}, headers=h)
    assert r.status_code == 422


def test_report_job_files(client, runtime):
    data = build_project(runtime, n_items=12)
    make_user(runtime, "root", "admin")
    h = login(client, "root")
    r = client.post(
        f"/api/v1/projects/{data['project_id']}/quality/reports",
        json={"week": WEEK, "bootstrap_n": 20},
        headers=h,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    runtime.start_worker(workers=1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=h).json()
        if job["state"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert job["state"] == "succeeded", (job["message"], job["error"])
    base = f"/api/v1/projects/{data['project_id']}/quality/reports/{job_id}"
    page = client.get(base + "/html", headers=h)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    HTMLParser().feed(page.text)
    assert "<svg" in page.text and "http://" not in page.text and "https://" not in page.text
    csv = client.get(base + "/csv", headers=h).text
    assert csv.splitlines()[0].startswith("section,subject,metric")
    assert json.loads(client.get(base + "/json", headers=h).text)["period"]


def test_cli_report_and_agreement(runtime, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medlabel.cli.main import app

    data = build_project(runtime, n_items=10)
    monkeypatch.setenv("MEDLABEL_HOME", str(runtime.settings.home))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", runtime.settings.database_url)
    out = tmp_path / "report.html"
    r = CliRunner().invoke(
        app, ["report", "Chest QA", "--week", WEEK, "--out", str(out), "--bootstrap", "10"]
    )
    assert r.exit_code == 0, r.output
    assert (
        out.read_text().startswith("<!")
        and out.with_suffix(".csv").exists()
        and out.with_suffix(".json").exists()
    )
    r = CliRunner().invoke(
        app, ["agreement", str(data["project_id"]), "--week", WEEK, "--json", "--bootstrap", "0"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert _figure(doc, "cohen_kappa", "finding")["value"] == pytest.approx(
        cohen_kappa_score(data["a"], data["b"]), abs=1e-9
    )
    r = CliRunner().invoke(app, ["agreement", "No such project", "--week", WEEK])
    assert r.exit_code == 1 and "no project" in r.output


def test_targets_are_set_by_managers_and_drive_alerts(client, runtime):
    data = build_project(runtime, n_items=30)
    boss = login(client, "boss")
    url = f"/api/v1/projects/{data['project_id']}/quality/targets"
    assert client.get(url, headers=boss).json()["kappa"] == 0.95  # set by build_project
    r = client.put(url, json={"kappa": 0.1, "dice": 0.5}, headers=boss)
    assert r.status_code == 200 and r.json()["kappa"] == 0.1 and r.json()["window_days"] == 7
    doc = client.get(
        f"/api/v1/projects/{data['project_id']}/quality",
        params={"week": WEEK, "bootstrap_n": 0},
        headers=boss,
    ).json()
    assert not [a for a in doc["alerts"] if a["metric"] == "kappa"]  # kappa ~0.5 is above 0.1
    assert client.put(url, json={"kappa": 1.5}, headers=boss).status_code == 422
    ann = login(client, "ann1")
    assert client.put(url, json={"kappa": 0.2}, headers=ann).status_code == 403
    assert client.get(url, headers=boss).json()["kappa"] == 0.1


def test_mask_dice_matches_simpleitk(client, runtime):
    import SimpleITK as sitk

    data = build_project(runtime, n_items=12, masks=8)
    rev = login(client, "rev")
    doc = client.get(
        f"/api/v1/projects/{data['project_id']}/quality", params={"week": WEEK, "bootstrap_n": 0}, headers=rev
    ).json()
    f = _figure(doc, "dice", "lesion")
    expected = []
    for i in range(8):
        ov = sitk.LabelOverlapMeasuresImageFilter()
        ov.Execute(
            sitk.GetImageFromArray(disk(0).astype(np.uint8)),
            sitk.GetImageFromArray(disk(i % 4).astype(np.uint8)),
        )
        expected.append(ov.GetDiceCoefficient())
    assert f["n"] == 8
    assert f["value"] == pytest.approx(float(np.mean(expected)), abs=1e-9)
