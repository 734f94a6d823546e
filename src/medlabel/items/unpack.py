"""The upload area, ZIP unpacking with caps, import limits and the per-file report."""

from __future__ import annotations

import os
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlabel.errors import MedlabelError, TooLarge
from medlabel.imaging import Limits

__all__ = [
    "IngestLimits",
    "FileReport",
    "ImportReport",
    "Candidate",
    "uploads_root",
    "new_upload_dir",
    "safe_name",
    "display_name",
    "expand_zip",
]

_CHUNK = 1 << 20


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Caps on what one import may unpack and decode (environment overrides in brackets)."""

    max_files: int = 100_000
    """Most files (archive members included) [MEDLABEL_IMPORT_MAX_FILES]."""
    max_unpacked_bytes: int = 64 << 30
    """Most bytes inflated from all archives of one import [MEDLABEL_IMPORT_MAX_UNPACKED_BYTES]."""
    max_ratio: int = 100
    """Largest compression ratio of an archive member over 1 MiB [MEDLABEL_IMPORT_MAX_RATIO]."""
    image: Limits = field(default_factory=Limits)
    """Decoded-size budget per image [MEDLABEL_IMPORT_MAX_PIXELS]."""
    max_volumes: int = 64
    """Most volumes of a 4D NIfTI imported as items of their own; beyond, volume 0 only
    [MEDLABEL_IMPORT_MAX_VOLUMES]."""

    @classmethod
    def from_env(cls) -> IngestLimits:
        d = cls()
        return cls(
            max_files=_env_int("MEDLABEL_IMPORT_MAX_FILES", d.max_files),
            max_unpacked_bytes=_env_int("MEDLABEL_IMPORT_MAX_UNPACKED_BYTES", d.max_unpacked_bytes),
            max_ratio=_env_int("MEDLABEL_IMPORT_MAX_RATIO", d.max_ratio),
            image=Limits(max_pixels=_env_int("MEDLABEL_IMPORT_MAX_PIXELS", d.image.max_pixels)),
            max_volumes=max(1, _env_int("MEDLABEL_IMPORT_MAX_VOLUMES", d.max_volumes)),
        )


@dataclass(slots=True)
class FileReport:
    """One line of the import report."""

    name: str
    status: str  # imported | duplicate | quarantined | error | skipped
    message: str = ""
    code: str = ""
    item_id: int | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        if self.message:
            out["message"] = self.message
        if self.code:
            out["code"] = self.code
        if self.item_id is not None:
            out["item_id"] = self.item_id
        if self.warnings:
            out["warnings"] = self.warnings[:20]
        return out


@dataclass(slots=True)
class ImportReport:
    files: list[FileReport] = field(default_factory=list)
    items: list[int] = field(default_factory=list)

    def add(self, r: FileReport) -> FileReport:
        self.files.append(r)
        return r

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        return {"counts": counts, "items": self.items, "files": [f.as_dict() for f in self.files]}


# ---------------------------------------------------------------- upload area


def uploads_root(home: Path) -> Path:
    return Path(home) / "uploads"


def new_upload_dir(home: Path) -> Path:
    """A fresh folder under ``$MEDLABEL_HOME/uploads`` for one import's files."""
    d = uploads_root(home) / uuid.uuid4().hex
    d.mkdir(parents=True, exist_ok=False)
    return d


def safe_name(name: str, index: int) -> str:
    """A flat file name for an upload: no folders, no leading dots, index-prefixed."""
    base = os.path.basename(name.replace("\\", "/")) or "file"
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in base).lstrip(".") or "file"
    return f"{index:06d}-{base[:120]}"


def display_name(stored: str) -> str:
    """The uploaded name back from :func:`safe_name`."""
    head, sep, rest = stored.partition("-")
    return rest if sep and head.isdigit() else stored


# ---------------------------------------------------------------- archives


@dataclass(slots=True)
class Candidate:
    name: str
    path: Path


def _member_problem(info: zipfile.ZipInfo) -> str:
    n = info.filename
    parts = n.replace("\\", "/").split("/")
    if n.startswith(("/", "\\")) or (len(n) > 1 and n[1] == ":") or ".." in parts:
        return f"archive member path {n!r} is absolute or leaves the archive ('..'); refused"
    if info.flag_bits & 0x1:
        return f"archive member {n!r} is encrypted; not supported"
    return ""


def expand_zip(
    archive: Candidate, dest: Path, limits: IngestLimits, budget: list[int], report: ImportReport
) -> list[Candidate]:
    out: list[Candidate] = []
    try:
        zf = zipfile.ZipFile(archive.path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        report.add(FileReport(archive.name, "error", f"not a readable ZIP archive: {exc}", "invalid_input"))
        return out
    with zf:
        for n, info in enumerate(zf.infolist()):
            if info.is_dir():
                continue
            label = f"{archive.name}:{info.filename}"
            problem = _member_problem(info)
            if not problem and budget[1] <= 0:
                problem = f"the import has more than {limits.max_files} files; the rest are refused"
            if (
                not problem
                and info.file_size > _CHUNK
                and info.file_size > limits.max_ratio * max(info.compress_size, 1)
            ):
                problem = (
                    f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 exceeds the "
                    f"cap of {limits.max_ratio}:1 (zip bomb?)"
                )
            if not problem and info.file_size > budget[0]:
                problem = (
                    f"member of {info.file_size} bytes exceeds what is left of the import's "
                    f"{limits.max_unpacked_bytes}-byte unpacking cap"
                )
            if problem:
                code = "invalid_input" if "path" in problem or "encrypted" in problem else "too_large"
                report.add(FileReport(label, "error", problem, code))
                continue
            target = dest / safe_name(info.filename, n)
            written = 0
            try:
                with zf.open(info) as src, open(target, "wb") as fh:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        # never trust the header: count what is actually inflated
                        if written > budget[0] or written > info.file_size:
                            raise TooLarge(
                                f"member inflates past its declared {info.file_size} bytes or the "
                                f"import's unpacking cap of {limits.max_unpacked_bytes} bytes"
                            )
                        fh.write(chunk)
            except (TooLarge, zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
                target.unlink(missing_ok=True)
                msg = exc.message if isinstance(exc, MedlabelError) else f"cannot extract: {exc}"
                report.add(FileReport(label, "error", msg, getattr(exc, "code", "invalid_input")))
                continue
            budget[0] -= written
            budget[1] -= 1
            out.append(Candidate(label, target))
    return out
