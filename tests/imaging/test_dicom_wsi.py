"""DICOM-WSI pyramids generated with pydicom, read by us and by wsidicom (the reference)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medlabel.errors import InvalidInput, UnsupportedMedia
from medlabel.imaging import DeepZoom, tile_pixels
from medlabel.imaging.dicom_wsi import open_dicom_slide

from .phantom import make_dicom_wsi
from .test_wsi import smooth_rgb


@pytest.fixture(scope="module")
def dicom_pyramid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    folder = tmp_path_factory.mktemp("dwsi")
    pyr = make_dicom_wsi(folder, smooth_rgb(1000, 1300), levels=3, tile=256, jpeg_levels=(0,))
    return folder, pyr


def test_levels_and_mpp(dicom_pyramid: tuple[Path, list[np.ndarray]]) -> None:
    folder, pyr = dicom_pyramid
    slide = open_dicom_slide(folder)
    assert [(lv.width, lv.height) for lv in slide.levels] == [(p.shape[1], p.shape[0]) for p in pyr]
    assert [lv.downsample for lv in slide.levels] == [1.0, 2.0, 4.0]
    assert slide.info.mpp == pytest.approx((0.25, 0.25))
    assert slide.info.vendor == "dicom"


@pytest.mark.parametrize(
    ("level", "x", "y", "w", "h"), [(0, 100, 200, 600, 500), (1, 0, 0, 650, 500), (2, 30, 20, 250, 200)]
)
def test_regions_match_wsidicom_and_source(
    dicom_pyramid: tuple[Path, list[np.ndarray]], level: int, x: int, y: int, w: int, h: int
) -> None:
    folder, pyr = dicom_pyramid
    ours = open_dicom_slide(folder).read_region(level, x, y, w, h)
    src = pyr[level][y : y + h, x : x + w]
    if level == 0:  # JPEG baseline
        assert np.abs(ours.astype(float) - src).mean() < 2.0
    else:
        np.testing.assert_array_equal(ours, src)
    wsidicom = pytest.importorskip("wsidicom")
    with wsidicom.WsiDicom.open(folder) as ref_slide:
        ref = np.asarray(ref_slide.read_region((x, y), level, (w, h)))[..., :3]
    if level == 0:  # two JPEG decoders may differ by a rounding step in chroma upsampling
        assert np.abs(ref.astype(float) - ours).mean() < 0.5
        assert np.abs(ref.astype(int) - ours).max() <= 8
    else:
        np.testing.assert_array_equal(ours, ref)


def test_only_needed_frames_are_decoded(
    dicom_pyramid: tuple[Path, list[np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import medlabel.imaging.dicom_wsi as mod

    folder, _ = dicom_pyramid
    seen: list[int] = []
    real = mod.pdpixels.pixel_array

    def spy(src: object, *, index: int, **kw: object) -> np.ndarray:
        seen.append(index)
        return real(src, index=index, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mod.pdpixels, "pixel_array", spy)
    open_dicom_slide(folder).read_region(0, 300, 300, 100, 100)  # inside tile (1, 1) of a 6-wide grid
    assert seen == [1 * 6 + 1]


def test_dzi_over_dicom_slide(dicom_pyramid: tuple[Path, list[np.ndarray]]) -> None:
    folder, pyr = dicom_pyramid
    slide = open_dicom_slide(folder)
    dz = DeepZoom(1300, 1000, tile_size=254, overlap=1)
    tile = tile_pixels(slide, dz, dz.max_level - 1, 1, 0)  # scale 2 -> native level 1 exactly
    x, y, w, h = dz.tile_bounds(dz.max_level - 1, 1, 0)
    np.testing.assert_array_equal(tile, pyr[1][y : y + h, x : x + w])


def test_folder_without_wsi(tmp_path: Path) -> None:
    shutil.copy(str(get_testdata_file("CT_small.dcm")), tmp_path / "ct.dcm")
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(UnsupportedMedia, match="VOLUME"):
        open_dicom_slide(tmp_path)
    with pytest.raises(InvalidInput, match="not a folder"):
        open_dicom_slide(tmp_path / "nope")
