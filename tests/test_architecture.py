"""Three rings, one direction: the pure core imports no storage, HTTP or entry points, and
services never import entry points. Checked on the source with ``ast`` (every import, also
those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "medlabel"

CORE = [
    "imaging",
    "annotations",
    "quality",
    "workflow",
    "security",
    "deid",
    "interop",
    "errors.py",
    "clock.py",
]
ENTRY = ["medlabel.api", "medlabel.cli", "medlabel.web", "medlabel.client", "medlabel.worker"]
CORE_FORBIDDEN = [
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "huey",
    "redis",
    "medlabel.storage",
    "medlabel.runtime",
    "medlabel.accounts",
    "medlabel.projects",
    "medlabel.audit",
    "medlabel.jobs",
    *ENTRY,
]
SERVICE_FORBIDDEN = ["fastapi", "starlette", "uvicorn", *ENTRY]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _files(part: str) -> list[Path]:
    p = SRC / part
    if p.suffix == ".py":
        return [p] if p.exists() else []
    return sorted(p.rglob("*.py")) if p.exists() else []


def _violations(files: list[Path], forbidden: list[str]) -> list[str]:
    bad = []
    for f in files:
        for name in _imports(f):
            if any(name == x or name.startswith(x + ".") for x in forbidden):
                bad.append(f"{f.relative_to(SRC) if f.is_relative_to(SRC) else f} imports {name}")
    return bad


def test_core_imports_no_outer_ring():
    files = [f for part in CORE for f in _files(part) if f.name not in ("service.py", "jobs.py")]
    assert files, "no core modules found"
    assert _violations(files, CORE_FORBIDDEN) == []


def test_services_import_no_entry_points():
    files = [
        f
        for f in SRC.rglob("*.py")
        if not any(str(f.relative_to(SRC)).startswith(e.split(".")[1]) for e in ENTRY)
    ]
    files = [f for f in files if f.name != "__main__.py"]
    assert _violations(files, SERVICE_FORBIDDEN) == []


def test_the_checker_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from sqlalchemy import select\n")
    assert _violations([bad], CORE_FORBIDDEN) == [f"{bad} imports sqlalchemy"]
