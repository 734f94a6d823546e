"""A detached NRRD header (.nhdr) may only name a data file uploaded with it: before, SimpleITK
followed ``data file:`` anywhere on the server's disk (an absolute path imported /etc files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from medlabel.items.models import Item
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import by_name, import_via_api


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Atlas", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def nhdr(folder: Path, data_file: str) -> tuple[Path, np.ndarray]:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)  # (z, y, x)
    (folder / "vol.raw").write_bytes(arr.tobytes())
    header = folder / "vol.nhdr"
    header.write_text(
        "NRRD0004\n# patient DOE^JOHN\ntype: uint8\ndimension: 3\nsizes: 4 3 2\n"
        "spacings: 0.5 0.6 2\nencoding: raw\n"
        f"data file: {data_file}\n"
    )
    return header, arr


def test_detached_nrrd_with_uploaded_data_file(client, runtime, team, tmp_path):
    pid, h = team
    header, arr = nhdr(tmp_path, "vol.raw")
    report = by_name(import_via_api(client, runtime, h, pid, [tmp_path / "vol.raw", header]))
    assert report["vol.nhdr"]["status"] == "imported", report
    assert report["vol.raw"]["status"] == "skipped"
    item_id = report["vol.nhdr"]["item_id"]
    raw = client.get(f"/api/v1/items/{item_id}/frames/1/raw", headers=h)
    got = np.frombuffer(raw.content, dtype=np.dtype(raw.headers["x-dtype"])).reshape(3, 4)
    np.testing.assert_array_equal(got, arr[1])


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_detached_nrrd_cannot_read_outside_the_upload(client, runtime, team, tmp_path, where):
    pid, h = team
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "server.raw").write_bytes(bytes(range(24)))
    ref = str(secret / "server.raw") if where == "absolute" else "../secret/server.raw"
    header, _ = nhdr(tmp_path, ref)
    entry = by_name(import_via_api(client, runtime, h, pid, [header]))["vol.nhdr"]
    assert entry["status"] == "error" and entry["code"] == "invalid_input", entry
    assert "data file" in entry["message"]
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Item.id))) == 0
