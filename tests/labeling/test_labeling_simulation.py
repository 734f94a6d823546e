"""A simulated project through the HTTP API: 3 annotators, 2 reviewers, 1 validator and 1 auditor
work concurrently (one thread each) on 200 items with overlap and gold items; then every invariant
of the workflow is checked against the database."""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select

from medlabel.labeling.models import GoldScoreRow, ItemWorkflow, Review, ReviewError, Task
from medlabel.storage.db import session_scope
from medlabel.storage.models import User
from medlabel.workflow import REJECTIONS, Decision, share
from tests.foundation.helpers import session_headers

from .helpers import good_body, make_items, setup_project

N_ITEMS = 200
ANNOTATORS = ["a1", "a2", "a3"]
REVIEWERS = ["r1", "r2"]
VALIDATORS = ["v1"]
AUDITORS = ["au1"]
WORKFLOW = {
    "review": True,
    "validate": True,
    "audit_fraction": 0.1,
    "overlap_fraction": 0.1,
    "overlap_k": 2,
    "gold_rate": 0.05,
    "lease_seconds": 3600,
}
DEADLINE_S = 150


def _bucket(item_id: int, salt: str) -> int:
    return zlib.crc32(f"{salt}:{item_id}".encode()) % 100


class Sim:
    def __init__(self, client: Any, pid: int, headers: dict[str, dict[str, str]], n_items: int) -> None:
        self.client = client
        self.pid = pid
        self.headers = headers
        self.n_items = n_items
        self.lock = threading.Lock()
        self.claims: list[tuple[int, str]] = []
        self.rejected_once: set[tuple[str, int]] = set()
        self.errors: list[str] = []
        self.done = threading.Event()
        self.blind_checks = 0

    def url(self, tail: str) -> str:
        return f"/api/v1/projects/{self.pid}{tail}"

    def call(self, user: str, method: str, url: str, **kw: Any) -> Any:
        r = self.client.request(method, url, headers=self.headers[user], **kw)
        if r.status_code >= 400:
            with self.lock:
                self.errors.append(f"{user} {method} {url}: {r.status_code} {r.text[:300]}")
        return r

    def claim(self, user: str, stage: str) -> dict[str, Any] | None:
        r = self.call(user, "POST", self.url(f"/tasks/next?stage={stage}"))
        task = r.json().get("task") if r.status_code == 200 else None
        if task is not None:
            with self.lock:
                self.claims.append((task["id"], user))
        return task

    def annotate(self, user: str, task: dict[str, Any]) -> None:
        item = task["item_id"]
        got = self.call(user, "GET", f"/api/v1/items/{item}/annotations")
        current = got.json()
        if current["set"] == "work":
            self.blind_checks += 1
            assert current["owner_id"] != 0
        headers = {"If-Match": got.headers["etag"]} if current["version"] else {}
        r = self.client.put(
            f"/api/v1/items/{item}/annotations",
            json=good_body(user, boxes=1 + item % 3),
            headers={**self.headers[user], **headers},
        )
        if r.status_code != 200:
            self.errors.append(f"{user} PUT {item}: {r.status_code} {r.text[:300]}")
            return
        self.call(user, "POST", self.url(f"/tasks/{task['id']}/submit"))

    def decide(self, user: str, stage: str, task: dict[str, Any]) -> None:
        item = task["item_id"]
        body: dict[str, Any] = {"decision": "accept"}
        key = (stage, item)
        reject_rate = {"review": 20, "validate": 10, "audit": 0}[stage]
        with self.lock:
            reject = _bucket(item, stage) < reject_rate and key not in self.rejected_once
            if reject:
                self.rejected_once.add(key)
        if stage == "audit":
            body = {"decision": "pass"}
        elif reject:
            decision = (
                "reject" if stage == "review" else ("send_back_annotate" if item % 2 else "send_back_review")
            )
            body = {
                "decision": decision,
                "errors": [
                    {
                        "category": "boundary",
                        "severity": "major",
                        "comment": "box too loose",
                        "location": {"x": 12, "y": 14},
                    }
                ],
            }
        elif stage == "review" and item % 4 == 0:
            got = self.call(user, "GET", f"/api/v1/items/{item}/annotations")
            r = self.client.put(
                f"/api/v1/items/{item}/annotations",
                json=good_body(user, boxes=1, x=15.0),
                headers={**self.headers[user], "If-Match": got.headers["etag"]},
            )
            if r.status_code != 200:
                self.errors.append(f"{user} edit {item}: {r.status_code} {r.text[:300]}")
            body = {"decision": "edit_accept"}
        self.call(user, "POST", self.url(f"/tasks/{task['id']}/{stage}"), json=body)

    def worker(self, user: str, stage: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                task = self.claim(user, stage)
                if task is None:
                    time.sleep(0.02)
                    continue
                if stage == "annotate":
                    self.annotate(user, task)
                else:
                    self.decide(user, stage, task)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            with self.lock:
                self.errors.append(f"{user}: {exc!r}")


def _done_count(rt: Any, pid: int) -> int:
    with session_scope(rt.sessions) as s:
        return int(
            s.scalar(
                select(func.count()).where(
                    ItemWorkflow.project_id == pid,
                    ItemWorkflow.stage == "done",
                    ItemWorkflow.is_gold.is_(False),
                )
            )
            or 0
        )


def _run(sim: Sim, workers: list[tuple[str, str]], until: Any) -> None:
    threads = [threading.Thread(target=sim.worker, args=w, daemon=True) for w in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and not until() and not sim.errors:
        time.sleep(0.1)
    sim.done.set()
    for t in threads:
        t.join(timeout=30)
    sim.done.clear()


def test_simulated_project(client, runtime):
    team = {u: ["annotator"] for u in ANNOTATORS}
    team |= {u: ["reviewer"] for u in REVIEWERS} | {u: ["validator"] for u in VALIDATORS}
    team |= {u: ["auditor"] for u in AUDITORS} | {"mgr": ["manager"]}
    pid, items = setup_project(runtime, "Simulated", team, n_items=N_ITEMS, workflow=WORKFLOW, seed=11)
    with session_scope(runtime.sessions) as s:
        ids = dict(s.execute(select(User.username, User.id)).all())
    headers = {u: session_headers(runtime, ids[u]) for u in team}
    sim = Sim(client, pid, headers, N_ITEMS)

    # gold items with their reference answers, and guidelines everyone must acknowledge
    gold_items = make_items(runtime, pid, 3, prefix="gold")
    for g in gold_items:
        assert (
            sim.call("mgr", "PUT", f"/api/v1/items/{g}/gold", json=good_body("ref", boxes=1)).status_code
            == 200
        )
    assert (
        sim.call("mgr", "PUT", sim.url("/guidelines"), json={"markdown": "# Box every effusion"}).status_code
        == 200
    )
    r = client.post(sim.url("/tasks/next?stage=annotate"), headers=headers["a1"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "guidelines_not_acknowledged"
    sim.errors.clear()
    for u in team:
        if u != "mgr":
            assert sim.call(u, "POST", sim.url("/guidelines/ack"), json={"version": 1}).status_code == 204

    workers = [(u, "annotate") for u in ANNOTATORS] + [(u, "review") for u in REVIEWERS]
    workers += [(u, "validate") for u in VALIDATORS]
    _run(sim, workers, lambda: _done_count(runtime, pid) == N_ITEMS)
    assert not sim.errors, sim.errors[:5]
    assert _done_count(runtime, pid) == N_ITEMS

    # the audit sample, then the auditor works through it
    r = sim.call("mgr", "POST", sim.url("/audit/sample"), json={"seed": 5})
    assert r.status_code == 200, r.text
    sample = r.json()

    def audits_left() -> bool:
        with session_scope(runtime.sessions) as s:
            return not s.scalar(
                select(func.count()).where(
                    Task.project_id == pid, Task.stage == "audit", Task.state != "done"
                )
            )

    _run(sim, [(u, "audit") for u in AUDITORS], audits_left)
    assert not sim.errors, sim.errors[:5]
    assert audits_left()

    with session_scope(runtime.sessions) as s:
        states = list(s.scalars(select(ItemWorkflow).where(ItemWorkflow.project_id == pid)))
        reviews = list(s.scalars(select(Review).where(Review.project_id == pid).order_by(Review.id)))
        tasks = list(s.scalars(select(Task).where(Task.project_id == pid)))
        errors_per_review = Counter(s.scalars(select(ReviewError.review_id)))
        golds = list(s.scalars(select(GoldScoreRow).where(GoldScoreRow.project_id == pid)))

    # every item is done exactly once (gold items never enter the workflow)
    normal = [st for st in states if not st.is_gold]
    assert len(normal) == N_ITEMS
    assert all(st.stage == "done" and st.done_count == 1 for st in normal)
    assert {st.item_id for st in states if st.is_gold} == set(gold_items)

    # no task was handed to two people, and every task was claimed once
    holders: dict[int, set[str]] = defaultdict(set)
    for task_id, user in sim.claims:
        holders[task_id].add(user)
    assert all(len(u) == 1 for u in holders.values())
    assert len(sim.claims) == len(holders)
    assert all(t.claim_count == 1 for t in tasks if t.state == "done")

    # every rejection carries error records
    rejections = [r for r in reviews if Decision(r.decision) in REJECTIONS]
    assert rejections, "the simulation rejects some items"
    assert all(errors_per_review[r.id] >= 1 for r in rejections)

    # nobody checked their own work; overlap slots went to different annotators
    by_item: dict[int, list[Review]] = defaultdict(list)
    for r in reviews:
        by_item[r.item_id].append(r)
    for item_id, evs in by_item.items():
        annotators = {e.username for e in evs if e.stage == "annotate"}
        reviewers = {e.username for e in evs if e.stage == "review"}
        assert not annotators & reviewers, item_id
        assert not (annotators | reviewers) & {e.username for e in evs if e.stage == "validate"}, item_id
        assert not (annotators | reviewers) & {e.username for e in evs if e.stage == "audit"}, item_id
    overlap = [st.item_id for st in normal if st.overlap_k == 2]
    assert len(overlap) == share(0.1, N_ITEMS)
    for item_id in overlap:
        slots = [t for t in tasks if t.item_id == item_id and t.overlap_slot is not None]
        assert len(slots) == 2 and len({t.completed_by for t in slots}) == 2
    assert sim.blind_checks >= len(overlap) * 2

    # rework went back to the annotator who submitted
    for item_id, evs in by_item.items():
        for i, e in enumerate(evs):
            if e.to_stage == "annotate" and e.stage != "annotate":
                last = [x.username for x in evs[:i] if x.stage == "annotate"][-1]
                nxt = [x.username for x in evs[i + 1 :] if x.stage == "annotate"]
                assert nxt and nxt[0] == last, item_id

    # the audit sample: stratified by annotator, audit_fraction of each (at least one)
    annotator_of = {
        item_id: [e.username for e in evs if e.stage == "annotate"][-1] for item_id, evs in by_item.items()
    }
    per_annotator = Counter(annotator_of[i] for i in (st.item_id for st in normal))
    expected = {a: max(1, share(0.1, n)) for a, n in per_annotator.items()}
    assert sample["per_annotator"] == expected
    audited = [st for st in normal if st.audit_selected]
    assert len(audited) == sum(expected.values()) == sample["sampled"]
    assert Counter(annotator_of[st.item_id] for st in audited) == Counter(expected)

    # gold items were served among normal tasks and scored against the reference
    gold_tasks = [t for t in tasks if t.is_gold]
    assert gold_tasks and len(golds) == len([t for t in gold_tasks if t.state == "done"])
    assert all(0.0 <= g.score <= 1.0 for g in golds)
    assert len({(t.item_id, t.assignee_id) for t in gold_tasks}) == len(gold_tasks)

    # the manager's status report agrees
    status = client.get(sim.url("/tasks/status"), headers=headers["mgr"]).json()
    assert status["items_by_stage"] == {"done": N_ITEMS}
    assert sum(status["done_by_person"][a].get("annotate", 0) for a in ANNOTATORS) >= N_ITEMS
