"""PHI planted in every attribute Table E.1-1 names must not survive (PS3.15 E.1)."""

from __future__ import annotations

import re

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medlabel.deid import (
    CompoundPolicy,
    DeidConfig,
    DeidContext,
    InMemoryDateOffsetStore,
    InMemoryPseudonymStore,
    Option,
    deidentify_dataset,
    lookup,
    resolve_action,
)
from medlabel.errors import ConfigurationError

from .deid_factories import (
    CONTAINER_SEQ,
    PLANTED_AGE,
    PLANTED_DATE,
    PLANTED_TIME,
    PLANTED_UID_ROOT,
    config,
    context,
    marker,
    minimal,
    planted_dataset,
    planted_tags,
    planted_value,
    round_trip,
    to_bytes,
    walk,
)

MARKER_RE = re.compile(rb"PHI[0-9A-F]{8}")


def _leaks(raw: bytes) -> list[bytes]:
    found = MARKER_RE.findall(raw)
    for needle in (PLANTED_UID_ROOT, PLANTED_DATE, PLANTED_TIME, PLANTED_AGE, "phi"):
        if needle.encode() in raw:
            found.append(needle.encode())
    return found


def test_planting_really_plants() -> None:
    ds = planted_dataset()
    raw = to_bytes(ds)
    n = sum(1 for _ in planted_tags())
    assert n >= 600
    # every planted text marker at three depths, plus private ones
    assert len(MARKER_RE.findall(raw)) > 3 * 400
    assert lookup(CONTAINER_SEQ) is None  # the container is not in the table, so it is recursed


@pytest.mark.parametrize("policy", list(CompoundPolicy))
def test_basic_profile_leaves_no_planted_phi(policy: CompoundPolicy) -> None:
    ds = planted_dataset()
    result = deidentify_dataset(ds, config(compound_policy=policy), context())
    out = result.dataset
    raw = to_bytes(out)
    assert _leaks(raw) == []
    assert "PHI" not in str(out.file_meta)
    # numeric values planted in numeric attributes are gone too, at every depth
    planted = {tag: vr for tag, vr, _ in planted_tags()}
    for elem in walk(out):
        if int(elem.tag) in planted and elem.VR in ("US", "SS", "UL", "SL", "IS", "DS", "FL", "FD"):
            assert elem.value in (None, "", 0, "0", []), (elem.tag, elem.value)
    assert not any(e.tag.is_private for e in walk(out))
    # the input is untouched
    assert str(ds.PatientName).startswith(marker(0x00100010))


def test_output_round_trips_and_is_marked() -> None:
    result = deidentify_dataset(planted_dataset(), config(), context())
    back = round_trip(result.dataset)
    assert back.PatientIdentityRemoved == "YES"
    assert back.PatientID == result.pseudonym == back.PatientName
    assert back.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert back.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator == "DCM"
    assert back.LongitudinalTemporalInformationModified == "REMOVED"
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.SOPInstanceUID in result.uid_map.values()
    assert "SourceApplicationEntityTitle" not in back.file_meta


def test_options_keep_what_they_promise_and_nothing_else() -> None:
    options = frozenset(
        {
            Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            Option.RETAIN_PATIENT_CHARACTERISTICS,
            Option.CLEAN_DESCRIPTORS,
        }
    )
    cfg = config(options=options)
    ctx = context()
    ds = planted_dataset()
    result = deidentify_dataset(ds, cfg, ctx)
    out = result.dataset
    offset = result.date_offset_days
    assert offset is not None and offset != 0
    checked = 0
    for tag, vr, name in planted_tags():
        row = lookup(tag)
        assert row is not None
        code, option = resolve_action(row, options)
        value = planted_value(tag, vr)
        present = tag in out
        if tag in (0x00100010, 0x00100020):
            assert out[tag].value == result.pseudonym
        elif code == "K":
            assert present and out[tag].value == value, name
        elif code == "C" and option is Option.RETAIN_LONGITUDINAL_MODIFIED_DATES and vr in ("DA", "DT"):
            assert present and str(out[tag].value) != str(value), name
            assert str(out[tag].value)[:8] != PLANTED_DATE, name
        elif code == "C":
            continue  # cleaned text: the planted marker is not an identifier, so it may stay
        elif vr not in ("SQ",):
            assert not present or out[tag].value != value, name
        checked += 1
    assert checked > 400
    assert out.PatientAge == PLANTED_AGE  # Retain Patient Characteristics keeps it
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = {i.CodeValue for i in out.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107", "113108", "113105"}
    assert PLANTED_UID_ROOT.encode() not in to_bytes(out)


def test_clean_descriptors_masks_identifiers_in_free_text() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^Johnathan"
    ds.PatientID = "MRN778899"
    ds.StudyDate = "20210304"
    ds.InstitutionName = "St. Elsewhere Hospital"
    ds.StudyDescription = "CT chest for Johnathan DOE 2021-03-04 at St. Elsewhere Hospital"
    ds.SeriesDescription = "axial 5mm call 5551234567"
    ds.ImageComments = "MRN778899"  # X under Clean Descriptors? Image Comments is X → C with the option
    cfg = config(options=frozenset({Option.CLEAN_DESCRIPTORS}))
    out = deidentify_dataset(ds, cfg, context()).dataset
    text = out.StudyDescription
    assert "CT chest for" in text
    for leak in ("Johnathan", "DOE", "2021-03-04", "Elsewhere"):
        assert leak.lower() not in text.lower()
    assert "axial 5mm call" in out.SeriesDescription and "5551234567" not in out.SeriesDescription
    assert "MRN778899" not in str(out.get("ImageComments", ""))
    # without the option the descriptions go entirely
    out2 = deidentify_dataset(ds, config(), context()).dataset
    assert "StudyDescription" not in out2


def test_safe_private_kept_only_with_option() -> None:
    ds = minimal()
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", "1000")  # B_value: on the safe list
    siemens.add_new(0x08, "CS", "PHIMARK")  # not on the list
    out = deidentify_dataset(ds, config(), context()).dataset
    assert not any(e.tag.is_private for e in out)
    cfg = config(options=frozenset({Option.RETAIN_SAFE_PRIVATE}))
    out = round_trip(deidentify_dataset(ds, cfg, context()).dataset)
    block = out.private_block(0x0019, "SIEMENS MR HEADER")
    assert block[0x0C].value == 1000
    assert block.get_tag(0x08) not in out  # CS not on the safe list
    assert b"PHIMARK" not in to_bytes(out)


def test_content_sequence_free_text_is_replaced() -> None:
    # Content Sequence is D: the tree is kept, unlisted free text inside it is replaced.
    ds = Dataset()
    ds.PatientID = "P1"
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "Patient John Smith called"
    concept = Dataset()
    concept.CodeValue = "121071"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Finding"
    item.ConceptNameCodeSequence = Sequence([concept])
    ds.ContentSequence = Sequence([item])
    out = deidentify_dataset(ds, config(), context()).dataset
    assert "Smith" not in str(out.ContentSequence[0].TextValue)
    assert out.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning == "Finding"


def test_configuration_errors() -> None:
    cfg = config(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    with pytest.raises(ConfigurationError, match="date_offsets"):
        deidentify_dataset(Dataset(), cfg, DeidContext(InMemoryPseudonymStore()))
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        DeidConfig(project_secret=b"short")
    with pytest.raises(ConfigurationError, match="exclude each other"):
        config(
            options=frozenset(
                {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_LONGITUDINAL_FULL_DATES}
            )
        )
    with pytest.raises(ConfigurationError, match="not implemented"):
        config(options=frozenset({Option.CLEAN_GRAPHICS}))
    assert InMemoryDateOffsetStore(b"k" * 16).get_or_create("a") < 0
