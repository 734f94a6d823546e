from __future__ import annotations

from tests.foundation.helpers import session_headers

from .helpers import good_body, setup_project


def test_annotate_review_happy_path(client, runtime):
    pid, items = setup_project(runtime, "P", {"ann": ["annotator"], "rev": ["reviewer"]}, n_items=1)
    from sqlalchemy import select

    from medlabel.storage.db import session_scope
    from medlabel.storage.models import User

    with session_scope(runtime.sessions) as s:
        ids = dict(s.execute(select(User.username, User.id)).all())
    ha, hr = session_headers(runtime, ids["ann"]), session_headers(runtime, ids["rev"])
    r = client.post(f"/api/v1/projects/{pid}/tasks/next?stage=annotate", headers=ha)
    assert r.status_code == 200, r.text
    task = r.json()["task"]
    assert task["item_id"] == items[0]
    r = client.put(f"/api/v1/items/{items[0]}/annotations", json=good_body("ann"), headers=ha)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"1"'
    r = client.post(f"/api/v1/projects/{pid}/tasks/{task['id']}/submit", headers=ha)
    assert r.status_code == 200, r.text
    assert r.json()["item_stage"] == "review"
    r = client.post(f"/api/v1/projects/{pid}/tasks/next?stage=review", headers=hr)
    assert r.status_code == 200, r.text
    rt = r.json()["task"]
    r = client.post(
        f"/api/v1/projects/{pid}/tasks/{rt['id']}/review", json={"decision": "reject"}, headers=hr
    )
    assert r.status_code == 422, r.text
    r = client.post(
        f"/api/v1/projects/{pid}/tasks/{rt['id']}/review",
        json={
            "decision": "reject",
            "errors": [{"category": "boundary", "severity": "major", "comment": "too wide"}],
        },
        headers=hr,
    )
    assert r.status_code == 200, r.text
    assert r.json()["item_stage"] == "annotate"
    r = client.post(f"/api/v1/projects/{pid}/tasks/next?stage=annotate", headers=ha)
    t2 = r.json()["task"]
    assert t2["feedback"]["errors"][0]["category"] == "boundary"
    r = client.get(f"/api/v1/items/{items[0]}/timeline", headers=hr)
    assert r.status_code == 200, r.text
