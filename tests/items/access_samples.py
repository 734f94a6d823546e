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


def _upload(ctx: Any, *, with_file: bool = False) -> str:
    """A fresh upload session of the project's manager (admins may use anyone's; the other
    principals are refused before the session is looked up)."""
    from medlabel.items import upload_sessions
    from medlabel.items.settings import deid_settings
    from medlabel.storage.models import Project

    home = ctx.rt.settings.home
    with session_scope(ctx.rt.sessions) as s:
        row = upload_sessions.create_session(
            s,
            Actor(ctx.users["manager"], "u_manager", "user"),
            project=s.get(Project, ctx.project_id),
            home=home,
        )
        ref = upload_sessions.session_ref(row)
        settings = deid_settings(s.get(Project, ctx.project_id))
    if with_file:
        original = upload_sessions.receive_path(ref, home=home)
        shutil.copyfile(get_testdata_file("CT_small.dcm"), original)
        upload_sessions.put_file(
            ref,
            "CT_small.dcm",
            original,
            settings=settings,
            sessions=ctx.rt.sessions,
            secret_key=ctx.rt.settings.secret_key,
            home=home,
        )
    return f"/api/v1/projects/{ctx.project_id}/uploads/{ref.id}"


def _item_url(kind: str, suffix: str = "") -> Callable[[Any], dict[str, Any]]:
    return lambda c: {"url": f"/api/v1/items/{_items(c)[kind]}{suffix}"}


P = "/api/v1/projects/{project_id}"

SAMPLES: dict[tuple[str, str], Callable[[Any], dict[str, Any]]] = {
    ("POST", P + "/imports"): lambda c: {
        "url": f"/api/v1/projects/{c.project_id}/imports",
        "files": [("files", ("x.png", _png(), "image/png"))],
    },
    ("POST", P + "/uploads"): lambda c: {"url": f"/api/v1/projects/{c.project_id}/uploads"},
    ("GET", P + "/uploads/{upload_id}"): lambda c: {"url": _upload(c)},
    ("DELETE", P + "/uploads/{upload_id}"): lambda c: {"url": _upload(c)},
    ("PUT", P + "/uploads/{upload_id}/files/{name}"): lambda c: {
        "url": _upload(c) + "/files/CT_small.dcm",
        # no Content-Type (the table passes its own headers): allowed principals get the 415
        "content": Path(get_testdata_file("CT_small.dcm")).read_bytes(),
    },
    ("POST", P + "/uploads/{upload_id}/files"): lambda c: {
        "url": _upload(c) + "/files",
        "files": [("files", ("CT_small.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes(), "application/dicom"))],
    },
    ("POST", P + "/uploads/{upload_id}/commit"): lambda c: {"url": _upload(c, with_file=True) + "/commit"},
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
    ("POST", "/api/v1/admin/blobs/sweep"): lambda c: {
        "url": "/api/v1/admin/blobs/sweep",
        "json": {"dry_run": True},
    },
}
