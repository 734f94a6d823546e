"""NRRD volumes import as volumes with their geometry, and their header text does not survive."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy import select

from medlabel.items.models import Item
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import by_name, import_via_api


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Atlas", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def test_nrrd_volume(client, runtime, team, tmp_path):
    pid, h = team
    arr = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8) * 3 - 100  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.9, 2.5))  # x, y, z: anisotropic in-plane too
    img.SetOrigin((-10.0, 20.0, 30.0))
    img.SetMetaData("patient", "DOE^JOHN 123456")
    path = tmp_path / "seg.nrrd"
    sitk.WriteImage(img, str(path))
    assert b"DOE^JOHN" in path.read_bytes()
    entry = by_name(import_via_api(client, runtime, h, pid, [path]))["seg.nrrd"]
    assert entry.get("item_id"), entry
    item = client.get(f"/api/v1/items/{entry['item_id']}", headers=h).json()
    assert (item["kind"], item["width"], item["height"], item["frames"]) == ("volume", 8, 7, 6)
    assert item["spacing"] == pytest.approx([2.5, 0.9, 0.8])
    with session_scope(runtime.sessions) as s:
        blob = s.scalar(select(Item.blob_sha256).where(Item.id == entry["item_id"]))
    import gzip

    assert b"DOE^JOHN" not in gzip.decompress(runtime.blobs.get(blob))
    raw = client.get(f"/api/v1/items/{entry['item_id']}/frames/2/raw", headers=h)
    assert raw.status_code == 200
    rows, cols = (int(v) for v in raw.headers["x-shape"].split(","))
    got = np.frombuffer(raw.content, dtype=np.dtype(raw.headers["x-dtype"])).reshape(rows, cols)
    np.testing.assert_array_equal(got, arr[2])  # slice 2 (z) of the NRRD, voxel for voxel
    assert raw.headers["x-spacing"] == "0.9,0.8"  # rows, columns: not resampled
    coronal = client.get(
        f"/api/v1/items/{entry['item_id']}/frames/3/raw", params={"plane": "coronal"}, headers=h
    )
    rows, cols = (int(v) for v in coronal.headers["x-shape"].split(","))
    assert (rows, cols) == (6, 8) and coronal.headers["x-spacing"] == "2.5,0.8"
