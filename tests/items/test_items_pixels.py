"""Pixels: rendered frames against windowing the source array by hand, raw values against
pydicom's rescaled pixel_array, MPR planes against slicing the array, DZI tiles against the
source slide, ETag/304 and batched audit of reads."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file
from sqlalchemy import select

from medlabel import clock
from medlabel.items import pixels
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import by_name, ct_series, import_via_api


@pytest.fixture(autouse=True)
def _fresh_caches():
    pixels.clear_caches()
    yield
    pixels.clear_caches()


@pytest.fixture
def team(runtime):
    boss = make_user(runtime, "boss")
    ann = make_user(runtime, "ann")
    pid = make_project(runtime, "Pixels", {"boss": ["manager"], "ann": ["annotator"]})
    return pid, session_headers(runtime, boss), session_headers(runtime, ann)


def window_by_hand(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR, written out independently of medlabel.imaging.render."""
    x = x.astype(np.float64)
    out = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    out[x <= center - 0.5 - (width - 1) / 2] = 0
    out[x > center - 0.5 + (width - 1) / 2] = 255
    return np.round(np.clip(out, 0, 255)).astype(np.uint8)


def raw_of(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/octet-stream"
    shape = tuple(int(v) for v in resp.headers["X-Shape"].split(","))
    return np.frombuffer(resp.content, dtype=np.dtype(resp.headers["X-Dtype"])).reshape(shape)


def png_of(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    return np.asarray(Image.open(io.BytesIO(resp.content)))


@pytest.fixture
def series(client, runtime, team, tmp_path):
    pid, boss, ann = team
    paths, hu = ct_series(tmp_path / "ct", slices=9, rows=30, cols=36)
    result = import_via_api(client, runtime, boss, pid, paths)
    return result["items"][0], hu


def test_volume_frames_raw_rendered_and_mpr(client, team, series):
    _pid, _boss, ann = team
    item_id, hu = series
    base = f"/api/v1/items/{item_id}/frames"
    for k in (0, 4, 8):
        np.testing.assert_array_equal(raw_of(client.get(f"{base}/{k}/raw", headers=ann)), hu[k])
        by_hand = window_by_hand(hu[k], 40, 400)
        np.testing.assert_array_equal(png_of(client.get(f"{base}/{k}/rendered", headers=ann)), by_hand)
        explicit = png_of(client.get(f"{base}/{k}/rendered?window=1500&level=-600", headers=ann))
        np.testing.assert_array_equal(explicit, window_by_hand(hu[k], -600, 1500))
        lung = png_of(client.get(f"{base}/{k}/rendered?preset=ct_lung", headers=ann))
        np.testing.assert_array_equal(lung, explicit)
    # slices ascend towards the head, so coronal/sagittal rows are flipped to put superior up
    for i in (0, 15, 29):
        cor = raw_of(client.get(f"{base}/{i}/raw?plane=coronal", headers=ann))
        np.testing.assert_array_equal(cor, hu[:, i, :][::-1])
    sag = raw_of(client.get(f"{base}/20/raw?plane=sagittal", headers=ann))
    np.testing.assert_array_equal(sag, hu[:, :, 20][::-1])
    sag_png = png_of(client.get(f"{base}/20/rendered?plane=sagittal&window=400&level=40", headers=ann))
    np.testing.assert_array_equal(sag_png, window_by_hand(hu[:, :, 20][::-1], 40, 400))
    jpeg = client.get(f"{base}/4/rendered?format=jpeg&quality=95&size=18", headers=ann)
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (18, 15)
    assert client.get(f"{base}/9/raw", headers=ann).status_code == 404
    assert client.get(f"{base}/36/raw?plane=sagittal", headers=ann).status_code == 404
    assert client.get(f"{base}/35/raw?plane=sagittal", headers=ann).status_code == 200
    assert client.get(f"{base}/0/rendered?preset=nope", headers=ann).status_code == 422
    assert client.get(f"{base}/0/rendered?window=10", headers=ann).status_code == 422


def test_raw_equals_pydicom_rescaled_pixels(client, runtime, team):
    pid, boss, ann = team
    files = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")]
    report = by_name(import_via_api(client, runtime, boss, pid, files))
    for f in files:
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(
            getattr(ds, "RescaleIntercept", 0)
        )
        frames = arr if arr.ndim == 3 else arr[np.newaxis]
        item_id = report[f.name]["item_id"]
        for k in (0, len(frames) - 1):
            got = raw_of(client.get(f"/api/v1/items/{item_id}/frames/{k}/raw", headers=ann))
            np.testing.assert_array_equal(got, frames[k])


def test_etag_and_304(client, team, series):
    _pid, _boss, ann = team
    item_id, _ = series
    url = f"/api/v1/items/{item_id}/frames/3/rendered?preset=ct_bone"
    first = client.get(url, headers=ann)
    etag = first.headers["ETag"]
    assert "max-age" in first.headers["Cache-Control"]
    assert client.get(url, headers=ann).headers["ETag"] == etag
    again = client.get(url, headers={**ann, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    other = client.get(url.replace("ct_bone", "ct_lung"), headers={**ann, "If-None-Match": etag})
    assert other.status_code == 200 and other.headers["ETag"] != etag
    raw = client.get(f"/api/v1/items/{item_id}/frames/3/raw", headers=ann)
    assert (
        client.get(
            f"/api/v1/items/{item_id}/frames/3/raw", headers={**ann, "If-None-Match": raw.headers["ETag"]}
        ).status_code
        == 304
    )


def _reads(rt, item_id):
    with session_scope(rt.sessions) as s:
        return s.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "image.read", AuditEvent.object_id == str(item_id))
            .order_by(AuditEvent.seq)
        ).all()


def test_pixel_reads_are_audited_once_per_user_and_item_per_minute(client, runtime, team, series):
    _pid, boss, ann = team
    item_id, _ = series
    for k in range(5):
        client.get(f"/api/v1/items/{item_id}/frames/{k}/rendered", headers=ann)
    client.get(f"/api/v1/items/{item_id}/frames/0/raw", headers=ann)
    events = _reads(runtime, item_id)
    assert [(e.actor, e.detail["previous_window_reads"]) for e in events] == [("ann", 0)]
    client.get(f"/api/v1/items/{item_id}/frames/0/raw", headers=boss)  # another user: own record
    assert len(_reads(runtime, item_id)) == 2
    clock.set_offset(timedelta(seconds=pixels.AUDIT_BATCH_SECONDS + 1))
    client.get(f"/api/v1/items/{item_id}/frames/1/rendered", headers=ann)
    events = [e for e in _reads(runtime, item_id) if e.actor == "ann"]
    assert [e.detail["previous_window_reads"] for e in events] == [0, 6]


def _pyramid(path: Path, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 255 // (width + height))], axis=-1)
    rgb = rgb.astype(np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(rgb, tile=(256, 256), subifds=2, photometric="rgb", compression="zlib")
        for f in (2, 4):
            tif.write(rgb[::f, ::f], tile=(256, 256), subfiletype=1, photometric="rgb", compression="zlib")
    return rgb


def test_dzi_and_tiles_of_a_pyramidal_tiff(client, runtime, team, tmp_path):
    pid, boss, ann = team
    src = _pyramid(tmp_path / "slide.tif", 1100, 700)
    report = by_name(import_via_api(client, runtime, boss, pid, [tmp_path / "slide.tif"]))
    item_id = report["slide.tif"]["item_id"]
    item = client.get(f"/api/v1/items/{item_id}", headers=ann).json()
    assert (item["kind"], item["width"], item["height"]) == ("slide", 1100, 700)
    r = client.get(f"/api/v1/items/{item_id}/dzi", headers=ann)
    assert r.status_code == 200 and "xml" in r.headers["content-type"]
    root = ET.fromstring(r.content)
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert (root.get("TileSize"), root.get("Overlap"), size.get("Width"), size.get("Height")) == (
        "254",
        "1",
        "1100",
        "700",
    )
    top = 11  # ceil(log2(1100))
    t = client.get(f"/api/v1/items/{item_id}/tiles/{top}/1_1.jpeg", headers=ann)
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg" and "ETag" in t.headers
    tile = np.asarray(Image.open(io.BytesIO(t.content))).astype(int)
    want = src[253 : 253 + 256, 253 : 253 + 256].astype(int)  # col 1: x from 254 - overlap, 256 wide
    assert tile.shape == want.shape
    assert np.abs(tile - want).mean() < 3
    # a coarser level is the source downsampled by 4
    t = client.get(f"/api/v1/items/{item_id}/tiles/{top - 2}/0_0.jpeg", headers=ann)
    tile = np.asarray(Image.open(io.BytesIO(t.content))).astype(int)
    assert tile.shape == (175, 255, 3)
    assert np.abs(tile - src[::4, ::4][:175, :255].astype(int)).mean() < 4
    assert client.get(f"/api/v1/items/{item_id}/tiles/{top}/99_0.jpeg", headers=ann).status_code == 404
    assert client.get(f"/api/v1/items/{item_id}/tiles/{top + 1}/0_0.jpeg", headers=ann).status_code == 404
    etag = client.get(f"/api/v1/items/{item_id}/tiles/{top}/0_0.jpeg", headers=ann).headers["ETag"]
    assert (
        client.get(
            f"/api/v1/items/{item_id}/tiles/{top}/0_0.jpeg", headers={**ann, "If-None-Match": etag}
        ).status_code
        == 304
    )
    thumb = png_of(client.get(f"/api/v1/items/{item_id}/frames/0/rendered?size=256", headers=ann))
    assert thumb.shape[2] == 3 and max(thumb.shape[:2]) <= 256


def test_png_item_renders_its_pixels(client, runtime, team, tmp_path):
    pid, boss, ann = team
    from skimage import data

    Image.fromarray(data.camera()).save(tmp_path / "camera.png")
    report = by_name(import_via_api(client, runtime, boss, pid, [tmp_path / "camera.png"]))
    item_id = report["camera.png"]["item_id"]
    raw = raw_of(client.get(f"/api/v1/items/{item_id}/frames/0/raw", headers=ann))
    np.testing.assert_array_equal(raw, data.camera())
    assert client.get(f"/api/v1/items/{item_id}/dzi", headers=ann).status_code == 422


# ---------------------------------------------------------------- access checks of pixel routes
# Pixel routes check access from in-process caches (``medlabel.storage.cache``) when they can;
# whatever changes in this process must be seen by the very next request.


@pytest.fixture
def long_cache_ttl():
    from medlabel.storage import cache

    before = cache.cache_ttl()
    cache.set_cache_ttl(3600)  # only invalidation can explain a fresh answer
    yield
    cache.set_cache_ttl(before)


def _pixel_url(item_id: int) -> str:
    return f"/api/v1/items/{item_id}/frames/0/rendered"


def test_pixel_routes_see_logout_at_once(client, runtime, team, series, long_cache_ttl):
    _pid, _boss, _ann = team
    item_id, _ = series
    from ..foundation.helpers import login

    h = login(client, "ann")
    for _ in range(3):
        assert client.get(_pixel_url(item_id), headers=h).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=h).status_code == 204
    assert client.get(_pixel_url(item_id), headers=h).status_code == 401
    assert client.get(f"/api/v1/items/{item_id}/tiles/0/0_0.jpeg", headers=h).status_code == 401


def test_pixel_routes_see_membership_and_status_changes_at_once(
    client, runtime, team, series, long_cache_ttl
):
    from medlabel.items.models import Item

    pid, boss, ann = team
    item_id, _ = series
    assert client.get(_pixel_url(item_id), headers=ann).status_code == 200
    assert client.get(_pixel_url(item_id), headers=ann).status_code == 200  # all cached now
    with session_scope(runtime.sessions) as s:
        s.get(Item, item_id).status = "quarantined"
    r = client.get(_pixel_url(item_id), headers=ann)
    assert r.status_code == 409 and r.json()["error"]["code"] == "quarantined"
    assert client.get(_pixel_url(item_id), headers=boss).status_code == 200  # managers decide
    with session_scope(runtime.sessions) as s:
        s.get(Item, item_id).status = "ready"
    assert client.get(_pixel_url(item_id), headers=ann).status_code == 200
    r = client.delete(f"/api/v1/projects/{pid}/members/ann/annotator", headers=boss)
    assert r.status_code == 204, r.text
    r = client.get(_pixel_url(item_id), headers=ann)
    assert r.status_code == 404 and "no item" in r.json()["error"]["message"]
    assert client.get(f"/api/v1/items/{item_id}/frames/0/raw", headers=ann).status_code == 404


def test_pixel_routes_enforce_idle_expiry_exactly(client, runtime, team, series, long_cache_ttl):
    from datetime import UTC, datetime

    from medlabel.accounts.service import _TOUCH_EVERY, hash_token
    from medlabel.storage.models import UserSession

    _pid, _boss, ann = team
    item_id, _ = series
    assert client.get(_pixel_url(item_id), headers=ann).status_code == 200
    token = ann["Authorization"].removeprefix("Bearer ")
    with session_scope(runtime.sessions) as s:
        seen = s.scalar(select(UserSession.last_seen_at).where(UserSession.token_hash == hash_token(token)))
    idle = runtime.settings.idle_timeout

    def at(moment):  # the clock reads ``moment`` now (however long the fixtures took)
        clock.set_offset(moment - datetime.now(UTC))

    at(seen + idle - timedelta(seconds=1))  # still alive: this request refreshes last_seen
    assert client.get(_pixel_url(item_id), headers=ann).status_code == 200
    at(seen + idle - timedelta(seconds=1) + _TOUCH_EVERY / 2)
    assert client.get(_pixel_url(item_id), headers=ann).status_code == 200
    at(seen + 3 * idle)  # idle since the refresh
    r = client.get(_pixel_url(item_id), headers=ann)
    assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
    with session_scope(runtime.sessions) as s:
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "auth.session_expired"))
        assert ev is not None and ev.detail == {"reason": "idle"}


def test_pixel_routes_touch_last_seen_at_most_every_touch_interval(
    client, runtime, team, series, long_cache_ttl
):
    from medlabel.accounts.service import _TOUCH_EVERY, hash_token
    from medlabel.storage.models import UserSession

    _pid, _boss, ann = team
    item_id, _ = series
    token = ann["Authorization"].removeprefix("Bearer ")

    def last_seen():
        with session_scope(runtime.sessions) as s:
            return s.scalar(
                select(UserSession.last_seen_at).where(UserSession.token_hash == hash_token(token))
            )

    first = last_seen()
    for k in range(4):
        assert client.get(f"/api/v1/items/{item_id}/frames/{k}/rendered", headers=ann).status_code == 200
    assert last_seen() == first
    clock.set_offset(_TOUCH_EVERY + timedelta(seconds=1))
    for k in range(4):
        assert client.get(f"/api/v1/items/{item_id}/frames/{k}/rendered", headers=ann).status_code == 200
    touched = last_seen()
    assert touched > first and touched - first >= _TOUCH_EVERY


def test_pixel_access_sees_other_processes_within_the_ttl(client, runtime, team, series):
    """A membership removed behind the ORM (as by another server process) is seen after the TTL."""
    import time as _time

    from sqlalchemy import text

    from medlabel.storage import cache

    before = cache.cache_ttl()
    cache.set_cache_ttl(0.3)
    try:
        pid, _boss, ann = team
        item_id, _ = series
        assert client.get(_pixel_url(item_id), headers=ann).status_code == 200
        with runtime.engine.begin() as conn:
            conn.execute(
                text("DELETE FROM memberships WHERE project_id = :p AND role = 'annotator'"), {"p": pid}
            )
        _time.sleep(0.35)
        assert client.get(_pixel_url(item_id), headers=ann).status_code == 404
    finally:
        cache.set_cache_ttl(before)


def test_inverted_displays_are_rendered_and_flagged(client, runtime, team, tmp_path):
    """Presentation LUT Shape INVERSE (and MONOCHROME1) render inverted; the raw values are the
    stored ones, with ``X-Invert: 1`` so that a viewer windowing them itself inverts too."""
    pid, boss, ann = team
    src = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    inverse = tmp_path / "inverse.dcm"
    src.PresentationLUTShape = "INVERSE"
    # another image (its own series), not another slice of MR_small's series
    src.SOPInstanceUID, src.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    src.save_as(inverse, enforce_file_format=True)
    files = [Path(get_testdata_file("MR_small.dcm")), inverse, Path(get_testdata_file("RG3_UNCR.dcm"))]
    report = by_name(import_via_api(client, runtime, boss, pid, files))
    plain, inv, mono1 = (report[f.name]["item_id"] for f in files)

    def png(item_id: int) -> np.ndarray:
        r = client.get(f"/api/v1/items/{item_id}/frames/0/rendered", headers=ann)
        assert r.status_code == 200, r.text
        return np.asarray(Image.open(io.BytesIO(r.content)))

    np.testing.assert_array_equal(png(inv), 255 - png(plain))
    raws = {i: client.get(f"/api/v1/items/{i}/frames/0/raw", headers=ann) for i in (plain, inv, mono1)}
    np.testing.assert_array_equal(raw_of(raws[inv]), raw_of(raws[plain]))
    assert "x-invert" not in raws[plain].headers
    assert raws[inv].headers["x-invert"] == "1" and raws[mono1].headers["x-invert"] == "1"
