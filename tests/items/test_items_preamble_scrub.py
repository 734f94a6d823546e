"""Stored DICOM files that kept their original's preamble (imports before 2026-11-29) are stored
again with zeros there, the rows follow, and the sweep takes the old files away."""

from __future__ import annotations

import os
import time

import numpy as np
from sqlalchemy import select
from typer.testing import CliRunner

from medlabel.items import preamble_scrub
from medlabel.items.models import Instance, QuarantineEntry
from medlabel.storage.db import session_scope
from medlabel.storage.models import AuditEvent

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import ct_series, import_via_api

PHI = b"DOE^JOHN 19600101 MRN 123456"


def _as_before_the_fix(runtime, pid) -> dict[str, str]:
    """Put PHI in the preamble of every stored file of the project, as the old writer kept it:
    a new blob each, the rows pointed at it. Returns new digest -> the clean original's."""
    changed = {}
    with session_scope(runtime.sessions) as s:
        for inst in s.scalars(select(Instance).where(Instance.project_id == pid)):
            data = runtime.blobs.get(inst.blob_sha256)
            dirty = runtime.blobs.put(PHI.ljust(128, b"\0") + data[128:])
            old = time.time() - 3 * 86400  # stored days ago
            os.utime(runtime.blobs.path(dirty), (old, old))
            changed[dirty] = inst.blob_sha256
            for q in s.scalars(select(QuarantineEntry).where(QuarantineEntry.blob_sha256 == inst.blob_sha256)):
                q.blob_sha256 = dirty
            inst.blob_sha256 = dirty
    return changed


def test_scrub_rewrites_repoints_and_sweeps(client, runtime, tmp_path, monkeypatch):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Old", {"boss": ["manager"]})
    h = session_headers(runtime, uid)
    paths, hu = ct_series(tmp_path / "ct", slices=4)
    item_id = import_via_api(client, runtime, h, pid, paths)["items"][0]
    changed = _as_before_the_fix(runtime, pid)
    assert len(changed) == 4
    assert all(PHI in runtime.blobs.get(d)[:128] for d in changed)

    dry = preamble_scrub.scrub_preambles(runtime.sessions, runtime.blobs, actor=_actor(), dry_run=True)
    assert (dry.scanned, dry.rewritten, dry.clean) == (4, 4, 0)
    with session_scope(runtime.sessions) as s:
        assert set(s.scalars(select(Instance.blob_sha256))) == set(changed)  # nothing changed

    monkeypatch.setenv("MEDLABEL_HOME", str(runtime.settings.home))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", runtime.settings.database_url)
    from medlabel.cli.main import app

    result = CliRunner().invoke(app, ["blobs", "scrub-preambles"])
    assert result.exit_code == 0, result.output
    assert "rewrote 4" in result.output and "4 replaced files deleted" in result.output
    with session_scope(runtime.sessions) as s:
        now = set(s.scalars(select(Instance.blob_sha256).where(Instance.project_id == pid)))
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "blob.scrub")) is not None
    # the rewritten files are exactly what an import writes now (zeros, the rest as stored)
    assert now == set(changed.values())
    for d in now:
        assert runtime.blobs.get(d)[:132] == bytes(128) + b"DICM"
    for d in changed:
        assert not runtime.blobs.exists(d)  # the old files are gone
    r = client.get(f"/api/v1/items/{item_id}/frames/2/raw", headers=h)
    got = np.frombuffer(r.content, dtype=np.dtype(r.headers["x-dtype"])).reshape(hu.shape[1:])
    np.testing.assert_array_equal(got, hu[2])
    again = preamble_scrub.scrub_preambles(runtime.sessions, runtime.blobs, actor=_actor())
    assert (again.rewritten, again.clean) == (0, 4)


def _actor():
    from medlabel.accounts.service import Actor

    return Actor(user_id=None, username="test", role="admin")
