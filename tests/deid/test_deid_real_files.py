"""Real files made by others (pydicom, pydicom-data): their fake PHI must be gone."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from medlabel.deid import Option, deidentify_dataset, remap_uid

from .deid_factories import SECRET, all_text, config, context, round_trip, to_bytes

FILES = ["CT_small.dcm", "eCT_Supplemental.dcm", "RG1_J2KR.dcm", "MR2_J2KR.dcm", "US1_J2KR.dcm"]
DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "PatientBirthDate")


def _load(name: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed (pydicom-data)")
    return pydicom.dcmread(path)


def _phi(ds: Dataset) -> set[str]:
    """Identifying strings of the original: names, IDs, other IDs, institution, dates."""
    found: set[str] = set()
    name = str(ds.get("PatientName", "") or "")
    found.update(p for p in name.replace("=", "^").split("^") if len(p) >= 3)
    for kw in (
        "PatientID",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "StationName",
        "AccessionNumber",
        "OperatorsName",
        "PerformingPhysicianName",
    ):
        v = str(ds.get(kw, "") or "").strip()
        if len(v) >= 3:
            found.add(v)
    other = ds.get("OtherPatientIDs")
    if other:
        found.update(
            str(v) for v in (other if isinstance(other, list | pydicom.multival.MultiValue) else [other])
        )
    for item in ds.get("OtherPatientIDsSequence", []) or []:
        found.add(str(item.PatientID))
    for kw in DATE_KEYWORDS:
        v = str(ds.get(kw, "") or "").strip()
        if len(v) == 8:
            found.add(v)
    return {f for f in found if f}


@pytest.mark.parametrize("name", FILES)
def test_original_identity_is_gone(name: str) -> None:
    ds = _load(name)
    phi = _phi(ds)
    assert len(phi) >= 3, phi  # the file really carries fake PHI
    result = deidentify_dataset(ds, config(), context())
    raw = to_bytes(result.dataset)
    back = round_trip(result.dataset)
    text = all_text(back)
    values = set(text.split("\n"))
    for value in phi:
        assert value not in values, value  # no element keeps it
        if len(value) >= 6:  # long enough to search as a substring anywhere (e.g. '0010' is not)
            assert value not in text, value
            assert value.encode() not in raw, value
    assert back.PatientIdentityRemoved == "YES"
    assert "OtherPatientIDsSequence" not in back
    assert back.SOPInstanceUID != ds.SOPInstanceUID
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert back.PixelData == ds.PixelData  # pixels untouched (burned-in text is quarantined instead)


def test_ct_small_other_patient_ids() -> None:
    ds = _load("CT_small.dcm")
    assert "OtherPatientIDsSequence" in ds
    ids = {str(i.PatientID) for i in ds.OtherPatientIDsSequence}
    out = deidentify_dataset(ds, config(), context()).dataset
    assert not ids & set(all_text(out).split("\n"))


def test_retained_options_on_real_file() -> None:
    ds = _load("eCT_Supplemental.dcm")
    opts = frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS})
    result = deidentify_dataset(ds, config(options=opts), context())
    out = result.dataset
    assert out.StudyDate != ds.StudyDate and len(out.StudyDate) == 8
    assert out.get("PatientSex") == ds.get("PatientSex")
    assert ds.InstitutionName not in all_text(out)


def test_real_segmentation_stays_valid_and_references_map() -> None:
    # pydicom-data's liver.dcm SEG: highdicom must still parse it, its source references remapped.
    hd = pytest.importorskip("highdicom")

    ds = _load("liver.dcm")
    before = hd.seg.Segmentation.from_dataset(ds).get_source_image_uids()
    result = deidentify_dataset(ds, config(), context())
    seg = hd.seg.Segmentation.from_dataset(round_trip(result.dataset))
    after = seg.get_source_image_uids()
    assert len(after) == len(before) >= 1
    expected = {tuple(remap_uid(SECRET, u) for u in uids) for uids in before}
    assert set(after) == expected
    assert seg.number_of_segments >= 1
