"""De-identify a folder tree: the pure function behind ``medlabel deid IN OUT``.

Layout of ``out_dir``::

    <pseudonym>/<new SOP Instance UID>.dcm               admitted DICOM instances
    quarantine/<pseudonym>/<new SOP Instance UID>.dcm    held for burned-in text (header cleaned)
    nifti/nifti-<hmac>.nii.gz                            scrubbed NIfTI images

Quarantined instances are written (their headers are de-identified like any other) so that a
person can look at the pixels and clear or reject them; ``quarantine/`` must not be shared before
that. Originals are never written, nor are file names reused. Files that are not DICOM or NIfTI,
DICOMDIR files (their directory records repeat the patient's identity) and unreadable files are
skipped with a note. The report names the source files, so it belongs to the trusted side.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medlabel.deid.config import DeidConfig
from medlabel.deid.engine import DeidContext, deidentify_dataset
from medlabel.deid.nifti import deidentify_nifti, pseudonymous_name
from medlabel.errors import InvalidInput, MedlabelError

__all__ = ["FileOutcome", "FolderReport", "deidentify_folder"]

Status = Literal["written", "quarantined", "skipped", "failed"]
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What happened to one input file."""

    source: str  #: path relative to ``in_dir``
    status: Status
    output: str | None = None  #: path relative to ``out_dir``
    note: str = ""
    warnings: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class FolderReport:
    """Per-file outcomes of ``deidentify_folder``."""

    files: list[FileOutcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.files if f.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": {s: self.count(s) for s in ("written", "quarantined", "skipped", "failed")},
            "files": [
                {
                    "source": f.source,
                    "status": f.status,
                    "output": f.output,
                    "note": f.note,
                    "warnings": list(f.warnings),
                    "reasons": list(f.reasons),
                }
                for f in self.files
            ],
        }


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".nii", ".nii.gz"))


def deidentify_folder(
    in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], config: DeidConfig, ctx: DeidContext
) -> FolderReport:
    """De-identify every DICOM and NIfTI file under ``in_dir`` into ``out_dir`` (see module doc).

    ``out_dir`` must not be ``in_dir`` nor lie inside it, and an existing output file is never
    overwritten (the same instance twice is reported as skipped).
    """
    src = Path(in_dir).resolve()
    dst = Path(out_dir).resolve()
    if not src.is_dir():
        raise InvalidInput(f"input folder {str(src)!r} does not exist or is not a folder")
    if dst == src or src in dst.parents:
        raise InvalidInput(
            f"output folder {str(dst)!r} is inside the input folder {str(src)!r}; expected a separate folder "
            "so that originals are never overwritten or re-read"
        )
    report = FolderReport()
    for path in _walk(src):
        rel = path.relative_to(src).as_posix()
        if _is_nifti(path):
            report.files.append(_nifti(path, rel, dst, config))
        else:
            report.files.append(_dicom(path, rel, dst, config, ctx))
    return report


def _nifti(path: Path, rel: str, dst: Path, config: DeidConfig) -> FileOutcome:
    try:
        img = nib.load(path)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        return FileOutcome(rel, "failed", note=f"unreadable NIfTI: {exc}")
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        return FileOutcome(rel, "skipped", note=f"not a NIfTI image ({type(img).__name__})")
    out_rel = f"nifti/{pseudonymous_name(config.project_secret, rel)}"
    target = dst / out_rel
    if target.exists():
        return FileOutcome(rel, "skipped", output=out_rel, note="output exists; not overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(deidentify_nifti(img), target)
    return FileOutcome(rel, "written", output=out_rel)


_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, IndexError, OverflowError, struct.error)


def _read(path: Path) -> tuple[Dataset | None, str]:
    """The dataset, or None and why; a file without the PS3.10 preamble is read as a raw data set
    only when that yields a SOP Class and SOP Instance UID (tolerant on read, with a warning)."""
    try:
        return pydicom.dcmread(path), ""
    except InvalidDicomError:
        pass
    try:
        ds = pydicom.dcmread(path, force=True)
        if "SOPClassUID" in ds and "SOPInstanceUID" in ds and str(ds.SOPInstanceUID).strip():
            return ds, "no DICM preamble or File Meta Information (PS3.10 7.1); read as a raw data set"
    except _READ_ERRORS + (InvalidDicomError, AttributeError, NotImplementedError):
        pass
    return None, "not a DICOM file (no DICM preamble, PS3.10 7.1)"


def _dicom(path: Path, rel: str, dst: Path, config: DeidConfig, ctx: DeidContext) -> FileOutcome:
    try:
        ds, read_note = _read(path)
    except _READ_ERRORS as exc:
        return FileOutcome(rel, "failed", note=f"unreadable DICOM: {type(exc).__name__}: {exc}")
    if ds is None:
        return FileOutcome(rel, "skipped", note=read_note)
    meta_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if meta_class == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        return FileOutcome(rel, "skipped", note="DICOMDIR (Media Storage Directory, PS3.10 8.5) not copied")
    if "SOPInstanceUID" not in ds:
        return FileOutcome(rel, "skipped", note="no SOP Instance UID (0008,0018): not a composite instance")
    try:
        result = deidentify_dataset(ds, config, ctx)
    except MedlabelError as exc:
        return FileOutcome(rel, "failed", note=exc.message)
    except _READ_ERRORS as exc:  # a value that cannot be decoded deep inside the file
        return FileOutcome(rel, "failed", note=f"unreadable DICOM: {type(exc).__name__}: {exc}")
    out = result.dataset
    folder = _SAFE_NAME.sub("_", result.pseudonym) or "unknown"
    name = f"{out.SOPInstanceUID}.dcm"
    out_rel = f"quarantine/{folder}/{name}" if result.quarantined else f"{folder}/{name}"
    target = dst / out_rel
    if target.exists():
        return FileOutcome(rel, "skipped", output=out_rel, note="output exists; not overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        pydicom.dcmwrite(target, out, enforce_file_format=True)
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        target.unlink(missing_ok=True)
        return FileOutcome(rel, "failed", note=f"could not write de-identified file: {exc}")
    return FileOutcome(
        rel,
        "quarantined" if result.quarantined else "written",
        output=out_rel,
        warnings=((read_note,) if read_note else ()) + result.warnings,
        reasons=result.reasons,
    )
