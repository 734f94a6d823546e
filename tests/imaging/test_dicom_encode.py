"""encode_dataset writes, byte for byte, what pydicom's writer writes (``_pydicom_encode``: the
whole data set through ``dcmwrite``, native Pixel Data appended as read; ingest's writer before
``encode_dataset``), and
writes it itself: pydicom's whole-data-set writer is used only for the cases left to it."""

from __future__ import annotations

import copy
import io
import runpy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from medlabel.deid import Option, deidentify_dataset
from medlabel.errors import DicomError
from medlabel.imaging import dicom_encode
from medlabel.imaging.dicom import open_dataset
from medlabel.imaging.dicom_encode import _pydicom_encode as old_encode
from medlabel.imaging.dicom_encode import encode_dataset
from medlabel.items import ingest
from medlabel.items.unpack import Candidate, IngestLimits
from tests.deid.deid_factories import config, context, planted_dataset, to_bytes

# pydicom's warnings about the test files' own deviations (tolerated on read, kept on write)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).parents[2]
ALL_FILES = sorted(
    set(get_testdata_files()) | set(get_testdata_files("dicomdirtests/**/*")) | set(get_charset_files())
)


def _reads(path: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            open_dataset(path)
    except DicomError:
        return False
    return True


TEST_FILES = [p for p in ALL_FILES if _reads(p)]  # the others are refused before any encoding
OPTION_SETS = [
    frozenset(),
    frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS}),
    frozenset({Option.RETAIN_UIDS, Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_SAFE_PRIVATE}),
]


def _outcome(encode: Callable[[Dataset], list[Any]], ds: Dataset) -> bytes | tuple[str, str]:
    """The file written, or the error raised (type and first line)."""
    try:
        return b"".join(encode(ds))
    except Exception as exc:  # noqa: BLE001  (the error is the outcome compared)
        return type(exc).__name__, str(exc).splitlines()[0]


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[Dataset]:
    """The data sets encode_dataset leaves to pydicom's whole-data-set writer."""
    seen: list[Dataset] = []
    real = dicom_encode._pydicom_encode

    def spy(ds: Dataset) -> list[bytes | memoryview]:
        seen.append(ds)
        return real(ds)

    monkeypatch.setattr(dicom_encode, "_pydicom_encode", spy)
    return seen


def _no_whole_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pydicom.dcmwrite called: the fast path was not taken")

    monkeypatch.setattr(pydicom, "dcmwrite", refuse)


def _assert_round_trip(data: bytes, ds: Dataset) -> None:
    """pydicom reads the file back with every element's value (group lengths are not written)."""
    back = pydicom.dcmread(io.BytesIO(data))
    kept = {t for t in ds.keys() if not (t.element == 0 and t.group > 6)}
    assert set(back.keys()) == kept
    for tag in kept:
        assert back[tag].value == ds[tag].value, tag
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def _same_as_ingest(raw: bytes, *, deid: frozenset[Option] | None, fallbacks: list[Dataset]) -> bytes:
    """Read ``raw`` twice (de-identified in place when ``deid`` is given), encode one copy the old
    way and one the new; returns the file after checking both agree and no fallback happened."""
    old, new = pydicom.dcmread(io.BytesIO(raw)), pydicom.dcmread(io.BytesIO(raw))
    if deid is not None:
        for ds in (old, new):
            deidentify_dataset(ds, config(options=deid), context(), in_place=True)
    expected = old_encode(old)
    got = encode_dataset(new)
    assert b"".join(got) == b"".join(expected)
    assert fallbacks == []
    return b"".join(got)


# -- every file in pydicom's test data -----------------------------------------------------------


@pytest.mark.parametrize("deid", [False, True], ids=["as-read", "deidentified"])
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(Path(p).relative_to(Path(p).parents[1])))
def test_test_data_file_encodes_as_ingest_did(path: str, deid: bool, fallbacks: list[Dataset]) -> None:
    old, new = open_dataset(path), open_dataset(path)
    meta = getattr(new, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if deid:
        for ds in (old, new):
            deidentify_dataset(ds, config(), context(), in_place=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _outcome(old_encode, old)
        got = _outcome(encode_dataset, new)
    assert got == expected
    if not isinstance(expected, bytes):  # pydicom refuses it: so does encode_dataset, with its error
        return
    # Deflated data sets, and those with no transfer syntax (de-identification sets one), are
    # left to pydicom; all else is written here
    assert bool(fallbacks) == (syntax == DeflatedExplicitVRLittleEndian or (syntax is None and not deid))
    assert isinstance(got, bytes)
    _assert_round_trip(got, new)


# -- the benchmark's CT series -------------------------------------------------------------------


def _ct_series(folder: Path, slices: int) -> list[Path]:
    bench = runpy.run_path(str(ROOT / "bench" / "bench_ingest.py"))
    return list(bench["ct_series"](folder, slices))


@pytest.fixture(scope="module")
def ct_slice(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _ct_series(tmp_path_factory.mktemp("ct"), 1)[0].read_bytes()


@pytest.mark.parametrize("options", OPTION_SETS)
def test_ct_slice_encodes_as_ingest_did(ct_slice: bytes, options: frozenset[Option], fallbacks) -> None:
    data = _same_as_ingest(ct_slice, deid=options, fallbacks=fallbacks)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.PatientID != "BENCH-0001"
    assert ds.PixelData == pydicom.dcmread(io.BytesIO(ct_slice)).PixelData


def test_ct_slice_is_written_without_pydicom_and_its_pixels_are_not_copied(
    ct_slice: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = open_dataset(ct_slice)
    deidentify_dataset(ds, config(), context(), in_place=True)
    expected = b"".join(old_encode(copy.deepcopy(ds)))
    _no_whole_writes(monkeypatch)
    pieces = encode_dataset(ds)
    assert b"".join(pieces) == expected
    assert len(pieces) == 2  # header, then Pixel Data's value as read
    assert pieces[-1] is ds.PixelData


def test_ct_slice_as_implicit_vr(ct_slice: bytes, fallbacks: list[Dataset]) -> None:
    ds = pydicom.dcmread(io.BytesIO(ct_slice))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    raw = to_bytes(ds)
    assert pydicom.dcmread(io.BytesIO(raw)).original_encoding == (True, True)
    for deid in (None, frozenset()):
        _same_as_ingest(raw, deid=deid, fallbacks=fallbacks)


def test_ct_slice_not_read_from_a_file(ct_slice: bytes, fallbacks: list[Dataset]) -> None:
    """A data set built in memory: pydicom decodes every element and corrects ambiguous VRs."""
    ds = pydicom.dcmread(io.BytesIO(ct_slice))
    built = Dataset()
    built.file_meta = FileMetaDataset(copy.deepcopy(ds.file_meta))
    for elem in ds:
        built.add(copy.deepcopy(elem))
    built.LUTDescriptor = [256, 0, 16]  # 'US or SS': corrected by pydicom before writing
    assert built.original_encoding == (None, None)
    expected = b"".join(old_encode(copy.deepcopy(built)))
    assert b"".join(encode_dataset(built)) == expected
    assert fallbacks == []


def _prepared(path: Path, work: Path) -> tuple[bytes, Any]:
    """What ingest's ``_prepare_dicom`` stages for ``path`` (pixel check, in-place de-id, encode)."""
    staged: list[bytes] = []
    work.mkdir(exist_ok=True)
    got = ingest._prepare_dicom(
        Candidate(path.name, path),
        config=config(),
        ctx=context(),
        limits=IngestLimits(),
        work=work,
        stage=lambda _target, data: staged.append(b"".join(data)),
    )
    return staged[0], got.info


@pytest.mark.parametrize(
    "name", ["ct", "ct-implicit", "CT_small.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm"]
)
def test_wired_into_ingest(
    name: str, ct_slice: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallbacks: list[Dataset]
) -> None:
    """``_prepare_dicom`` stages the same file with ``encode_dataset`` as with pydicom's writer."""
    path = tmp_path / "in.dcm"
    if name.startswith("ct"):
        ds = pydicom.dcmread(io.BytesIO(ct_slice))
        if name == "ct-implicit":
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        path.write_bytes(to_bytes(ds))
    else:
        path.write_bytes(Path(get_testdata_file(name)).read_bytes())
    # pydicom's writer in place of encode_dataset, then encode_dataset
    monkeypatch.setattr(ingest, "encode_dataset", old_encode)
    expected, info = _prepared(path, tmp_path / "old")
    monkeypatch.setattr(ingest, "encode_dataset", encode_dataset)
    got, info_new = _prepared(path, tmp_path / "new")
    assert got == expected
    assert info_new == info
    assert fallbacks == []


# -- multi-frame ---------------------------------------------------------------------------------


def _multiframe(syntax: str) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDate = "Multi^Frame", "MF-1", "20240101"
    ds.Modality = "CT"
    ds.NumberOfFrames = 3
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = -5  # 'US or SS' in the dictionary
    ds.PixelData = np.arange(-5, 3 * 16 * 16 - 5, dtype=np.int16).tobytes()
    return to_bytes(ds)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_multiframe(syntax: str, fallbacks: list[Dataset]) -> None:
    raw = _multiframe(syntax)
    for deid in (None, frozenset()):
        data = _same_as_ingest(raw, deid=deid, fallbacks=fallbacks)
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.NumberOfFrames == 3 and back.pixel_array.shape == (3, 16, 16)
        assert back.SmallestImagePixelValue == -5


def test_multiframe_test_file(fallbacks: list[Dataset]) -> None:
    raw = Path(get_testdata_file("emri_small.dcm")).read_bytes()  # 10 frames, explicit VR
    for deid in (None, frozenset()):
        _same_as_ingest(raw, deid=deid, fallbacks=fallbacks)


# -- every VR, private and nested elements -------------------------------------------------------


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_planted_data_set(syntax: str, options: frozenset[Option], fallbacks: list[Dataset]) -> None:
    src = planted_dataset()
    src.file_meta.TransferSyntaxUID = syntax
    raw = to_bytes(src)
    _same_as_ingest(raw, deid=None, fallbacks=fallbacks)
    data = _same_as_ingest(raw, deid=options, fallbacks=fallbacks)
    assert b"PHI" not in data or options


def test_planted_data_set_in_memory(fallbacks: list[Dataset]) -> None:
    built = planted_dataset()
    expected = b"".join(old_encode(copy.deepcopy(built)))
    assert b"".join(encode_dataset(built)) == expected
    assert fallbacks == []


# -- what pydicom changes or adds on writing -----------------------------------------------------


def _read(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def _both(ds: Dataset, fallbacks: list[Dataset]) -> bytes:
    twin = copy.deepcopy(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = b"".join(old_encode(twin))
    got = b"".join(encode_dataset(ds))
    assert got == expected
    assert fallbacks == []
    return got


def test_file_meta_out_of_step_with_the_data_set(fallbacks: list[Dataset]) -> None:
    """dcmwrite writes the data set's SOP Instance UID into its copy of the file meta, and adds
    the elements PS3.10 7.1 requires; ds.file_meta itself is left alone."""
    ds = _read("CT_small.dcm")
    ds.SOPInstanceUID = generate_uid()
    del ds.file_meta.FileMetaInformationVersion
    del ds.file_meta.ImplementationVersionName
    before = copy.deepcopy(ds.file_meta)
    data = _both(ds, fallbacks)
    assert ds.file_meta == before
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.FileMetaInformationVersion == b"\x00\x01"


def test_character_set_changed_after_reading(fallbacks: list[Dataset]) -> None:
    """pydicom decodes every element and encodes the text again in the new character set."""
    ds = pydicom.dcmread(get_charset_files("chrFren.dcm")[0])
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    ds.SpecificCharacterSet = "ISO_IR 192"
    data = _both(ds, fallbacks)
    assert "Buc^Jérôme".encode() in data


def test_elements_after_the_pixel_data(fallbacks: list[Dataset]) -> None:
    ds = _read("CT_small.dcm")
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 6)  # Data Set Trailing Padding
    raw = to_bytes(ds)
    _same_as_ingest(raw, deid=None, fallbacks=fallbacks)
    _same_as_ingest(raw, deid=frozenset(), fallbacks=fallbacks)


def test_odd_length_pixel_data_is_padded(fallbacks: list[Dataset]) -> None:
    ds = _read("OBXXXX1A.dcm")  # 8-bit native
    ds.PixelData = ds.PixelData + b"\x07"
    data = _both(ds, fallbacks)
    assert pydicom.dcmread(io.BytesIO(data)).PixelData == ds.PixelData + b"\x00"


def test_long_value_with_a_16_bit_length_is_written_as_un(fallbacks: list[Dataset]) -> None:
    """PS3.5 6.2.2: pydicom warns and writes it as UN; so does encode_dataset."""
    ds = _read("CT_small.dcm")
    ds.StudyDescription = "x" * 70_000
    with pytest.warns(UserWarning, match="exceeds the size of 64 kByte"):
        encode_dataset(copy.deepcopy(ds))
    data = _both(ds, fallbacks)
    assert b"\x08\x00\x30\x10UN\x00\x00" in data


def test_encapsulated_pixel_data_and_big_endian(fallbacks: list[Dataset]) -> None:
    for name in ("JPEG2000.dcm", "MR_small_bigendian.dcm", "rtplan.dcm"):
        ds = _read(name)
        deidentify_dataset(ds, config(), context(), in_place=True)
        _both(ds, fallbacks)


def test_refusals_are_pydicoms(fallbacks: list[Dataset]) -> None:
    ds = _read("CT_small.dcm")
    del ds.SOPInstanceUID
    del ds.file_meta.MediaStorageSOPInstanceUID
    expected = _outcome(old_encode, copy.deepcopy(ds))
    assert expected[0] == "AttributeError"
    assert _outcome(encode_dataset, ds) == expected
    assert len(fallbacks) == 1
