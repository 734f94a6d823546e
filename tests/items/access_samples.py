"""Sample requests for the items routes (used by tests/foundation/test_access_table.py)."""

from __future__ import annotations

import io
import itertools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.items.ingest import new_upload_dir, run_import
from medlabel.items.models import Item, QuarantineEntry
from medlabel.storage.db import session_scope

_n = itertools.count()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), next(_n) % 256, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _items(ctx: Any) -> dict[str, int]:
    """A DICOM image and a slide in the target project, imported once."""
    if "items" not in ctx.cache:
        up = new_upload_dir(ctx.rt.settings.home)
        shutil.copyfile(get_testdata_file("CT_small.dcm"), up / "000000-CT_small.dcm")
        rgb = np.zeros((600, 520, 3), dtype=np.uint8)
        with tifffile.TiffWriter(up / "000001-slide.tif") as tif:
            tif.write(rgb, tile=(256, 256), subifds=1, photometric="rgb")
            tif.write(rgb[::2, ::2], tile=(256, 256), subfiletype=1, photometric="rgb")
        report = run_import(
            sessions=ctx.rt.sessions,
            blobs=ctx.rt.blobs,
            secret_key=ctx.rt.settings.secret_key,
            actor=Actor(None, "test", "admin"),
            project_id=ctx.project_id,
            upload_dir=Path(up),
        )
        ids = {f.name: f.item_id for f in report.files}
        ctx.cache["items"] = {"image": ids["CT_small.dcm"], "slide": ids["slide.tif"]}
    return ctx.cache["items"]  # type: ignore[no-any-return]


def _held(ctx: Any) -> int:
    """A fresh pending quarantine entry (decisions consume it)."""
    with session_scope(ctx.rt.sessions) as s:
        item = Item(
            project_id=ctx.project_id,
            kind="image",
            name="held",
            dedup_key=f"held:{next(_n)}",
            status="quarantined",
            created_at=clock.now(),
            meta={},
        )
        s.add(item)
        s.flush()
        q = QuarantineEntry(
            project_id=ctx.project_id,
            item_id=item.id,
            blob_sha256="0" * 64,
            reasons=["test"],
            status="pending",
            created_at=clock.now(),
            note="",
        )
        s.add(q)
        s.flush()
        return q.id


def _item_url(kind: str, suffix: str = "") -> Callable[[Any], dict[str, Any]]:
    return lambda c: {"url": f"/api/v1/items/{_items(c)[kind]}{suffix}"}


P = "/api/v1/projects/{project_id}"

SAMPLES: dict[tuple[str, str], Callable[[Any], dict[str, Any]]] = {
    ("POST", P + "/imports"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/imports",
        "files": [("files", ("x.png", _png(), "image/png"))],
    },
    ("GET", P + "/items"): lambda c: {"url": f"/api/v1/projects/{c.project_id}/items"},
    ("GET", "/api/v1/items/{item_id}"): _item_url("image"),
    ("GET", "/api/v1/items/{item_id}/frames/{n}/rendered"): _item_url("image", "/frames/0/rendered"),
    ("GET", "/api/v1/items/{item_id}/frames/{n}/raw"): _item_url("image", "/frames/0/raw"),
    ("GET", "/api/v1/items/{item_id}/dzi"): _item_url("slide", "/dzi"),
    ("GET", "/api/v1/items/{item_id}/tiles/{level}/{col}_{row}.jpeg"): _item_url(
        "slide", "/tiles/10/0_0.jpeg"
    ),
    ("GET", P + "/quarantine"): lambda c: {"url": f"/api/v1/projects/{c.project_id}/quarantine"},
    ("POST", P + "/quarantine/{qid}/clear"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/quarantine/{_held(c)}/clear",
        "json": {},
    },
    ("POST", P + "/quarantine/{qid}/reject"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/quarantine/{_held(c)}/reject",
        "json": {},
    },
    ("GET", P + "/deid"): lambda c: {"url": f"/api/v1/projects/{c.project_id}/deid"},
    ("PATCH", P + "/deid"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/deid",
        "json": {"enabled": True},
    },
    ("GET", "/api/v1/admin/pseudonyms"): lambda c: {
        "url": f"/api/v1/admin/pseudonyms?project_id={c.project_id}"
    },
}
