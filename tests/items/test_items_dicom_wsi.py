"""DICOM whole-slide series import as one ``slide`` item served by /dzi and /tiles.

The source pyramid is written with pydicom (``tests/imaging/phantom.make_dicom_wsi``) and given a
patient identity; a LABEL instance carries the planted name in its pixels and an OVERVIEW
instance (in a series of its own) a planted barcode. Tiles are compared with wsidicom's region
reads of the *source* files (the reference reader), not with our own reader.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, VLWholeSlideMicroscopyImageStorage, generate_uid
from sqlalchemy import func, select

from medlabel.items.models import Instance, Item
from medlabel.storage.db import session_scope

from ..foundation.helpers import make_project, make_user, session_headers
from ..imaging.phantom import make_dicom_wsi
from ..imaging.test_wsi import smooth_rgb
from .factories import PATIENT_ID, PATIENT_NAME, by_name, import_via_api

wsidicom = pytest.importorskip("wsidicom")

WIDTH, HEIGHT = 1300, 1000
LABEL_TEXT = b"LABEL: DOE JANE Q / MRN-0042-7781"  # written into the label's pixel bytes
BARCODE = "BC-SLIDE-4711-DOE"
PLANTED = (PATIENT_ID.encode(), PATIENT_NAME.encode(), b"Doe^Jane", b"DOE JANE", BARCODE.encode())


@pytest.fixture
def team(runtime):
    uid = make_user(runtime, "boss")
    pid = make_project(runtime, "Pathology", {"boss": ["manager"]})
    return pid, session_headers(runtime, uid)


def _identify(ds: Dataset) -> None:
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240315"
    ds.BarcodeValue = BARCODE
    ds.ContainerIdentifier = BARCODE


def _associated(like: Dataset, flavour: str, pixels: np.ndarray, *, series: str) -> Dataset:
    """A single-frame LABEL/OVERVIEW instance of the slide (native RGB)."""
    h, w = pixels.shape[:2]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = VLWholeSlideMicroscopyImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = like.StudyInstanceUID, series
    ds.FrameOfReferenceUID = like.FrameOfReferenceUID
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", flavour, "NONE"]
    ds.BurnedInAnnotation = "YES"
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.OpticalPathSequence = Sequence([Dataset()])
    ds.OpticalPathSequence[0].OpticalPathIdentifier = "1"
    ds.Rows, ds.Columns = h, w
    ds.NumberOfFrames = 1
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    _identify(ds)
    ds.LabelText = "DOE JANE Q"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def textured(h: int, w: int) -> np.ndarray:
    """A smooth gradient plus random 16-pixel blocks (aligned with JPEG's MCUs, so level 0 stays
    close to the source), so that a tile read one pixel off differs clearly."""
    blocks = np.random.default_rng(7).integers(0, 256, (-(-h // 16), -(-w // 16), 3), dtype=np.uint8)
    noise = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)[:h, :w]
    return (smooth_rgb(h, w) // 2 + noise // 2).astype(np.uint8)


def write_slide(folder: Path) -> tuple[list[Path], Path, Path, list[np.ndarray]]:
    """Three VOLUME levels (level 0 JPEG, others native), a LABEL in the same series and an
    OVERVIEW in another series of the same study. Returns (levels, label, overview, pyramid)."""
    pyramid = make_dicom_wsi(folder, textured(HEIGHT, WIDTH), levels=3, tile=256, jpeg_levels=(0,))
    levels = sorted(folder.glob("level*.dcm"))
    first = None
    for p in levels:
        ds = pydicom.dcmread(p)
        _identify(ds)
        ds.save_as(p, enforce_file_format=True)
        first = first or ds
    assert first is not None
    label = np.full((120, 300, 3), 255, np.uint8)
    label.reshape(-1)[3000 : 3000 + len(LABEL_TEXT)] = np.frombuffer(LABEL_TEXT, np.uint8)  # as pixels
    label_path = folder / "label.dcm"
    _associated(first, "LABEL", label, series=first.SeriesInstanceUID).save_as(
        label_path, enforce_file_format=True
    )
    overview = np.zeros((200, 600, 3), np.uint8)
    overview.reshape(-1)[999 : 999 + len(BARCODE)] = np.frombuffer(BARCODE.encode(), np.uint8)
    overview_path = folder / "overview.dcm"
    _associated(first, "OVERVIEW", overview, series=generate_uid()).save_as(
        overview_path, enforce_file_format=True
    )
    thumb = pyramid[-1][::2, ::2]  # a THUMBNAIL instance in the slide's series
    _associated(first, "THUMBNAIL", np.ascontiguousarray(thumb), series=first.SeriesInstanceUID).save_as(
        folder / "thumbnail.dcm", enforce_file_format=True
    )
    return levels, label_path, overview_path, pyramid


def _tile(client, h, item_id, level, col, row) -> np.ndarray:
    r = client.get(f"/api/v1/items/{item_id}/tiles/{level}/{col}_{row}.jpeg", headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    return np.asarray(PILImage.open(io.BytesIO(r.content)).convert("RGB")).astype(float)


def q80(pixels: np.ndarray) -> np.ndarray:
    """What the tile encoder's JPEG (quality 80, Pillow) makes of ``pixels``."""
    buf = io.BytesIO()
    PILImage.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=80)
    return np.asarray(PILImage.open(buf).convert("RGB")).astype(float)


def matches(got: np.ndarray, want: np.ndarray, off: np.ndarray, tol: float = 1.5) -> None:
    """``got`` is ``want`` through the tile's JPEG, and clearly not ``off`` (a pixel or two off)."""
    assert got.shape == want.shape == off.shape
    err, err_off = np.abs(got - q80(want)).mean(), np.abs(got - q80(off)).mean()
    assert err < tol and err_off > 3 * tol, (err, err_off)


def test_wsi_series_is_one_slide_served_by_dzi(client, runtime, team, tmp_path):
    pid, h = team
    levels, label, overview, pyramid = write_slide(tmp_path / "src")
    assert LABEL_TEXT[:20] in label.read_bytes() and BARCODE.encode() in overview.read_bytes()
    thumbnail = label.parent / "thumbnail.dcm"
    report = import_via_api(client, runtime, h, pid, [*levels, label, overview, thumbnail])
    files = by_name(report)
    assert files[thumbnail.name]["status"] == "skipped" and "THUMBNAIL" in files[thumbnail.name]["message"]

    # one slide item of the three VOLUME instances; LABEL and OVERVIEW skipped with the reason
    ids = {files[p.name]["item_id"] for p in levels}
    assert len(ids) == 1 and None not in ids, files
    (item_id,) = ids
    assert report["items"] == [item_id]
    assert all(files[p.name]["status"] == "imported" for p in levels)
    for p, flavour in ((label, "LABEL"), (overview, "OVERVIEW")):
        assert files[p.name]["status"] == "skipped", files[p.name]
        assert flavour in files[p.name]["message"] and "PS3.15" in files[p.name]["message"]
        assert not files[p.name].get("item_id")

    item = client.get(f"/api/v1/items/{item_id}", headers=h).json()
    assert (item["kind"], item["source_format"], item["width"], item["height"]) == (
        "slide",
        "dicom",
        WIDTH,
        HEIGHT,
    )
    assert item["meta"]["levels"] == [[a.shape[1], a.shape[0]] for a in pyramid]
    assert item["meta"]["mpp"] == pytest.approx([0.25, 0.25])
    notes = [w for w in item["meta"]["warnings"] if "not stored" in w]
    assert any(n.startswith("LABEL instance ") for n in notes), item["meta"]["warnings"]
    assert any(n.startswith("OVERVIEW instance ") for n in notes)  # other series, same study
    assert not any("label.dcm" in w or "overview.dcm" in w for w in item["meta"]["warnings"])
    assert item["patient_pseudonym"] and item["patient_pseudonym"] != PATIENT_ID

    # the label and overview are not stored; nothing planted survives in any stored blob
    with session_scope(runtime.sessions) as s:
        insts = s.scalars(
            select(Instance).where(Instance.item_id == item_id).order_by(Instance.slice_index)
        ).all()
        assert len(insts) == 3
        stored_sops = {i.sop_instance_uid for i in insts}
        assert s.scalar(select(func.count(Instance.id))) == 3
    digests = sorted(runtime.blobs.digests())
    assert sorted(i.blob_sha256 for i in insts) == digests
    for d in digests:
        data = runtime.blobs.get(d)
        for needle in PLANTED + (LABEL_TEXT[:12],):
            assert needle not in data, (d, needle)
        ds = pydicom.dcmread(io.BytesIO(data))
        assert list(ds.ImageType)[2] == "VOLUME" and ds.SOPInstanceUID in stored_sops
        assert str(ds.PatientName) != PATIENT_NAME and not ds.get("BarcodeValue")

    # Deep Zoom descriptor
    r = client.get(f"/api/v1/items/{item_id}/dzi", headers=h)
    assert r.status_code == 200
    assert all(f'{k}="{v}"' in r.text for k, v in (("TileSize", 254), ("Overlap", 1), ("Format", "jpeg")))
    assert 'Width="1300"' in r.text and 'Height="1000"' in r.text
    top = 11  # ceil(log2(1300))

    # tiles against wsidicom's reads of the source pyramid
    src = tmp_path / "ref"
    src.mkdir()
    for p in levels:
        (src / p.name).write_bytes(p.read_bytes())
    with wsidicom.WsiDicom.open(src) as ref:

        def read(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
            return np.asarray(ref.read_region((x, y), level, (w, h)).convert("RGB")).astype(float)

        # full resolution, tile (1, 2): x 253..509, y 507..763 (overlap 1 on each inner side)
        matches(
            _tile(client, h, item_id, top, 1, 2), read(0, 253, 507, 256, 256), read(0, 252, 506, 256, 256)
        )
        # scale 2 = native level 1: tile (2, 1) of 650x500 -> x 507..650, y 253..500
        matches(
            _tile(client, h, item_id, top - 1, 2, 1), read(1, 507, 253, 143, 247), read(1, 506, 252, 143, 247)
        )

        # scale 8: the whole slide in one tile, from native level 2 (downsample 4) halved
        def halved(shift: int) -> np.ndarray:
            lv2 = np.roll(read(2, 0, 0, 325, 250), (shift, shift), axis=(0, 1)).astype(np.uint8)
            resized = PILImage.fromarray(lv2).resize((163, 125), PILImage.Resampling.LANCZOS)
            return np.asarray(resized).astype(float)

        matches(_tile(client, h, item_id, top - 3, 0, 0), halved(0), halved(2))
    assert client.get(f"/api/v1/items/{item_id}/tiles/{top}/99_0.jpeg", headers=h).status_code == 404

    # the rendered frame 0 is the slide thumbnail, from the pyramid
    r = client.get(f"/api/v1/items/{item_id}/frames/0/rendered", params={"size": 260}, headers=h)
    assert r.status_code == 200, r.text
    thumb = np.asarray(PILImage.open(io.BytesIO(r.content)).convert("RGB")).astype(float)
    assert thumb.shape == (200, 260, 3)
    # from native level 2 (325x250, the coarsest at least 260 wide), Lanczos-scaled, PNG: exact
    lv2 = PILImage.fromarray(pyramid[2]).resize((260, 200), PILImage.Resampling.LANCZOS)
    assert np.abs(thumb - np.asarray(lv2)).max() <= 1


def test_reimport_is_a_no_op(client, runtime, team, tmp_path):
    pid, h = team
    levels, label, overview, _ = write_slide(tmp_path / "src")
    first = by_name(import_via_api(client, runtime, h, pid, [*levels, label, overview]))
    blobs_before = sorted(runtime.blobs.digests())
    again = by_name(import_via_api(client, runtime, h, pid, [*levels, label, overview]))
    assert all(again[p.name]["status"] == "duplicate" for p in levels), again
    assert again[label.name]["status"] == "skipped"
    assert sorted(runtime.blobs.digests()) == blobs_before
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Item.id))) == 1
        assert s.scalar(select(func.count(Instance.id))) == 3
    # one more level of the same series, alone: the slide exists, nothing is added to it
    item_id = first[levels[0].name]["item_id"]
    extra = tmp_path / "extra"
    make_dicom_wsi(extra, smooth_rgb(200, 300), levels=1, tile=128, jpeg_levels=())
    ds = pydicom.dcmread(extra / "level0.dcm")
    ref = pydicom.dcmread(levels[0], stop_before_pixels=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.StudyInstanceUID, ref.SeriesInstanceUID
    _identify(ds)
    ds.save_as(extra / "level0.dcm", enforce_file_format=True)
    late = by_name(import_via_api(client, runtime, h, pid, [extra / "level0.dcm"]))["level0.dcm"]
    assert late["status"] == "duplicate" and f"slide item {item_id}" in late["message"], late
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Instance.id))) == 3


def test_broken_pyramid_is_refused_whole(client, runtime, team, tmp_path):
    pid, h = team
    levels, _, _, _ = write_slide(tmp_path / "src")
    ds = pydicom.dcmread(levels[1])  # native RGB 650x500 in 256-tiles: 3x2 = 6 frames
    assert int(ds.NumberOfFrames) == 6
    ds.NumberOfFrames = 4
    ds.PixelData = ds.PixelData[: 4 * 256 * 256 * 3]
    ds.save_as(levels[1], enforce_file_format=True)
    files = by_name(import_via_api(client, runtime, h, pid, levels))
    for p in levels:
        assert files[p.name]["status"] == "error", files[p.name]
        assert "DICOM-WSI series" in files[p.name]["message"]
        assert "Number of Frames 4" in files[p.name]["message"]
    assert list(runtime.blobs.digests()) == []
    with session_scope(runtime.sessions) as s:
        assert s.scalar(select(func.count(Item.id))) == 0
