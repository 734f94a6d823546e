"""Slides are de-identified on ingest: the stored blob has no label image and no identifying tags."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from sqlalchemy import select

from medlabel.items.models import Item
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import by_name, import_via_api


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Pathology", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def test_imported_slide_loses_label_and_tags(client, runtime, team, tmp_path):
    pid, h = team
    path = tmp_path / "case.svs"
    base = np.random.default_rng(5).integers(0, 255, (600, 900, 3), dtype=np.uint8)
    label = np.full((80, 160, 3), 123, dtype=np.uint8)
    desc = "Aperio Image Library vTEST\r\n900x600 (256x256)|AppMag = 20|MPP = 0.5|Filename = SMITH-JOHN-4711|Date = 01/02/24"
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, tile=(256, 256), photometric="rgb", compression="zlib", description=desc, subifds=1)
        tif.write(base[::2, ::2], tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
        tif.write(label, photometric="rgb", description="label SMITH-JOHN-4711", metadata=None)
    original = path.read_bytes()
    report = by_name(import_via_api(client, runtime, h, pid, [path]))
    entry = report["case.svs"]
    assert entry["item_id"], entry
    with session_scope(runtime.sessions) as s:
        item = s.scalar(select(Item).where(Item.id == entry["item_id"]))
        blob, warnings = item.blob_sha256, item.meta["warnings"]
    stored = runtime.blobs.get(blob)
    assert b"SMITH-JOHN" not in stored and b"4711" not in stored and b"01/02/24" not in stored
    assert b"SMITH-JOHN-4711" in original  # the upload had it
    assert any("removed associated image" in w for w in warnings)
    assert any("Filename" in w for w in warnings)
    r = client.get(f"/api/v1/items/{entry['item_id']}/dzi", headers=h)
    assert r.status_code == 200
