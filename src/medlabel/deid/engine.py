"""De-identify one DICOM dataset: PS3.15 Annex E Basic Application Level Confidentiality Profile.

``deidentify_dataset(ds, config, ctx)`` applies Table E.1-1 (``profile_table``, generated from the
standard) to every element at every depth, replaces the patient's identity with a pseudonym from
the caller's :class:`PseudonymStore`, replaces UIDs deterministically (``uids.remap_uid``), removes
private attributes (unless on the safe list), records what it did in the header (PS3.15 E.1.1,
PS3.3 C.12.1.1.1) and decides whether the image must be quarantined for burned-in text
(``quarantine``). The input dataset is never modified, unless the caller asks for ``in_place``
(the import does: the original is never stored, so copying it first would be wasted work).

Elements the profile keeps unchanged (action ``K`` outside sequences, and attributes the table does
not name that need no UID replacement or text dummy) are left as pydicom read them: not decoded,
and written back byte for byte. Every element the engine changes or removes is decoded first.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)

from medlabel.deid.config import DeidConfig
from medlabel.deid.dates import shift_da, shift_dt
from medlabel.deid.profile import EDITION, Option, ProfileRow, lookup, resolve_action
from medlabel.deid.quarantine import burned_in_reasons
from medlabel.deid.stores import DateOffsetStore, PseudonymStore
from medlabel.deid.uids import remap_uid
from medlabel.errors import ConfigurationError, DicomError, MedlabelError

__all__ = ["DeidContext", "DeidResult", "DeidState", "deidentify_dataset", "deidentify_more", "independent_element", "OPTION_CODES"]

#: CID 7050 De-identification Method codes (PS3.16), from pydicom's code dictionary where present.
OPTION_CODES: Mapping[Option | None, Code] = {
    None: codes.DCM.BasicApplicationConfidentialityProfile,  # 113100
    Option.CLEAN_DESCRIPTORS: codes.DCM.CleanDescriptorsOption,  # 113105
    Option.RETAIN_LONGITUDINAL_FULL_DATES: codes.DCM.RetainLongitudinalTemporalInformationFullDatesOption,
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
    Option.RETAIN_PATIENT_CHARACTERISTICS: codes.DCM.RetainPatientCharacteristicsOption,  # 113108
    Option.RETAIN_DEVICE_IDENTITY: codes.DCM.RetainDeviceIdentityOption,  # 113109
    Option.RETAIN_UIDS: Code("113110", "DCM", "Retain UIDs Option"),  # absent from pydicom's codedict
    Option.RETAIN_SAFE_PRIVATE: codes.DCM.RetainSafePrivateOption,  # 113111
    Option.RETAIN_INSTITUTION_IDENTITY: codes.DCM.RetainInstitutionIdentityOption,  # 113112
}

_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC"}
_FREE_TEXT_VRS = {"LT", "ST", "UT", "UC", "PN"}
_NUMERIC_VRS = {"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "US or SS", "US or OW"}
_BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW"}
_IDENTIFIER_VRS = {"PN", "LO", "SH", "AE", "DA", "DT"}
_DUMMY_TEXT = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "PN": "ANONYMIZED",
    "UR": "",
    "SH": "ANONYMIZED",
}
_PATIENT_ID = 0x00100020
_PATIENT_NAME = 0x00100010
_ISSUER = 0x00100021
_KEEP_UID_KEYWORD = re.compile(
    r"(ClassUID|TransferSyntaxUID|CodingSchemeUID|ContextUID|MappingResourceUID)s?$"
)
_PATTERNS = (
    re.compile(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b"),  # 2021-03-04
    re.compile(r"\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"),  # 04/03/2021
    re.compile(r"\b(?:18|19|20)\d{6}\b"),  # 20210304
    re.compile(r"\b\d{5,}\b"),  # long numbers: MRNs, accession and phone numbers
    re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),  # e-mail addresses
)


@dataclass(frozen=True, slots=True)
class DeidContext:
    """The state kept across imports: the caller's stores."""

    pseudonyms: PseudonymStore
    #: Required when the Retain Longitudinal Temporal Information Modified Dates option is on.
    date_offsets: DateOffsetStore | None = None


@dataclass(frozen=True, slots=True)
class DeidState:
    """What one ``deidentify_dataset`` call decided that every element of that data set was
    treated under: the patient's pseudonym and date offset, the identifiers masked in free
    text (Clean Descriptors), and whether a date or time was removed or dummied. Given the same
    state, a top-level element that is neither private, a sequence, a patient identifier nor an
    input of any of these decisions comes out of the engine the same wherever it is
    (:func:`deidentify_more`)."""

    pseudonym: str
    offset: int | None
    identifiers: re.Pattern[str] | None
    dates_touched: bool
    patient: tuple[str, str]  #: (Patient ID, or "NAME:" + Patient's Name; issuer): the store's key


@dataclass(frozen=True, slots=True)
class DeidResult:
    """What ``deidentify_dataset`` produced and decided."""

    dataset: Dataset  #: the de-identified copy
    quarantined: bool  #: hold for a human to clear burned-in text (never silently admit)
    reasons: tuple[str, ...]  #: why it is quarantined; empty otherwise
    warnings: tuple[str, ...]  #: tolerated deviations in the input, one line each
    uid_map: Mapping[str, str]  #: original UID → new UID, for every UID replaced
    action_counts: Mapping[str, int]  #: action code (or ``private``, ``group-length``) → elements
    pseudonym: str  #: the new Patient ID
    date_offset_days: int | None  #: the shift applied to dates, when dates were modified
    state: DeidState | None = None  #: the decisions to treat more elements of this data set alike


@dataclass
class _Run:
    config: DeidConfig
    ctx: DeidContext
    pseudonym: str = ""
    offset: int | None = None
    uid_map: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    identifiers: re.Pattern[str] | None = None
    dates_touched: bool = False

    # --- values -------------------------------------------------------------------------
    def uid(self, value: str) -> str:
        new = self.uid_map.get(value)
        if new is None:
            new = remap_uid(self.config.project_secret, value)
            if new:
                self.uid_map[value] = new
        return new

    def hashed(self, label: str, value: str, length: int) -> str:
        digest = hmac.new(self.config.project_secret, f"{label}\x00{value}".encode(), hashlib.sha256)
        return digest.hexdigest()[:length].upper()

    def clean_text(self, value: str) -> str:
        """Mask the identifiers found in this dataset and ID/date/e-mail-like patterns."""
        out = value
        if self.identifiers is not None:
            out = self.identifiers.sub(lambda m: "*" * len(m.group(0)), out)
        for pat in _PATTERNS:
            out = pat.sub(lambda m: "*" * len(m.group(0)), out)
        return out

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


def _values(elem: DataElement) -> list[Any]:
    if elem.value is None:
        return []
    if isinstance(elem.value, MultiValue | list | tuple):
        return list(elem.value)
    return [elem.value]


def _set_values(elem: DataElement, values: list[Any]) -> None:
    elem.value = values if len(values) != 1 else values[0]


def _empty(elem: DataElement) -> None:
    if elem.VR == "SQ":
        elem.value = Sequence()
    elif elem.VR in _BINARY_VRS:
        elem.value = b""
    elif elem.VR in _NUMERIC_VRS or elem.VR == "AT":
        elem.value = None
    else:
        elem.value = ""


def _dummy(elem: DataElement) -> None:
    vr = elem.VR
    if vr in _NUMERIC_VRS:
        elem.value = "0" if vr in ("DS", "IS") else 0
    elif vr in _BINARY_VRS:
        elem.value = b"\x00\x00"
    elif vr == "AT":
        elem.value = 0
    else:
        elem.value = _DUMMY_TEXT.get(vr, "ANONYMIZED")


def _tag_str(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


_DECODE_ERRORS = (ValueError, TypeError, KeyError, OverflowError, UnicodeDecodeError)
_PATIENT_TAGS = frozenset({_PATIENT_ID, _PATIENT_NAME})
_ROWS: dict[int, ProfileRow | None] = {}
#: resolved actions per (options, compound policy), then per row
_ACTIONS: dict[tuple[frozenset[Option], str], dict[str, tuple[str, Option | None]]] = {}
_ROWS_MAX = 1 << 16


def _row(tag: int) -> ProfileRow | None:
    """``lookup`` memoised per tag (the masked rows are matched one by one otherwise)."""
    try:
        return _ROWS[tag]
    except KeyError:
        row = lookup(tag)
        if len(_ROWS) < _ROWS_MAX:
            _ROWS[tag] = row
        return row


def _plain_vr(ds: Dataset, tag: BaseTag) -> str | None:
    """The VR of ``ds[tag]`` without decoding its value, or ``None`` when only decoding tells.

    Raw elements of explicit-VR data sets carry their VR; implicit-VR ones take the dictionary's
    unless it is ambiguous (``US or SS`` …). ``UN`` is decoded: pydicom may know the real VR.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return None
    vr = elem.VR
    if isinstance(elem, RawDataElement) and vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
    if not vr or vr == "UN" or " " in vr:
        return None
    return str(vr)


class _Cleaner:
    """Walks a dataset applying Table E.1-1 under one configuration."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.cfg = run.config
        self._actions = _ACTIONS.setdefault((self.cfg.options, str(self.cfg.compound_policy)), {})

    def action(self, row: ProfileRow) -> tuple[str, Option | None]:
        found = self._actions.get(row.tag)
        if found is None:
            found = self._actions[row.tag] = resolve_action(row, self.cfg.options, self.cfg.compound_policy)
        return found

    def _untouched(self, tag: BaseTag, vr: str | None, dummy_text: bool) -> bool:
        """Whether the walk leaves this element's value alone (kept, or removed outright), so it
        need not be decoded. ``vr`` is from :func:`_plain_vr`."""
        if vr is None or vr == "SQ" or tag in _PATIENT_TAGS:
            return False
        row = _row(tag)
        if row is None:
            if vr == "UI":
                return not self.cfg.remap_unlisted_uids or self.cfg.has(Option.RETAIN_UIDS)
            return not (dummy_text and vr in _FREE_TEXT_VRS)
        return self.action(row)[0] in ("K", "X")

    # --- identifiers for the Clean options ------------------------------------------------
    def collect_identifiers(self, ds: Dataset, found: set[str]) -> None:
        for tag in list(ds.keys()):
            if tag.is_private:
                continue
            vr = _plain_vr(ds, tag)
            if vr is not None and vr != "SQ":
                row = _row(tag)
                if row is None or vr not in _IDENTIFIER_VRS or self.action(row)[0] in ("K", "C"):
                    continue  # not an identifier: no need to decode it
            try:
                elem = ds[tag]
            except _DECODE_ERRORS:
                continue  # the walk removes it with a warning
            if elem.VR == "SQ":
                for item in elem.value or []:
                    self.collect_identifiers(item, found)
                continue
            row = _row(tag)
            if row is None or elem.VR not in _IDENTIFIER_VRS or self.action(row)[0] in ("K", "C"):
                continue
            for v in _values(elem):
                text = str(v).strip()
                if elem.VR == "PN":
                    found.update(t for t in re.split(r"[\^=\s,]+", text) if len(t) >= 2)
                elif elem.VR in ("DA", "DT") and len(text) >= 8:
                    y, m, d = text[:4], text[4:6], text[6:8]
                    found.update({text[:8], f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}"})
                elif len(text) >= 3:
                    found.add(text)

    # --- the walk -------------------------------------------------------------------------
    def clean(self, ds: Dataset, *, dummy_text: bool = False, top: bool = False) -> None:
        self._private(ds)
        removed_overlays: set[int] = set()
        for tag in list(ds.keys()):
            tag = Tag(tag)
            if tag.is_private:
                continue
            if tag.element == 0:
                del ds[tag]
                self.run.counts["group-length"] += 1
                continue
            vr = _plain_vr(ds, tag)
            if self._untouched(tag, vr, dummy_text):
                assert vr is not None
                row = _row(tag)
                if row is None:
                    continue  # unlisted, nothing to replace: kept as read
                code = self.action(row)[0]
                self.run.counts[code] += 1
                if code == "X":
                    if "x" in row.tag and row.tag.endswith("3000") and (tag.group >> 8) == 0x60:
                        removed_overlays.add(tag.group)
                    del ds[tag]
                    self._note_date(vr)
                continue
            try:
                elem = ds[tag]
            except _DECODE_ERRORS as exc:
                del ds[tag]
                self.run.counts["X"] += 1
                self.run.warn(f"{_tag_str(tag)} could not be decoded ({exc}); removed")
                continue
            if tag in _PATIENT_TAGS:
                self._patient(ds, elem, top)
                continue
            row = _row(tag)
            if row is None:
                self._unlisted(elem, dummy_text)
                continue
            code, option = self.action(row)
            if code == "X" and "x" in row.tag and row.tag.endswith("3000") and (tag.group >> 8) == 0x60:
                removed_overlays.add(tag.group)
            self._apply(ds, elem, code, option, row)
        for group in removed_overlays:  # the Overlay Plane module is invalid without its data
            for t in [t for t in ds.keys() if Tag(t).group == group]:
                del ds[t]
                self.run.counts["X"] += 1

    def _patient(self, ds: Dataset, elem: DataElement, top: bool) -> None:
        self.run.counts["D"] += 1
        if top:
            elem.value = self.run.pseudonym
            return
        pid = str(ds.get("PatientID", "") or "").strip()
        if pid:
            issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
            elem.value = self.run.ctx.pseudonyms.get_or_create(pid, issuer)
        else:
            _dummy(elem)

    def _unlisted(self, elem: DataElement, dummy_text: bool) -> None:
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value or []:
                self.clean(item, dummy_text=dummy_text)
        elif vr == "UI" and self.cfg.remap_unlisted_uids and not self.cfg.has(Option.RETAIN_UIDS):
            keyword = elem.keyword or ""
            if _KEEP_UID_KEYWORD.search(keyword):
                return
            values = [str(v) for v in _values(elem)]
            if any(v and v not in UID_dictionary for v in values):
                _set_values(elem, [v if v in UID_dictionary else self.run.uid(v) for v in values])
                self.run.counts["U"] += 1
        elif dummy_text and vr in _FREE_TEXT_VRS and elem.value not in (None, ""):
            _dummy(elem)
            self.run.counts["D"] += 1

    def _apply(
        self, ds: Dataset, elem: DataElement, code: str, option: Option | None, row: ProfileRow
    ) -> None:
        vr = elem.VR
        if code == "C":
            code = self._clean_option(elem, option, row)
            if code == "C":
                self.run.counts["C"] += 1
                return
        self.run.counts[code] += 1
        if code == "X":
            del ds[elem.tag]
            self._note_date(vr)
        elif code == "Z":
            _empty(elem)
            self._note_date(vr)
        elif code == "K":
            if vr == "SQ":
                for item in elem.value or []:
                    self.clean(item)
        elif code == "D":
            if vr == "SQ":
                for item in elem.value or []:
                    self.clean(item, dummy_text=True)
            elif vr == "UI":
                _set_values(elem, [self.run.uid(str(v)) for v in _values(elem)] or [self.run.uid("dummy")])
            else:
                _dummy(elem)
                self._note_date(vr)
        elif code in ("U", "U*"):
            if vr == "SQ":
                for item in elem.value or []:
                    self.clean(item)
            elif vr == "UI":
                _set_values(elem, [self.run.uid(str(v)) for v in _values(elem)])
            else:
                self.run.warn(f"{_tag_str(elem.tag)} {row.name}: action {code} on VR {vr}; emptied")
                _empty(elem)
        else:  # pragma: no cover - the generator validates the codes
            raise ConfigurationError(f"unknown action {code!r} for {row.tag} (PS3.15 Table E.1-1)")

    def _note_date(self, vr: str) -> None:
        if vr in ("DA", "DT", "TM"):
            self.run.dates_touched = True

    def _clean_option(self, elem: DataElement, option: Option | None, row: ProfileRow) -> str:
        """Apply a ``C`` action; return ``C`` when done or the fallback code to apply instead."""
        vr = elem.VR
        fallback = resolve_action(row, (), self.cfg.compound_policy)[0]
        if option is Option.RETAIN_LONGITUDINAL_MODIFIED_DATES:
            if vr in ("DA", "DT"):
                self._shift(elem)
                return "C"
            if vr in ("TM", "SH"):  # whole-day offset: times and UTC offsets are unchanged
                return "C"
            return fallback
        if vr == "SQ":
            for item in elem.value or []:
                self.clean(item)
            return "C"
        if vr == "AE":
            _set_values(elem, ["AE" + self.run.hashed("AE", str(v), 14) for v in _values(elem)])
            return "C"
        if vr in _TEXT_VRS or vr == "CS":
            _set_values(elem, [self.run.clean_text(str(v)) for v in _values(elem)])
            return "C"
        return fallback

    def _shift(self, elem: DataElement) -> None:
        offset = self.run.offset
        assert offset is not None  # checked before the walk
        out = []
        for v in _values(elem):
            text = str(v)
            try:
                out.append(shift_da(text, offset) if elem.VR == "DA" else shift_dt(text, offset))
            except DicomError as exc:
                self.run.warn(f"{_tag_str(elem.tag)} {exc.message}; emptied")
                out = []
                break
        if out:
            _set_values(elem, out)
        else:
            _empty(elem)

    # --- private attributes (Table E.1-1 row "Private Attributes", PS3.15 E.3.10) ------------
    def _private(self, ds: Dataset) -> None:
        creators: dict[tuple[int, int], str] = {}
        for tag in ds.keys():
            t = Tag(tag)
            if t.is_private and 0x0010 <= t.element <= 0x00FF:
                value = ds[t].value or ""
                text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                creators[(t.group, t.element)] = text.strip(" \x00")
        keep_blocks: set[tuple[int, int]] = set()
        safe = (
            {(s.creator, s.group, s.offset): s for s in self.cfg.safe_private}
            if self.cfg.has(Option.RETAIN_SAFE_PRIVATE)
            else {}
        )
        for tag in list(ds.keys()):
            t = Tag(tag)
            if not t.is_private or 0x0010 <= t.element <= 0x00FF:
                continue
            block = (t.group, t.element >> 8)
            entry = safe.get((creators.get(block, ""), t.group, t.element & 0xFF))
            if entry is not None and t.element >= 0x1000 and ds[t].VR in entry.vrs:
                keep_blocks.add(block)
                self.run.counts["K"] += 1
                continue
            del ds[t]
            self.run.counts["private"] += 1
        for block in creators:
            if block not in keep_blocks:
                del ds[Tag(block[0], block[1])]
                self.run.counts["private"] += 1


def _compile_identifiers(found: Iterable[str]) -> re.Pattern[str] | None:
    words = sorted({w for w in found if w and w.upper() != "ANONYMIZED"}, key=len, reverse=True)
    if not words:
        return None
    return re.compile("|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in words), re.IGNORECASE)


def _method(config: DeidConfig) -> tuple[list[str], list[Dataset]]:
    names = [f"{config.method_prefix} {EDITION} Basic Profile"[:64]]
    items = []
    for option, code in OPTION_CODES.items():
        if option is None or option in config.options:
            if option is not None:
                names.append(code.meaning[:64])
            item = Dataset()
            item.CodeValue = code.value
            item.CodingSchemeDesignator = code.scheme_designator
            item.CodeMeaning = code.meaning
            items.append(item)
    return names, items


def deidentify_dataset(
    ds: Dataset, config: DeidConfig, ctx: DeidContext, *, in_place: bool = False
) -> DeidResult:
    """De-identify a copy of ``ds`` per PS3.15 Annex E under ``config``; with ``in_place``,
    ``ds`` itself is de-identified and returned (no copy: for callers that discard the original).

    The patient's pseudonym comes from ``ctx.pseudonyms`` keyed by the original Patient ID
    (0010,0020) and Issuer of Patient ID (0010,0021); a dataset without Patient ID is keyed by
    ``NAME:`` + Patient's Name (with a warning), so one unnamed patient never absorbs another.
    Raises ``ConfigurationError`` when the Modified Dates option is on without a date store.
    """
    if not isinstance(ds, Dataset):
        raise MedlabelError(f"expected a pydicom Dataset, got {type(ds).__name__}")
    dates_modified = config.has(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES)
    if dates_modified and ctx.date_offsets is None:
        raise ConfigurationError(
            "the Retain Longitudinal Temporal Information Modified Dates option needs "
            "DeidContext.date_offsets (PS3.15 E.3.6)"
        )
    run = _Run(config, ctx)
    reasons = burned_in_reasons(ds, use_risk_tables=config.quarantine_risky_modalities)

    pid = str(ds.get("PatientID", "") or "").strip()
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    if not pid:
        name = str(ds.get("PatientName", "") or "").strip()
        run.warn(
            f"Patient ID (0010,0020) is empty; pseudonym keyed by Patient's Name{'' if name else ' (empty)'}"
        )
        pid = f"NAME:{name}"
    run.pseudonym = ctx.pseudonyms.get_or_create(pid, issuer)
    if len(run.pseudonym) > 64 or "\\" in run.pseudonym or not run.pseudonym:
        raise ConfigurationError(
            f"pseudonym {run.pseudonym!r} is not a valid Patient ID: expected 1-64 characters "
            "without '\\' (LO, PS3.5 6.2)"
        )
    if dates_modified:
        assert ctx.date_offsets is not None
        run.offset = ctx.date_offsets.get_or_create(run.pseudonym)

    out = ds if in_place else copy.deepcopy(ds)
    cleaner = _Cleaner(run)
    if config.has(Option.CLEAN_DESCRIPTORS) or config.has(Option.RETAIN_PATIENT_CHARACTERISTICS):
        found: set[str] = {pid} if len(pid) >= 3 and not pid.startswith("NAME:") else set()
        cleaner.collect_identifiers(ds, found)
        run.identifiers = _compile_identifiers(found - {run.pseudonym})
    cleaner.clean(out, top=True)

    out.PatientID = run.pseudonym
    out.PatientName = run.pseudonym
    out.PatientIdentityRemoved = "YES"
    names, items = _method(config)
    out.DeidentificationMethod = names if len(names) > 1 else names[0]
    out.DeidentificationMethodCodeSequence = Sequence(items)
    if dates_modified:
        out.LongitudinalTemporalInformationModified = "MODIFIED"
    elif config.has(Option.RETAIN_LONGITUDINAL_FULL_DATES):
        out.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif run.dates_touched:
        out.LongitudinalTemporalInformationModified = "REMOVED"
    _file_meta(ds, out)
    if getattr(out, "preamble", None):
        # the 128-byte preamble (PS3.10 7.1) is free for applications and was copied from the
        # original by pydicom's writer: it may hold anything (seen: a TIFF header, vendor text)
        out.preamble = None  # written as 128 zero bytes
    return DeidResult(
        dataset=out,
        quarantined=bool(reasons),
        reasons=tuple(reasons),
        warnings=tuple(run.warnings),
        uid_map=dict(run.uid_map),
        action_counts=dict(run.counts),
        pseudonym=run.pseudonym,
        date_offset_days=run.offset,
        state=DeidState(run.pseudonym, run.offset, run.identifiers, run.dates_touched, (pid, issuer)),
    )


def deidentify_more(
    ds: Dataset, config: DeidConfig, ctx: DeidContext, state: DeidState
) -> tuple[tuple[str, ...], bool]:
    """De-identify, in place, top-level elements of a data set that ``deidentify_dataset``
    already treated under ``state``, as that call would have treated them; returns the
    warnings and whether a date or time was removed or dummied.

    ``ds`` holds only those elements (plus, for decoding text, the data set's Specific Character
    Set): neither private nor patient identifier elements, no sequences, no group lengths and
    no overlay groups, nor anything ``state`` was derived from (identifier-like elements, the
    burned-in annotation inputs). The caller (``medlabel.deid.reuse``) checks that; the result
    is then what a whole-data-set call gives for these elements, which its tests compare byte
    for byte.
    """
    run = _Run(config, ctx, pseudonym=state.pseudonym, offset=state.offset, identifiers=state.identifiers)
    _Cleaner(run).clean(ds, top=True)
    return tuple(run.warnings), run.dates_touched


def _file_meta(original: Dataset, out: Dataset) -> None:
    """Rebuild File Meta Information (PS3.10 7.1): only what describes the new instance."""
    old = getattr(original, "file_meta", None)
    meta = FileMetaDataset()
    if old is not None and "TransferSyntaxUID" in old:
        meta.TransferSyntaxUID = old.TransferSyntaxUID
    elif original.original_encoding == (True, True):  # a raw implicit-VR data set
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:  # built in memory, or big endian raw (retired): write explicit VR little endian
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "SOPClassUID" in out:
        meta.MediaStorageSOPClassUID = out.SOPClassUID
    elif old is not None and "MediaStorageSOPClassUID" in old:
        meta.MediaStorageSOPClassUID = old.MediaStorageSOPClassUID
    if "SOPInstanceUID" in out:
        meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDLABEL_DEID"
    out.file_meta = meta


#: Top-level attributes a whole-data-set call reads to decide its state, or sets after its walk:
#: the patient (pseudonym key), the burned-in annotation inputs (0028,0301 is in group 0028),
#: the character set every text is decoded with.
_STATE_INPUTS = frozenset({
    _PATIENT_ID, _PATIENT_NAME, _ISSUER,
    0x00080005,  # Specific Character Set
    0x00080016,  # SOP Class UID (also the Media Storage SOP Class UID of the File Meta)
    0x00080060,  # Modality
})
#: Group 0028 elements that vary from slice to slice and describe no pixel layout: Window Center,
#: Width, Rescale Intercept, Slope, Type, Window Center & Width Explanation (PS3.3 C.11.2, C.11.1).
_WINDOW_AND_RESCALE = frozenset(range(0x00281050, 0x00281056))
_INDEPENDENT: dict[tuple[int, str | None, DeidConfig], bool] = {}


def independent_element(tag: int, vr: str | None, config: DeidConfig) -> bool:
    """Whether a top-level element ``tag`` of VR ``vr`` is treated by the engine on its own:
    the same value gives the same output under the same :class:`DeidState`, and no other
    element's treatment or the state depends on it. Such elements are what
    :func:`deidentify_more` takes.

    Not independent: no or an ambiguous VR, sequences (nested patients, text dummies), ``UN``
    (pydicom may know better), private elements (their creator decides), group lengths,
    repeating groups (overlays, curves: removed as a group), groups 0000 (command), 0002 (File
    Meta) and 0012 (what the engine writes about itself), group 0028 but for window and rescale
    values (the pixel description, Burned In Annotation), the inputs of the state (patient, character set, SOP Class, Modality), and the
    identifier-like elements whose values the Clean options mask elsewhere in free text.
    """
    key = (tag, vr, config)
    found = _INDEPENDENT.get(key)
    if found is None:
        found = _independent(tag, vr, config)
        if len(_INDEPENDENT) < _ROWS_MAX:
            _INDEPENDENT[key] = found
    return found


def _independent(tag: int, vr: str | None, config: DeidConfig) -> bool:
    group, element = tag >> 16, tag & 0xFFFF
    if not vr or vr in ("SQ", "UN") or " " in vr or len(vr) != 2:
        return False
    if group % 2 or element == 0 or group in (0x0000, 0x0002, 0x0012) or (group >> 8) in (0x50, 0x60):
        return False
    if group == 0x0028 and tag not in _WINDOW_AND_RESCALE:
        return False
    if tag in _STATE_INPUTS:
        return False
    if not (config.has(Option.CLEAN_DESCRIPTORS) or config.has(Option.RETAIN_PATIENT_CHARACTERISTICS)):
        return True  # no identifiers are collected (``deidentify_dataset``)
    row = _row(tag)
    if row is None or vr not in _IDENTIFIER_VRS:
        return True
    code = resolve_action(row, config.options, config.compound_policy)[0]
    return code in ("K", "C")  # the others are collected as identifiers to mask in free text
