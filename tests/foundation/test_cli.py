"""The CLI end to end in-process (typer's runner) against a real data directory."""

from __future__ import annotations

import json
import stat

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from medlabel.cli.main import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLABEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDLABEL_DATABASE_URL", raising=False)
    return tmp_path / "home"


def test_init_users_projects_members(home):
    r = runner.invoke(app, ["init"])
    assert r.exit_code == 0 and str(home) in r.output
    assert stat.S_IMODE((home / "secret.key").stat().st_mode) == 0o600
    assert (
        runner.invoke(
            app, ["user", "add", "alice", "--role", "admin", "--password-stdin"], input="long-enough-pw\n"
        ).exit_code
        == 0
    )
    assert (
        runner.invoke(app, ["user", "add", "bob", "--password-stdin"], input="long-enough-pw\n").exit_code
        == 0
    )
    dup = runner.invoke(app, ["user", "add", "bob", "--password-stdin"], input="long-enough-pw\n")
    assert dup.exit_code == 1 and "already exists" in dup.output
    weak = runner.invoke(app, ["user", "add", "carol", "--password-stdin"], input="short\n")
    assert weak.exit_code == 1 and "at least 10 characters" in weak.output
    listing = runner.invoke(app, ["user", "list"]).output
    assert "alice" in listing and "admin" in listing and "bob" in listing and "carol" not in listing
    assert runner.invoke(app, ["project", "create", "Chest X-ray"]).exit_code == 0
    r = runner.invoke(app, ["project", "member", "add", "Chest X-ray", "bob", "--role", "annotator"])
    assert r.exit_code == 0, r.output
    bad = runner.invoke(app, ["project", "member", "add", "Chest X-ray", "bob", "--role", "overlord"])
    assert bad.exit_code == 1 and "overlord" in bad.output
    assert "1 members" in runner.invoke(app, ["project", "list"]).output
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def test_selftest_shows_progress(home):
    r = runner.invoke(app, ["selftest", "--steps", "3", "--delay", "0"])
    assert r.exit_code == 0, r.output
    assert "succeeded" in r.output


def test_demo_creates_logins_once(home):
    r = runner.invoke(app, ["demo", "--no-serve"])
    assert r.exit_code == 0, r.output
    assert "admin" in r.output and "ann" in r.output
    assert "label schema" in r.output  # the example schema ships in the package
    creds = (home / "demo-credentials.txt").read_text()
    assert stat.S_IMODE((home / "demo-credentials.txt").stat().st_mode) == 0o600
    again = runner.invoke(app, ["demo", "--no-serve"])
    assert again.exit_code == 0 and (home / "demo-credentials.txt").read_text() == creds


def test_deid_folder(home, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    original = dcmread(get_testdata_file("CT_small.dcm"))
    (src / "ct.dcm").write_bytes(open(get_testdata_file("CT_small.dcm"), "rb").read())
    (src / "notes.txt").write_text("not an image")
    report = tmp_path / "report.json"
    r = runner.invoke(app, ["deid", str(src), str(tmp_path / "out"), "--report", str(report)])
    assert r.exit_code == 0, r.output
    assert "1 written" in r.output
    written = [p for p in (tmp_path / "out").rglob("*.dcm")]
    assert len(written) == 1
    ds = dcmread(written[0])
    assert ds.PatientName != original.PatientName and ds.PatientID != original.PatientID
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.SOPInstanceUID != original.SOPInstanceUID
    assert str(original.PatientID).encode() not in written[0].read_bytes()
    assert json.loads(report.read_text())["counts"]["skipped"] == 1
    bad = runner.invoke(app, ["deid", str(src), str(tmp_path / "out2"), "--option", "make_it_safe"])
    assert bad.exit_code == 2 and "unknown option" in bad.output


def test_project_create_with_schema(home):
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "src" / "medlabel" / "annotations" / "examples"
    r = runner.invoke(app, ["project", "create", "Lesions", "--schema", str(examples / "ct_lesion.yaml")])
    assert r.exit_code == 0, r.output
    assert "with its label schema" in r.output
    bad = Path(home).parent / "bad.yaml"
    bad.write_text("classes: [{name: 3}]\n")
    r = runner.invoke(app, ["project", "create", "Broken", "--schema", str(bad)])
    assert r.exit_code == 1 and "is required but missing" in r.output
    assert "Broken" not in runner.invoke(app, ["project", "list"]).output  # nothing half-created
