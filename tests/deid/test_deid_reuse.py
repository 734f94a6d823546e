"""Files prepared from their series' template (``medlabel.deid.reuse``) are, byte for byte and
in every reported value, what the whole way (pydicom read, ``deidentify_dataset``,
``encode_dataset``) gives: checked on a generated series whose slices differ in many elements,
and on pydicom's test files with each top-level element changed in turn."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from medlabel.deid import Option
from medlabel.deid.reuse import SeriesTemplates, scan
from medlabel.items import ingest
from medlabel.items.ingest import prepare_dicom_file
from medlabel.items.settings import DEFAULT_DEID_OPTIONS
from tests.deid.deid_factories import config, context

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DEFAULT = frozenset(Option(o) for o in DEFAULT_DEID_OPTIONS)


def _outcome(data: bytes, work: Path, cfg: Any, ctx: Any, name: str = "f.dcm") -> Any:
    """What preparing ``data`` gives: the file, the header, the reasons, the pseudonym and the
    warnings; or the error (type, message)."""
    try:
        p = prepare_dicom_file(data, name, config=cfg, ctx=ctx, work=work, sync=False)
    except Exception as exc:  # noqa: BLE001  (the error is the outcome compared)
        return type(exc).__name__, str(exc)
    out = p.path.read_bytes()
    p.path.unlink()
    d = p.dicom
    return out, d.info, d.reasons, d.pseudonym, d.warnings


@pytest.fixture
def hits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of changed elements of every file prepared from a template."""
    seen: list[int] = []
    real = SeriesTemplates.apply

    def spy(self: SeriesTemplates, *a: Any, **kw: Any) -> Any:
        found = real(self, *a, **kw)
        if found is not None:
            seen.append(found.changed)
        return found

    monkeypatch.setattr(SeriesTemplates, "apply", spy)
    ingest._SERIES.clear()
    yield seen
    ingest._SERIES.clear()


def _slice(
    k: int, *, syntax: str, study: str, series: str, frame: str, patient: str = "PAT-0001", size: int = 16
) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.ContentDate = "20240101", f"202401{1 + k % 28:02d}"
    ds.AcquisitionDateTime = f"20240101{10 + k % 10:02d}3000"
    ds.ContentTime = f"10{k % 60:02d}00"
    ds.AccessionNumber = "ACC123456"
    ds.Modality = "CT"
    ds.InstitutionName = "Mercy Hospital"
    ds.ReferringPhysicianName = "Who^Doctor"
    ds.StudyDescription = "CT chest for Jane Doe"
    ds.SeriesDescription = f"axial {k % 3} of PAT-0001"  # varies: cleaned per file
    ds.ImageComments = f"slice {k} scanned 2024-01-01"
    ds.DerivationDescription = "none"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", patient, "19600101"
    ds.PatientSex, ds.PatientAge = "F", "064Y"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = "S1", 3, k + 1, k // 10
    ds.ImagePositionPatient = [-100.0, -100.0, 2.5 * k]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = 2.5 * k
    ds.SliceThickness = 2.5
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = CTImageStorage
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.add_new(0x00091010, "LO", "GEMS private")  # no creator: removed
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40 + k % 2, 400
    ds.PixelSpacing = [0.7, 0.7]
    rng = np.random.default_rng(k)
    ds.PixelData = rng.integers(0, 4095, (size, size), dtype=np.uint16).tobytes()
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("syntax", "size"),
    # 128 x 128: Pixel Data over 16 KiB, written as a piece of its own (the template keeps the
    # header without it)
    [(ExplicitVRLittleEndian, 16), (ImplicitVRLittleEndian, 16), (ExplicitVRLittleEndian, 128)],
)
@pytest.mark.parametrize("options", [DEFAULT, frozenset()], ids=["default-options", "basic-profile"])
def test_a_series_is_prepared_from_its_template_byte_for_byte(
    tmp_path: Path, hits: list[int], syntax: str, size: int, options: frozenset[Option]
) -> None:
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    files = [_slice(k, syntax=syntax, size=size, **uids) for k in range(12)]
    cfg, ctx = config(options=options), context()
    reused = [_outcome(d, tmp_path, cfg, ctx) for d in files]
    assert len(hits) == len(files) - 1  # the first one went the whole way and became the template
    assert min(hits) >= 4  # SOP Instance UID, Instance Number, position, slice location at least
    whole = []
    for d in files:
        ingest._SERIES.clear()
        whole.append(_outcome(d, tmp_path, cfg, ctx))
    assert reused == whole
    for out, *_ in reused:
        for phi in (b"Doe", b"PAT-0001", b"Mercy", b"ACC123456", b"19600101", b"GEMS"):
            assert phi not in out


def test_another_patient_in_the_same_series_goes_the_whole_way(tmp_path: Path, hits: list[int]) -> None:
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    cfg, ctx = config(options=DEFAULT), context()
    first = _slice(0, syntax=ExplicitVRLittleEndian, **uids)
    other = _slice(1, syntax=ExplicitVRLittleEndian, patient="PAT-0002", **uids)
    a = _outcome(first, tmp_path, cfg, ctx)
    b = _outcome(other, tmp_path, cfg, ctx)
    assert hits == []  # the patient differs: not reused
    assert a[3] != b[3]
    # and a template is never applied under another project's stores
    c = _outcome(
        _slice(2, syntax=ExplicitVRLittleEndian, patient="PAT-0002", **uids), tmp_path, cfg, context()
    )
    assert hits == []
    assert c[3] == "ANON-000001"  # the new store's own first pseudonym, not the template's


def test_the_scan_finds_what_pydicom_reads() -> None:
    checked = 0
    for path in get_testdata_files():
        if not Path(path).is_file():
            continue
        data = Path(path).read_bytes()
        s = scan(data)
        if s is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        assert [e.tag for e in s.elements] == [int(t) for t in ds.keys() if t != 0x7FE00010], path
        assert s.syntax == ds.file_meta.TransferSyntaxUID
        assert data[s.pixel.value : s.pixel.end] == ds.get_item(0x7FE00010).value
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(
    "cut",
    [
        lambda d: d[:128] + b"XXXX" + d[132:],  # no DICM
        lambda d: d[:-10],  # Pixel Data cut short
        lambda d: d + b"\xfc\xff\xfc\xff" + b"OB\x00\x00" + b"\x00" * 4,  # an element after Pixel Data
        lambda d: d[:400],  # cut in the header
    ],
)
def test_the_scan_refuses_what_it_does_not_read(cut: Any) -> None:
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    data = _slice(0, syntax=ExplicitVRLittleEndian, **uids)
    assert scan(data) is not None
    assert scan(cut(data)) is None


def _changed(value: bytes, vr: str | None) -> bytes | None:
    """The value with one byte changed (a digit or letter for text, a bit for binary)."""
    if not value:
        return None
    text_vrs = {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
    if vr in text_vrs:
        for i, c in enumerate(value):
            if 0x30 <= c <= 0x38 or 0x41 <= c <= 0x59 or 0x61 <= c <= 0x79:
                return value[:i] + bytes([c + 1]) + value[i + 1 :]
        return None
    return bytes([value[0] ^ 0x01]) + value[1:]


def _native_test_files() -> list[str]:
    """pydicom's test files this module reads (at most 600 kB; one of each folder of the
    DICOMDIR test tree, whose images are alike)."""
    out = []
    per_folder: dict[Path, int] = {}
    for path in get_testdata_files():
        p = Path(path)
        if not p.is_file() or p.stat().st_size > 600_000:
            continue
        if "dicomdirtests" in p.parts:
            per_folder[p.parent] = per_folder.get(p.parent, 0) + 1
            if per_folder[p.parent] > 1:
                continue
        if scan(p.read_bytes()) is not None:
            out.append(path)
    return out


@pytest.mark.parametrize("path", _native_test_files(), ids=lambda p: Path(p).name)
def test_every_element_changed_alone_gives_what_the_whole_way_gives(
    tmp_path: Path, hits: list[int], path: str
) -> None:
    data = Path(path).read_bytes()
    s = scan(data)
    assert s is not None
    cfg, ctx = config(options=DEFAULT), context()
    _outcome(data, tmp_path, cfg, ctx)  # the original becomes the template (if it can)
    learned = dict(ingest._SERIES._templates)
    for e in s.elements:
        vr = e.vr or _dictionary_vr(e.tag)
        new = _changed(data[e.value : e.end], vr)
        if new is None:
            continue
        variant = data[: e.value] + new + data[e.end :]
        ingest._SERIES.clear()
        ingest._SERIES._templates.update(learned)
        reused = _outcome(variant, tmp_path, cfg, ctx)
        ingest._SERIES.clear()
        whole = _outcome(variant, tmp_path, cfg, ctx)
        assert reused == whole, f"{Path(path).name}: ({e.tag >> 16:04X},{e.tag & 0xFFFF:04X}) {vr} changed"
    if learned:  # not vacuous: a template was learned, and variants were prepared from it
        assert len(hits) >= 3, f"{Path(path).name}: only {len(hits)} variants reused"


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def test_the_element_property_test_exercised_the_reuse(tmp_path: Path, hits: list[int]) -> None:
    """Not vacuous: among pydicom's files, templates are learned and variants reused."""
    used = 0
    for path in _native_test_files():
        data = Path(path).read_bytes()
        cfg, ctx = config(options=DEFAULT), context()
        ingest._SERIES.clear()
        before = len(hits)
        _outcome(data, tmp_path, cfg, ctx)
        _outcome(data, tmp_path, cfg, ctx)  # the same file again: nothing changed
        used += len(hits) > before
    assert used >= 10


def test_a_long_header_makes_no_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hits: list[int]
) -> None:
    """Headers over ``MAX_HEADER_BYTES`` (enhanced multi-frame) are not kept: memory stays bounded."""
    from medlabel.deid import reuse

    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    files = [_slice(k, syntax=ExplicitVRLittleEndian, **uids) for k in range(3)]
    cfg, ctx = config(options=DEFAULT), context()
    monkeypatch.setattr(reuse, "MAX_HEADER_BYTES", 100)
    for d in files:
        _outcome(d, tmp_path, cfg, ctx)
    assert hits == [] and len(ingest._SERIES) == 0


def test_the_scan_refuses_sequences_nested_too_deep() -> None:
    """Sequences of undefined length nested past the limit are refused (no deep recursion),
    and a few levels are read."""
    from medlabel.deid import reuse

    def nested(levels: int) -> bytes:
        body = b""
        for _ in range(levels):  # (0008,1115) SQ, undefined length, one item of undefined length
            item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + body + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
            body = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + item + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        return body

    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    data = _slice(0, syntax=ExplicitVRLittleEndian, **uids)
    s = scan(data)
    assert s is not None
    at = next(e.start for e in s.elements if e.tag > 0x00081115)  # where (0008,1115) goes
    for levels, readable in ((3, True), (reuse._MAX_DEPTH + 5, False)):
        variant = data[:at] + nested(levels) + data[at:]
        found = scan(variant)
        assert (found is not None) is readable
        if found is not None:
            assert 0x00081115 in [e.tag for e in found.elements]
