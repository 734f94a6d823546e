"""The import's fast path: de-identifying a data set read from bytes, in place, gives exactly
what the copying API gives, with every planted identifier gone (elements the profile keeps are
left undecoded and written back byte for byte); the stores workers de-identify with."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.uid import ImplicitVRLittleEndian

from medlabel.deid import (
    CompoundPolicy,
    DeidContext,
    InMemoryDateOffsetStore,
    InMemoryPseudonymStore,
    MappedDateOffsetStore,
    MappedPseudonymStore,
    Option,
    RecordingDateOffsetStore,
    RecordingPseudonymStore,
    UnknownPatient,
    deidentify_dataset,
)

from .deid_factories import SECRET, config, context, planted_dataset, to_bytes
from .test_deid_planted_phi import _leaks

OPTION_SETS = [
    frozenset(),
    frozenset(
        {
            Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            Option.RETAIN_PATIENT_CHARACTERISTICS,
            Option.CLEAN_DESCRIPTORS,
        }
    ),
    frozenset({Option.RETAIN_UIDS, Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_SAFE_PRIVATE}),
]


def _read(raw: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(raw))


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("implicit", [False, True])
def test_in_place_on_a_read_data_set_matches_the_copy(options, implicit) -> None:
    src = planted_dataset()
    if implicit:
        src.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    raw = to_bytes(src)
    cfg = config(options=options)
    copied = deidentify_dataset(_read(raw), cfg, context())
    ds = _read(raw)
    assert any(isinstance(ds.get_item(t), RawDataElement) for t in ds.keys())
    in_place = deidentify_dataset(ds, cfg, context(), in_place=True)
    assert in_place.dataset is ds
    assert to_bytes(in_place.dataset) == to_bytes(copied.dataset)
    assert in_place.action_counts == copied.action_counts
    assert in_place.uid_map == copied.uid_map
    if not options:
        assert _leaks(to_bytes(ds)) == []


@pytest.mark.parametrize("policy", list(CompoundPolicy))
def test_basic_profile_leaves_no_planted_phi_in_a_read_data_set(policy) -> None:
    ds = _read(to_bytes(planted_dataset()))
    deidentify_dataset(ds, config(compound_policy=policy), context(), in_place=True)
    assert _leaks(to_bytes(ds)) == []
    assert "PHI" not in str(ds.file_meta)


def test_copy_leaves_the_read_input_alone() -> None:
    raw = to_bytes(planted_dataset())
    ds = _read(raw)
    deidentify_dataset(ds, config(), context())
    assert to_bytes(ds) == raw


def test_mapped_stores_answer_what_the_recording_stores_saw() -> None:
    options = OPTION_SETS[1]
    cfg = config(options=options)
    raw = to_bytes(planted_dataset())
    pseudonyms = RecordingPseudonymStore(InMemoryPseudonymStore())
    offsets = RecordingDateOffsetStore(InMemoryDateOffsetStore(SECRET))
    first = deidentify_dataset(_read(raw), cfg, DeidContext(pseudonyms, offsets))
    assert pseudonyms.known and offsets.known
    mapped = DeidContext(MappedPseudonymStore(pseudonyms.known), MappedDateOffsetStore(offsets.known))
    again = deidentify_dataset(_read(raw), cfg, mapped, in_place=True)
    assert to_bytes(again.dataset) == to_bytes(first.dataset)
    # a patient the parent has not resolved is refused, not invented
    empty = DeidContext(MappedPseudonymStore({}), MappedDateOffsetStore({}))
    with pytest.raises(UnknownPatient):
        deidentify_dataset(_read(raw), cfg, empty, in_place=True)
    only_patient = DeidContext(MappedPseudonymStore(pseudonyms.known), MappedDateOffsetStore({}))
    with pytest.raises(UnknownPatient):
        deidentify_dataset(_read(raw), cfg, only_patient, in_place=True)
