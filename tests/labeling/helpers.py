"""Factories for labeling tests: a project with a team, the example chest X-ray schema, items."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.items.models import Item
from medlabel.labeling import schema_service, task_service
from medlabel.labeling.schema_service import parse_schema_document
from medlabel.runtime import Runtime
from medlabel.storage.db import session_scope
from medlabel.storage.models import Project
from medlabel.workflow import WorkflowConfig
from tests.foundation.helpers import make_project, make_user

ROOT = Path(__file__).resolve().parents[2]
CHEST_SCHEMA = (ROOT / "src" / "medlabel" / "annotations" / "examples" / "chest_xray.yaml").read_text()
ADMIN = Actor(None, "test", "admin")


def make_items(
    rt: Runtime, project_id: int, n: int, *, prefix: str = "img", width: int = 512, height: int = 512
) -> list[int]:
    ids = []
    with session_scope(rt.sessions) as s:
        for i in range(n):
            it = Item(
                project_id=project_id,
                kind="image",
                name=f"{prefix}{i}",
                dedup_key=f"{prefix}-{i}-{uuid.uuid4().hex[:12]}",
                width=width,
                height=height,
                frames=1,
                created_at=clock.now(),
                priority=0.0,
                meta={},
            )
            s.add(it)
            s.flush()
            ids.append(it.id)
    return ids


def setup_project(
    rt: Runtime,
    name: str,
    team: dict[str, list[str]],
    *,
    n_items: int = 0,
    workflow: dict[str, Any] | None = None,
    sync: bool = True,
    seed: int = 7,
) -> tuple[int, list[int]]:
    for username in team:
        make_user(rt, username)
    pid = make_project(rt, name, team)
    with session_scope(rt.sessions) as s:
        project = s.get(Project, pid)
        assert project is not None
        schema_service.put_schema(s, ADMIN, project, schema=parse_schema_document(CHEST_SCHEMA))
        if workflow:
            task_service.set_workflow(
                s, ADMIN, project, config=WorkflowConfig.from_dict(workflow), error_categories=[]
            )
    items = make_items(rt, pid, n_items) if n_items else []
    if sync and items:
        with session_scope(rt.sessions) as s:
            project = s.get(Project, pid)
            assert project is not None
            task_service.sync_tasks(s, ADMIN, project, seed=seed)
    return pid, items


def good_body(user: str = "x", *, boxes: int = 1, x: float = 10.0) -> dict[str, Any]:
    """A complete chest X-ray answer: the required questions and ``boxes`` effusion boxes."""
    anns = [
        {
            "id": f"{user}-box-{i}",
            "type": "bbox",
            "class_id": "effusion",
            "geometry": {"x": x + 20 * i, "y": 10.0, "width": 30.0, "height": 40.0},
            "attributes": {"side": "left"},
            "provenance": {"created_at": clock.now().isoformat(), "created_by_user": user},
        }
        for i in range(boxes)
    ]
    return {"annotations": anns, "answers": {"view": "PA", "quality": "diagnostic"}}
