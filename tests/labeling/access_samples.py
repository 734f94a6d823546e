"""Sample requests for the labeling routes (used by tests/foundation/test_access_table.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medlabel import clock
from medlabel.labeling import schema_service
from medlabel.labeling.models import TASK_CLAIMED, TASK_OPEN, ItemWorkflow, Task
from medlabel.storage.db import session_scope
from medlabel.storage.models import Project

from .helpers import ADMIN, CHEST_SCHEMA, good_body, make_items

Sample = Callable[[Any], dict[str, Any]]
P = "/api/v1/projects/{project_id}"


def _ready(ctx: Any) -> int:
    """The target project gets the chest X-ray schema and guidelines once; returns an item id."""
    if "lab_item" not in ctx.cache:
        with session_scope(ctx.rt.sessions) as s:
            project = s.get(Project, ctx.project_id)
            schema_service.put_schema(
                s, ADMIN, project, schema=schema_service.parse_schema_document(CHEST_SCHEMA)
            )
            schema_service.put_guideline(s, ADMIN, project, markdown="# Guidelines\nBox every effusion.")
        ctx.cache["lab_item"] = make_items(ctx.rt, ctx.project_id, 1, prefix="access")[0]
    return int(ctx.cache["lab_item"])


def _fresh_task(ctx: Any, stage: str = "annotate", *, claimed_by: str | None = "annotator") -> int:
    _ready(ctx)
    item = make_items(ctx.rt, ctx.project_id, 1, prefix=f"t{stage}")[0]
    now = clock.now()
    with session_scope(ctx.rt.sessions) as s:
        s.add(ItemWorkflow(item_id=item, project_id=ctx.project_id, stage=stage, updated_at=now))
        t = Task(
            project_id=ctx.project_id,
            item_id=item,
            stage=stage,
            state=TASK_OPEN,
            created_at=now,
        )
        if claimed_by is not None:
            t.state = TASK_CLAIMED
            t.assignee_id = ctx.users[claimed_by]
            t.claimed_at = now
            t.lease_expires_at = now.replace(year=now.year + 1)
        s.add(t)
        s.flush()
        return t.id


def _url(ctx: Any, tail: str) -> str:
    return P.format(project_id=ctx.project_id) + tail


def _ack(ctx: Any) -> dict[str, Any]:
    _ready(ctx)
    with session_scope(ctx.rt.sessions) as s:
        g = schema_service.current_guideline(s, ctx.project_id)
        assert g is not None
        version = g.version
    return {"url": _url(ctx, "/guidelines/ack"), "json": {"version": version}}


def _gold(ctx: Any) -> dict[str, Any]:
    _ready(ctx)
    item = make_items(ctx.rt, ctx.project_id, 1, prefix="gold")[0]
    return {"url": f"/api/v1/items/{item}/gold", "json": good_body("ref")}


SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", P + "/schema"): lambda c: (_ready(c), {"url": _url(c, "/schema")})[1],
    ("PUT", P + "/schema"): lambda c: {
        "url": _url(c, "/schema"),
        "content": CHEST_SCHEMA.encode(),
    },
    ("GET", P + "/guidelines"): lambda c: (_ready(c), {"url": _url(c, "/guidelines")})[1],
    ("PUT", P + "/guidelines"): lambda c: {"url": _url(c, "/guidelines"), "json": {"markdown": "# v-next"}},
    ("POST", P + "/guidelines/ack"): _ack,
    ("GET", P + "/workflow"): lambda c: {"url": _url(c, "/workflow")},
    ("PUT", P + "/workflow"): lambda c: {
        "url": _url(c, "/workflow"),
        "json": {"review": True, "lease_seconds": 600},
    },
    ("POST", P + "/tasks/sync"): lambda c: {"url": _url(c, "/tasks/sync"), "json": {"seed": 1}},
    ("GET", P + "/tasks/status"): lambda c: {"url": _url(c, "/tasks/status")},
    ("GET", P + "/tasks"): lambda c: {"url": _url(c, "/tasks?stage=annotate&limit=5")},
    ("POST", P + "/tasks/next"): lambda c: (_ready(c), {"url": _url(c, "/tasks/next")})[1],
    ("POST", P + "/tasks/assign"): lambda c: {
        "url": _url(c, "/tasks/assign"),
        "json": {"task_id": _fresh_task(c, claimed_by=None), "username": "u_annotator"},
    },
    ("GET", P + "/tasks/{task_id}"): lambda c: {"url": _url(c, f"/tasks/{_fresh_task(c)}")},
    ("POST", P + "/tasks/{task_id}/release"): lambda c: {"url": _url(c, f"/tasks/{_fresh_task(c)}/release")},
    ("POST", P + "/tasks/{task_id}/heartbeat"): lambda c: {
        "url": _url(c, f"/tasks/{_fresh_task(c)}/heartbeat"),
        "json": {"active": True},
    },
    ("POST", P + "/tasks/{task_id}/submit"): lambda c: {"url": _url(c, f"/tasks/{_fresh_task(c)}/submit")},
    ("POST", P + "/tasks/{task_id}/review"): lambda c: {
        "url": _url(c, f"/tasks/{_fresh_task(c, 'review', claimed_by='reviewer')}/review"),
        "json": {"decision": "accept"},
    },
    ("POST", P + "/tasks/{task_id}/validate"): lambda c: {
        "url": _url(c, f"/tasks/{_fresh_task(c, 'validate', claimed_by='validator')}/validate"),
        "json": {"decision": "accept"},
    },
    ("POST", P + "/tasks/{task_id}/audit"): lambda c: {
        "url": _url(c, f"/tasks/{_fresh_task(c, 'audit', claimed_by='auditor')}/audit"),
        "json": {"decision": "pass"},
    },
    ("POST", P + "/audit/sample"): lambda c: {"url": _url(c, "/audit/sample"), "json": {"seed": 3}},
    ("GET", P + "/gold/scores"): lambda c: {"url": _url(c, "/gold/scores")},
    ("GET", "/api/v1/items/{item_id}/annotations"): lambda c: {
        "url": f"/api/v1/items/{_ready(c)}/annotations"
    },
    ("PUT", "/api/v1/items/{item_id}/annotations"): lambda c: {
        "url": f"/api/v1/items/{make_items(c.rt, c.project_id, 1, prefix='put')[0]}/annotations",
        "json": (_ready(c), good_body("admin"))[1],
    },
    ("GET", "/api/v1/items/{item_id}/annotations/history"): lambda c: {
        "url": f"/api/v1/items/{_ready(c)}/annotations/history"
    },
    ("GET", "/api/v1/items/{item_id}/annotations/copies"): lambda c: {
        "url": f"/api/v1/items/{_ready(c)}/annotations/copies"
    },
    ("GET", "/api/v1/items/{item_id}/timeline"): lambda c: {"url": f"/api/v1/items/{_ready(c)}/timeline"},
    ("PUT", "/api/v1/items/{item_id}/gold"): _gold,
}
