"""An enhanced (or legacy converted) multi-frame CT that is one volume imports as a ``volume``
item serving what the same slices as single-frame files serve; one that is not (a gap) stays a
multi-frame image with every frame."""

from __future__ import annotations

import numpy as np
import pytest

from ..foundation.helpers import make_project, make_user, session_headers
from ..imaging.phantom import make_ct_series
from ..imaging.test_series import _legacy_converted
from .factories import by_name, import_via_api

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    a = make_project(runtime, "Single", {"boss": ["manager"]})
    b = make_project(runtime, "Enhanced", {"boss": ["manager"]})
    return a, b, session_headers(runtime, uid)


def _raw(client, h, item_id, n, plane="axial") -> np.ndarray:
    r = client.get(f"/api/v1/items/{item_id}/frames/{n}/raw", params={"plane": plane}, headers=h)
    assert r.status_code == 200, r.text
    rows, cols = (int(v) for v in r.headers["x-shape"].split(","))
    return np.frombuffer(r.content, dtype=np.dtype(r.headers["x-dtype"])).reshape(rows, cols)


def test_enhanced_volume_is_a_volume_item(client, runtime, team, tmp_path):
    single, enhanced, h = team
    ph = make_ct_series(tmp_path / "ct", shape=(6, 12, 10), tilt_deg=10.0)
    enh = _legacy_converted(ph.files, tmp_path / "enhanced.dcm")
    ref_id = import_via_api(client, runtime, h, single, ph.files)["items"][0]
    entry = by_name(import_via_api(client, runtime, h, enhanced, [enh]))["enhanced.dcm"]
    assert entry["status"] == "imported", entry
    item = client.get(f"/api/v1/items/{entry['item_id']}", headers=h).json()
    ref = client.get(f"/api/v1/items/{ref_id}", headers=h).json()
    assert (item["kind"], item["frames"], item["width"], item["height"]) == ("volume", 6, 10, 12)
    assert item["spacing"] == pytest.approx(ref["spacing"], abs=1e-4)
    for n, plane in ((0, "axial"), (5, "axial"), (4, "coronal"), (3, "sagittal")):
        np.testing.assert_array_equal(_raw(client, h, entry["item_id"], n, plane), _raw(client, h, ref_id, n, plane))


def test_enhanced_file_with_a_gap_stays_a_multiframe_image(client, runtime, team, tmp_path):
    _single, enhanced, h = team
    ph = make_ct_series(tmp_path / "ct", shape=(6, 12, 10), shuffle=False)
    gap = _legacy_converted(ph.files[:2] + ph.files[3:], tmp_path / "gap.dcm")
    entry = by_name(import_via_api(client, runtime, h, enhanced, [gap]))["gap.dcm"]
    assert entry["status"] == "imported", entry
    assert any("does not make one volume" in w for w in entry["warnings"]), entry
    item = client.get(f"/api/v1/items/{entry['item_id']}", headers=h).json()
    assert (item["kind"], item["frames"]) == ("image", 5)
