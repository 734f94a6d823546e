"""A 4D NIfTI (time points, diffusion directions, cardiac phases) imports as one volume item
per volume, each serving exactly what the same volume saved by nibabel as a 3D file serves."""

from __future__ import annotations

import nibabel
import numpy as np
import pytest
from sqlalchemy import func, select

from medlabel.items.models import Item
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import by_name, import_via_api

AFFINE = np.array([[-0.9, 0, 0, 40.0], [0, 0.8, 0, -20.0], [0, 0, 2.5, 10.0], [0, 0, 0, 1]])


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Cine", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def _series(volumes: int) -> np.ndarray:
    rng = np.random.default_rng(4)
    base = rng.integers(0, 1000, (10, 12, 6)).astype(np.int16)  # (x, y, z)
    return np.stack([base + 100 * t for t in range(volumes)], axis=-1)


def _slice(client, h, item_id, n, plane="axial") -> np.ndarray:
    r = client.get(f"/api/v1/items/{item_id}/frames/{n}/raw", params={"plane": plane}, headers=h)
    assert r.status_code == 200, r.text
    rows, cols = (int(v) for v in r.headers["x-shape"].split(","))
    return np.frombuffer(r.content, dtype=np.dtype(r.headers["x-dtype"])).reshape(rows, cols)


def test_each_volume_is_an_item(client, runtime, team, tmp_path):
    pid, h = team
    data = _series(4)
    path = tmp_path / "cine.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, AFFINE), path)
    singles = []
    for t in range(4):  # the same volumes as 3D files, in a project of their own
        p = tmp_path / f"phase{t}.nii.gz"
        nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(data[..., t]), AFFINE), p)
        singles.append(p)
    reference = make_project(runtime, "Reference", {"boss": ["manager"]})
    ref = by_name(import_via_api(client, runtime, h, reference, singles))

    report = import_via_api(client, runtime, h, pid, [path])
    entry = by_name(report)["cine.nii.gz"]
    assert entry["status"] == "imported", entry
    assert report["counts"] == {"imported": 1} and len(report["items"]) == 4
    assert "4 volumes imported as items" in entry["warnings"][0]
    with session_scope(runtime.sessions) as s:
        rows = s.scalars(select(Item).where(Item.project_id == pid).order_by(Item.id)).all()
        assert [r.meta["volume_index"] for r in rows] == [0, 1, 2, 3]
        assert len({r.blob_sha256 for r in rows}) == 1  # one stored file
        assert [r.id for r in rows] == report["items"]
        audited = s.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.action == "image.import", AuditEvent.project_id == pid)
        )
        assert audited == 4
    for t, item_id in enumerate(report["items"]):
        item = client.get(f"/api/v1/items/{item_id}", headers=h).json()
        assert (item["kind"], item["width"], item["height"], item["frames"]) == ("volume", 10, 12, 6)
        assert item["name"].endswith(f"volume {t + 1} of 4")
        single = ref[f"phase{t}.nii.gz"]["item_id"]
        for n, plane in ((0, "axial"), (5, "axial"), (3, "coronal"), (4, "sagittal")):
            np.testing.assert_array_equal(_slice(client, h, item_id, n, plane), _slice(client, h, single, n, plane))
    # the volumes differ (volume t is volume 0 + 100 t)
    first, last = _slice(client, h, report["items"][0], 2), _slice(client, h, report["items"][3], 2)
    np.testing.assert_array_equal(last.astype(np.int32) - first, 300)

    again = by_name(import_via_api(client, runtime, h, pid, [path]))["cine.nii.gz"]
    assert again["status"] == "duplicate"
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Item.id)).where(Item.project_id == pid)) == 4


def test_more_volumes_than_the_cap_import_volume_0(client, runtime, team, tmp_path, monkeypatch):
    pid, h = team
    monkeypatch.setenv("MEDLABEL_IMPORT_MAX_VOLUMES", "3")
    path = tmp_path / "fmri.nii"
    nibabel.save(nibabel.Nifti1Image(_series(5), AFFINE), path)
    report = import_via_api(client, runtime, h, pid, [path])
    entry = by_name(report)["fmri.nii"]
    assert entry["status"] == "imported" and len(report["items"]) == 1
    assert any("only volume 0 is imported" in w for w in entry["warnings"]), entry
    item = client.get(f"/api/v1/items/{entry['item_id']}", headers=h).json()
    assert not item["name"].endswith("of 5")


def test_a_4d_file_cut_short_is_refused_whole(client, runtime, team, tmp_path):
    pid, h = team
    path = tmp_path / "cut.nii"
    nibabel.save(nibabel.Nifti1Image(_series(4), AFFINE), path)
    path.write_bytes(path.read_bytes()[:-500])  # the last volume is incomplete
    entry = by_name(import_via_api(client, runtime, h, pid, [path]))["cut.nii"]
    assert entry["status"] == "error", entry
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Item.id)).where(Item.project_id == pid)) == 0
