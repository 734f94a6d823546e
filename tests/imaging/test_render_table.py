"""The fast rendering paths against the plain ones: windowing through a lookup table over the
integer range must give exactly the float64 maths, and the fast PNG writer must decode to the
very pixels it was given (with ISA-L and with the zlib fallback)."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medlabel.imaging import Window, apply_window, encode, read_dicom, render_frame
from medlabel.imaging import render as R
from medlabel.imaging.model import Image, ImageInfo, Photometric

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.dtype(">i2"), np.dtype(">u2")]


def _ranges(dt: np.dtype) -> list[tuple[int, int]]:
    info = np.iinfo(dt)
    lo, hi = int(info.min), int(info.max)
    out = [(lo, min(hi, lo + 3000)), (max(lo, hi - 3000), hi), (max(lo, -1024), min(hi, 3071)), (0, 0)]
    if lo < 0:
        out.append((-5, 5))
    return out


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("invert", [False, True])
def test_table_windowing_equals_float_maths(dtype: np.dtype, function: str, invert: bool) -> None:
    rng = np.random.default_rng(7)
    dt = np.dtype(dtype)
    for lo, hi in _ranges(dt):
        values = rng.integers(lo, hi, size=(90, 70), endpoint=True, dtype=np.int64).astype(dt)
        values.flat[0], values.flat[-1] = lo, hi  # the range's ends are in the table
        for center, width in ((float(lo + hi) / 2, max(1.0, (hi - lo) / 3)), (40.0, 400.0), (0.5, 1.0)):
            w = Window(center, width, "", function)
            fast = apply_window(values, w, invert=invert)
            slow = R._window_float(values, w, invert)  # the maths, element by element
            assert R.map_by_table(values, lambda v, w=w: R._window_float(v, w, invert)) is not None
            np.testing.assert_array_equal(fast, slow, err_msg=f"{dt} {lo}..{hi} {w}")


def test_non_contiguous_planes_use_the_table_too() -> None:
    rng = np.random.default_rng(1)
    vol = rng.integers(-1024, 2000, size=(80, 96, 100), dtype=np.int16)
    w = Window(40.0, 350.0)
    for plane in (vol[:, 7, :], vol[:, :, 9], vol[3, ::2, ::-1]):
        assert not plane.flags.c_contiguous
        assert R.map_by_table(plane, lambda v: R._window_float(v, w, False)) is not None
        np.testing.assert_array_equal(apply_window(plane, w), R._window_float(plane, w, False))


def test_table_is_skipped_where_it_does_not_pay() -> None:
    def fn(v: np.ndarray) -> np.ndarray:
        return R._window_float(v, Window(0.0, 10.0), False)

    assert R.map_by_table(np.zeros((10, 10), dtype=np.int16), fn) is None  # few values
    assert R.map_by_table(np.zeros((100, 100), dtype=np.float32), fn) is None  # not integers
    wide = np.arange(10_000, dtype=np.int32).reshape(100, 100) * 1000  # range wider than the array
    assert R.map_by_table(wide, fn) is None
    np.testing.assert_array_equal(apply_window(wide, Window(0.0, 10.0)), fn(wide))


def _plain_render(image: Image, window: Window | None = None) -> np.ndarray:
    """render_frame as it was before lookup tables: modality values, then float64 VOI."""
    invert = image.info.photometric is Photometric.MONOCHROME1
    values = image.modality_pixels(0)
    if window is None and image.info.voi_luts:
        lut = image.info.voi_luts[0]
        out = np.clip(lut.apply(values).astype(np.float64) / float(2**lut.bits - 1), 0.0, 1.0)
        return np.round((1.0 - out if invert else out) * 255.0).astype(np.uint8)
    w = window or R.resolve_window(image, None)
    return R._window_float(values, w, invert)


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "mlut_18.dcm", "vlut_04.dcm", "JPEG2000.dcm", "RG1_UNCR.dcm"],
)
def test_render_frame_of_real_files_equals_the_plain_pipeline(name: str) -> None:
    img = read_dicom(str(get_testdata_file(name)))
    if img.info.is_color:
        pytest.skip("colour")
    assert img.pixels.dtype.kind in "iu"
    np.testing.assert_array_equal(render_frame(img), _plain_render(img))
    w = Window(float(np.median(img.modality_pixels(0))), 123.0, "", "LINEAR_EXACT")
    np.testing.assert_array_equal(render_frame(img, window=w), _plain_render(img, w))


@pytest.mark.parametrize("slope", [1.0, 0.5, 2.5, -1.0])
@pytest.mark.parametrize("intercept", [0.0, -1024.0, 0.25])
@pytest.mark.parametrize("photometric", [Photometric.MONOCHROME2, Photometric.MONOCHROME1])
def test_render_frame_with_rescale_equals_the_plain_pipeline(
    slope: float, intercept: float, photometric: Photometric
) -> None:
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 4096, size=(1, 80, 90), dtype=np.uint16)
    info = ImageInfo(
        kind="dicom",
        rows=80,
        columns=90,
        bits_allocated=16,
        bits_stored=12,
        rescale_slope=slope,
        rescale_intercept=intercept,
        photometric=photometric,
        windows=(Window(300.0 * slope + intercept, 500.0 * abs(slope) + 1),),
    )
    img = Image(info, stored)
    np.testing.assert_array_equal(render_frame(img), _plain_render(img))
    auto = Image(replace(info, windows=()), stored)  # automatic window from percentiles
    np.testing.assert_array_equal(render_frame(auto), _plain_render(auto))


def _decode(png: bytes) -> np.ndarray:
    im = PILImage.open(io.BytesIO(png))
    im.load()
    return np.asarray(im)


@pytest.mark.parametrize("use_isal", [True, False], ids=["isal", "zlib"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (37, 53), (512, 512), (20, 30, 3), (1, 5, 3)])
def test_fast_png_decodes_to_the_same_pixels(monkeypatch, use_isal: bool, shape: tuple[int, ...]) -> None:
    if use_isal and R._isal is None:
        pytest.skip("isal not installed")
    if not use_isal:
        monkeypatch.setattr(R, "_isal", None)
    rng = np.random.default_rng(sum(shape))
    noise = rng.integers(0, 256, size=shape, dtype=np.uint8)
    smooth = (np.indices(shape).sum(axis=0) * 3 % 256).astype(np.uint8)
    for pixels in (noise, smooth, np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)):
        data = encode(pixels, "png")
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(_decode(data), pixels)
        np.testing.assert_array_equal(_decode(R.encode_png(pixels)), pixels)


def test_fast_png_of_a_ct_slice_is_no_bigger_than_pillow_level_6() -> None:
    img = read_dicom(str(get_testdata_file("CT_small.dcm")))
    pixels = render_frame(img)
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, "PNG", compress_level=6)
    assert len(encode(pixels, "png")) <= 1.3 * len(buf.getvalue())
    np.testing.assert_array_equal(_decode(encode(pixels, "png", size=64)).shape, (64, 64))
