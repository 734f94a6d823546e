"""A cine (or multi-phase, multi-echo) series imports as one volume item per phase: every file
is stored and reported, none is dropped for sharing its position with another."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from medlabel.items.models import Item
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from ..imaging.test_series import _cine
from .factories import by_name, import_via_api


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Cardiac", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def test_cine_series_is_one_item_per_phase(client, runtime, team, tmp_path):
    pid, h = team
    files = _cine(tmp_path, slices=3, phases=4, TriggerTime=40.0)
    report = import_via_api(client, runtime, h, pid, files)
    assert report["counts"] == {"imported": 12}
    lines = by_name(report)
    assert set(lines) == {f.name for f in files}
    with session_scope(runtime.sessions) as s:
        items = s.scalars(select(Item).where(Item.project_id == pid).order_by(Item.id)).all()
        assert [(i.kind, i.frames) for i in items] == [("volume", 3)] * 4
        assert [i.meta["stack"] for i in items] == [f"trigger time {40 * t:g}" for t in range(4)]
        assert all(i.name.endswith(f"trigger time {40 * t:g})") for t, i in enumerate(items))
        ids = [i.id for i in items]
    for t, item_id in enumerate(ids):
        assert {lines[f"z{z}t{t}.dcm"]["item_id"] for z in range(3)} == {item_id}
        for z in range(3):
            r = client.get(f"/api/v1/items/{item_id}/frames/{z}/raw", headers=h)
            values = np.frombuffer(r.content, dtype=np.dtype(r.headers["x-dtype"]))
            assert set(values.tolist()) == {100 * t + z}
    again = import_via_api(client, runtime, h, pid, files)
    assert again["counts"] == {"duplicate": 12}
