"""An import puts its new items into the annotation workflow (annotate tasks, overlap slots)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from medlabel.labeling.models import ItemWorkflow, Task
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import ct_series, import_via_api


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "CT lesions", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def test_import_creates_annotate_tasks_once(client, runtime, team, tmp_path):
    pid, h = team
    paths, _ = ct_series(tmp_path / "ct", slices=4)
    result = import_via_api(client, runtime, h, pid, paths)
    assert result["tasks_created"]["items"] == 1 and result["tasks_created"]["tasks"] >= 1
    with session_scope(runtime.sessions) as s:
        tasks = s.scalars(select(Task).where(Task.project_id == pid)).all()
        assert {t.stage for t in tasks} == {"annotate"} and all(t.state == "open" for t in tasks)
        assert s.scalar(select(ItemWorkflow.stage).where(ItemWorkflow.project_id == pid)) == "annotate"
    again = import_via_api(client, runtime, h, pid, paths)  # re-import: no new items, no new tasks
    assert again["tasks_created"] == {"items": 0, "tasks": 0, "overlap_items": 0}
