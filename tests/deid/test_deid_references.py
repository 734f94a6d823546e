"""References between instances still resolve after de-identification; dates and determinism."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, SegmentationStorage

from medlabel.deid import (
    DeidContext,
    InMemoryDateOffsetStore,
    InMemoryPseudonymStore,
    Option,
    deidentify_dataset,
)

from .deid_factories import SECRET, config, context, round_trip, walk

ROOT = "1.2.826.0.1.3680043.9.7777."


def _ref(sop_class: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = uid
    return item


def study(patient_id: str, study_no: int, n: int = 3) -> list[Dataset]:
    """n CT slices and a SEG-like instance referencing them, one study."""
    study_uid = f"{ROOT}{study_no}"
    ct_series = f"{study_uid}.1"
    for_uid = f"{study_uid}.9"
    sops = [f"{ct_series}.{i}" for i in range(1, n + 1)]
    out = []
    for i, sop in enumerate(sops):
        ds = Dataset()
        ds.PatientID = patient_id
        ds.PatientName = f"Name^{patient_id}"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = ct_series
        ds.SOPInstanceUID = sop
        ds.SOPClassUID = CTImageStorage
        ds.FrameOfReferenceUID = for_uid
        ds.Modality = "CT"
        ds.StudyDate = "20200315"
        ds.SeriesDate = "20200315"
        ds.AcquisitionDateTime = "20200315101500.5+0100"
        ds.StudyTime = "101500"
        if i:
            ds.ReferencedImageSequence = Sequence([_ref(CTImageStorage, sops[i - 1])])
        out.append(ds)
    seg = Dataset()
    seg.PatientID = patient_id
    seg.PatientName = f"Name^{patient_id}"
    seg.StudyInstanceUID = study_uid
    seg.SeriesInstanceUID = f"{study_uid}.2"
    seg.SOPInstanceUID = f"{study_uid}.2.1"
    seg.SOPClassUID = SegmentationStorage
    seg.Modality = "SEG"
    seg.FrameOfReferenceUID = for_uid
    seg.StudyDate = "20200315"
    series_item = Dataset()
    series_item.SeriesInstanceUID = ct_series
    series_item.ReferencedInstanceSequence = Sequence([_ref(CTImageStorage, s) for s in sops])
    seg.ReferencedSeriesSequence = Sequence([series_item])
    frames = []
    for s in sops:
        derivation = Dataset()
        derivation.SourceImageSequence = Sequence([_ref(CTImageStorage, s)])
        fg = Dataset()
        fg.DerivationImageSequence = Sequence([derivation])
        frames.append(fg)
    seg.PerFrameFunctionalGroupsSequence = Sequence(frames)
    out.append(seg)
    return out


def _refs(ds: Dataset) -> list[str]:
    return [str(e.value) for e in walk(ds) if e.keyword == "ReferencedSOPInstanceUID"]


def test_references_point_to_new_uids_inside_the_study() -> None:
    ctx = context()
    originals = study("PAT-1", 1)
    results = [deidentify_dataset(ds, config(), ctx) for ds in originals]
    outs = [round_trip(r.dataset) for r in results]
    new_sops = {o.SOPInstanceUID for o in outs}
    assert len(new_sops) == len(outs)
    assert len({o.StudyInstanceUID for o in outs}) == 1
    assert len({o.FrameOfReferenceUID for o in outs}) == 1
    ct, seg = outs[:-1], outs[-1]
    assert len({o.SeriesInstanceUID for o in ct}) == 1
    all_refs = [r for o in outs for r in _refs(o)]
    assert len(all_refs) == 2 + 3 + 3  # chain, ReferencedInstanceSequence, SourceImageSequence
    assert set(all_refs) <= new_sops
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert {
        r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    } == {o.SOPInstanceUID for o in ct}
    assert seg.SOPClassUID == SegmentationStorage  # class UIDs are not replaced
    assert ct[1].ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    old = {ds.SOPInstanceUID for ds in originals} | {
        originals[0].StudyInstanceUID,
        originals[0].FrameOfReferenceUID,
    }
    for o in outs:
        assert not (old & {str(e.value) for e in walk(o)})
    # every replaced UID is reported
    for r, ds in zip(results, originals, strict=True):
        assert r.uid_map[ds.SOPInstanceUID] == r.dataset.SOPInstanceUID


def test_deterministic_across_runs_with_same_secret() -> None:
    a = [deidentify_dataset(ds, config(), context()).dataset for ds in study("PAT-1", 1)]
    b = [deidentify_dataset(ds, config(), context()).dataset for ds in study("PAT-1", 1)]
    assert [x.SOPInstanceUID for x in a] == [x.SOPInstanceUID for x in b]
    other = DeidContext(InMemoryPseudonymStore(), InMemoryDateOffsetStore(SECRET))
    c = [
        deidentify_dataset(ds, config(project_secret=b"another-secret-0123456789"), other).dataset
        for ds in study("PAT-1", 1)
    ]
    assert not {x.SOPInstanceUID for x in a} & {x.SOPInstanceUID for x in c}


def test_dates_shift_by_one_offset_per_patient() -> None:
    cfg = config(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    ctx = DeidContext(InMemoryPseudonymStore(), InMemoryDateOffsetStore())  # random offsets
    p1 = [deidentify_dataset(ds, cfg, ctx) for ds in study("PAT-1", 1) + study("PAT-1", 3)]
    p2 = [deidentify_dataset(ds, cfg, ctx) for ds in study("PAT-2", 2)]
    offsets1 = {r.date_offset_days for r in p1}
    offsets2 = {r.date_offset_days for r in p2}
    assert len(offsets1) == 1 and len(offsets2) == 1
    assert offsets1 != offsets2
    assert len({r.pseudonym for r in p1}) == 1 and p1[0].pseudonym != p2[0].pseudonym
    import datetime as dt

    (off,) = offsets1
    expected = (dt.date(2020, 3, 15) + dt.timedelta(days=off)).strftime("%Y%m%d")
    for r in p1:
        assert r.dataset.StudyDate == expected
    ct = p1[0].dataset
    assert ct.AcquisitionDateTime == expected + "101500.5+0100"
    assert ct.StudyTime == "101500"  # whole-day shift leaves times alone
    assert ct.SeriesDate == expected
    assert ct.LongitudinalTemporalInformationModified == "MODIFIED"
    # the same patient imported again later (new context objects, same stores) keeps its offset
    again = deidentify_dataset(study("PAT-1", 4)[0], cfg, ctx)
    assert again.date_offset_days == off and again.pseudonym == p1[0].pseudonym
