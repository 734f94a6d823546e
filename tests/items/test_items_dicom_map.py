"""Big DICOM files are imported with their Pixel Data mapped, not read
(``medlabel.imaging.dicom_map``): the staged (de-identified) file, the header info and the
warnings are exactly those of the whole-file read; other layouts fall back to it."""

from __future__ import annotations

import io
import mmap
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataelem import RawDataElement

from medlabel.errors import MedlabelError
from medlabel.imaging.dicom_map import MappedWindow, open_mapped
from medlabel.items import ingest
from medlabel.items.unpack import Candidate, IngestLimits
from tests.deid.deid_factories import config, context

from ..foundation.helpers import make_project, make_user, session_headers
from .factories import import_via_api
from .test_items_dicom_wsi import write_slide

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MAPPABLE = [
    "CT_small.dcm",  # explicit VR, native, trailing padding
    "MR_small_implicit.dcm",
    "emri_small.dcm",  # multi-frame
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPEGLSNearLossless_08.dcm",
    "MR_small_jp2klossless.dcm",
]


def _prepare(path: Path, work: Path, *, mapped: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """``_prepare_dicom`` of ``path``: the staged bytes, the info, the warnings, and whether the
    pixels it staged were a view of the mapped file."""
    monkeypatch.setenv(ingest.MAP_BYTES_ENV, "0" if mapped else str(1 << 40))
    staged: list[list[Any]] = []
    work.mkdir(exist_ok=True)
    try:
        got = ingest._prepare_dicom(
            Candidate(path.name, path),
            config=config(),
            ctx=context(),
            limits=IngestLimits(),
            work=work,
            stage=lambda _target, pieces: staged.append(list(pieces)),
        )
    except MedlabelError as exc:
        return ("error", type(exc).__name__, exc.message)
    views = [p for p in staged[0] if isinstance(p, memoryview) and isinstance(p.obj, mmap.mmap)]
    return b"".join(staged[0]), got.info, tuple(got.warnings), tuple(got.reasons), bool(views)


@pytest.mark.parametrize("name", MAPPABLE)
def test_mapped_import_is_the_whole_file_import(name, tmp_path, monkeypatch):
    path = tmp_path / name
    path.write_bytes(Path(get_testdata_file(name)).read_bytes())
    whole = _prepare(path, tmp_path / "whole", mapped=False, monkeypatch=monkeypatch)
    mapped = _prepare(path, tmp_path / "mapped", mapped=True, monkeypatch=monkeypatch)
    # a big pixel value is staged as a view of the mapping, not copied (values under 16 KiB are
    # joined to the header; implicit VR: pydicom's OW writer copies them once)
    big = len(pydicom.dcmread(path).PixelData) >= 1 << 14
    assert whole[-1] is False and mapped[-1] is (big and name != "MR_small_implicit.dcm")
    assert mapped[:-1] == whole[:-1]


@pytest.mark.parametrize("path", sorted(get_testdata_files("*.dcm")), ids=lambda p: Path(p).name)
def test_every_test_file_prepares_alike_either_way(path, tmp_path, monkeypatch):
    """Mapped or not (a layout it does not map falls back), the outcome is the same: the staged
    file, or the same error."""
    src = tmp_path / "in.dcm"
    src.write_bytes(Path(path).read_bytes())
    whole = _prepare(src, tmp_path / "whole", mapped=False, monkeypatch=monkeypatch)
    mapped = _prepare(src, tmp_path / "mapped", mapped=True, monkeypatch=monkeypatch)
    if whole[0] == "error":
        assert mapped == whole
    else:
        assert mapped[:-1] == whole[:-1]


def test_layouts_it_does_not_map(tmp_path):
    # big endian and deflated: read whole
    for name in ("MR_small_bigendian.dcm", "image_dfl.dcm"):
        assert open_mapped(get_testdata_file(name)) is None
    # an element after the pixels other than trailing padding: read whole
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for tag in [t for t in ds.keys() if t > 0x7FE00010]:
        del ds[tag]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.add_new(0x7FE10010, "LO", "PRIVATE AFTER PIXELS")
    after = tmp_path / "after.dcm"
    ds.save_as(after, enforce_file_format=True)
    assert open_mapped(after) is None
    # pixels cut short: read whole (which reports the truncation)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(Path(get_testdata_file("JPEG2000.dcm")).read_bytes()[:-20])
    assert open_mapped(cut) is None
    # no pixels at all
    assert open_mapped(get_testdata_file("rtplan.dcm")) is None


def test_the_window_reads_like_a_file():
    data = bytes(range(256)) * 4
    w = MappedWindow(memoryview(data))
    assert w.read(4) == data[:4] and w.tell() == 4
    w.seek(-2, io.SEEK_END)
    assert w.read() == data[-2:] and w.read(10) == b""
    buf = bytearray(5)
    w.seek(10)
    assert w.readinto(buf) == 5 and bytes(buf) == data[10:15]
    ds = open_mapped(get_testdata_file("JPEG2000.dcm"))
    assert ds is not None
    raw = ds.get_item(0x7FE00010)
    assert isinstance(raw, RawDataElement) and isinstance(raw.value, memoryview)


def test_a_mapped_slide_imports_the_same_blobs(client, runtime, tmp_path, monkeypatch):
    """A DICOM-WSI series through the API, mapped and whole: the same stored files."""
    uid = make_user(runtime, "boss")
    a = make_project(runtime, "Whole", {"boss": ["manager"]})
    b = make_project(runtime, "Mapped", {"boss": ["manager"]})
    h = session_headers(runtime, uid)
    monkeypatch.setattr(ingest, "project_secret", lambda key, _pid: b"one secret for both projects")
    levels, label, _overview, _ = write_slide(tmp_path / "src")
    monkeypatch.setenv(ingest.MAP_BYTES_ENV, str(1 << 40))
    import_via_api(client, runtime, h, a, [*levels, label])
    whole = set(runtime.blobs.digests())
    monkeypatch.setenv(ingest.MAP_BYTES_ENV, "0")
    opened: list[Path] = []
    real = ingest.open_mapped

    def spy(path: Path, **kw: Any) -> Any:
        opened.append(Path(path))
        return real(path, **kw)

    monkeypatch.setattr(ingest, "open_mapped", spy)
    report = import_via_api(client, runtime, h, b, [*levels, label])
    assert report["counts"]["imported"] == 3
    assert len(opened) >= 4  # every file was offered to the mapping
    assert set(runtime.blobs.digests()) == whole  # same secret: byte-identical files, deduplicated
