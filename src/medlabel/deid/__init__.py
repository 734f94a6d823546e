"""De-identification on ingest: DICOM PS3.15 Annex E, NIfTI header scrubbing, burned-in quarantine.

Pure core: no database, no HTTP. The caller supplies the stores that must persist across
imports (:class:`PseudonymStore`, :class:`DateOffsetStore`). See ``docs/deidentification.md``.
"""

from __future__ import annotations

from medlabel.deid.config import IMPLEMENTED_OPTIONS, DeidConfig
from medlabel.deid.engine import OPTION_CODES, DeidContext, DeidResult, deidentify_dataset
from medlabel.deid.folder import FileOutcome, FolderReport, deidentify_folder
from medlabel.deid.nifti import SCRUBBED_FIELDS, deidentify_nifti, pseudonymous_name
from medlabel.deid.profile import EDITION, CompoundPolicy, Option, ProfileRow, lookup, resolve_action, rows
from medlabel.deid.quarantine import RISKY_MODALITIES, RISKY_SOP_CLASSES, burned_in_reasons
from medlabel.deid.safe_private import SAFE_PRIVATE, SafePrivate
from medlabel.deid.stores import (
    DateOffsetStore,
    InMemoryDateOffsetStore,
    InMemoryPseudonymStore,
    MappedDateOffsetStore,
    MappedPseudonymStore,
    PseudonymStore,
    RecordingDateOffsetStore,
    RecordingPseudonymStore,
    UnknownPatient,
    derive_offset_days,
)
from medlabel.deid.uids import remap_uid

__all__ = [
    "EDITION",
    "IMPLEMENTED_OPTIONS",
    "OPTION_CODES",
    "RISKY_MODALITIES",
    "RISKY_SOP_CLASSES",
    "SAFE_PRIVATE",
    "SCRUBBED_FIELDS",
    "CompoundPolicy",
    "DateOffsetStore",
    "DeidConfig",
    "DeidContext",
    "DeidResult",
    "FileOutcome",
    "FolderReport",
    "InMemoryDateOffsetStore",
    "InMemoryPseudonymStore",
    "MappedDateOffsetStore",
    "MappedPseudonymStore",
    "Option",
    "ProfileRow",
    "PseudonymStore",
    "RecordingDateOffsetStore",
    "RecordingPseudonymStore",
    "SafePrivate",
    "UnknownPatient",
    "burned_in_reasons",
    "deidentify_dataset",
    "deidentify_folder",
    "deidentify_nifti",
    "pseudonymous_name",
    "derive_offset_days",
    "lookup",
    "remap_uid",
    "resolve_action",
    "rows",
]
