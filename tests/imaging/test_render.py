"""Rendering against pydicom's own windowing (PS3.3 C.11.2.1.2) and round trips through Pillow."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_voi_lut, apply_windowing

from medlabel.errors import InvalidInput
from medlabel.imaging import (
    PRESETS,
    Window,
    apply_window,
    auto_window,
    encode,
    raw_export,
    read_dicom,
    render_frame,
)
from medlabel.imaging.model import Image, ImageInfo, Photometric


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # pydicom's sigmoid
@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("center", "width"), [(40.0, 400.0), (-600.0, 1500.0), (0.0, 1.0), (100.5, 3.0)])
def test_apply_window_matches_pydicom(function: str, center: float, width: float) -> None:
    if function == "LINEAR" and width < 2:
        width = 2.0
    ds = pydicom.Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 16
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    values = np.arange(-2048, 2048, dtype=np.int16)
    ref = apply_windowing(values, ds)  # in -32768..32767
    ref8 = np.round((ref - -32768.0) / 65535.0 * 255.0)
    ours = apply_window(values, Window(center, width, function=function))
    assert ours.dtype == np.uint8
    assert np.abs(ours.astype(float) - ref8).max() <= 1.0
    if function != "SIGMOID":
        assert ours.min() == 0 and ours.max() == 255


def test_linear_window_boundaries_exact() -> None:
    w = Window(center=100.0, width=201.0)
    # C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 -> ymin; x > c - 0.5 + (w-1)/2 -> ymax
    out = apply_window(np.array([-0.5, 1.0, 199.5, 199.6]), w)
    assert out.tolist()[0] == 0 and out.tolist()[1] > 0 and out.tolist()[2] == 255 and out.tolist()[3] == 255


def test_voi_lut_window_of_real_file() -> None:
    img = read_dicom(str(get_testdata_file("MR_small.dcm")))
    ds = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    ref = apply_voi_lut(ds.pixel_array, ds).astype(float)
    bits = int(ds.BitsStored)
    ymin = -(2 ** (bits - 1)) if ds.PixelRepresentation else 0
    ref8 = np.round((ref - ymin) / (2**bits - 1) * 255)
    ours = render_frame(img).astype(float)
    assert np.abs(ours - ref8).max() <= 1.0
    assert ours.std() > 10
    assert ours.shape == (64, 64)
    w = img.info.windows[0]
    np.testing.assert_array_equal(ours, apply_window(img.modality_pixels(0), w))


def test_monochrome1_is_inverted() -> None:
    pixels = np.array([[[0, 500, 1000]]], dtype=np.uint16)
    base = dict(kind="dicom", rows=1, columns=3, bits_allocated=16, bits_stored=16)
    m2 = Image(ImageInfo(**base, photometric=Photometric.MONOCHROME2), pixels)  # type: ignore[arg-type]
    m1 = Image(ImageInfo(**base, photometric=Photometric.MONOCHROME1), pixels)  # type: ignore[arg-type]
    w = Window(500.0, 1001.0)
    a, b = render_frame(m2, window=w), render_frame(m1, window=w)
    np.testing.assert_array_equal(a.astype(int) + b.astype(int), 255)
    assert a[0, 0] == 0 and b[0, 0] == 255


def test_presets_and_ct_render() -> None:
    assert PRESETS["ct_lung"] == Window(-600.0, 1500.0, "CT lung")
    assert (PRESETS["ct_brain"].center, PRESETS["ct_brain"].width) == (40.0, 80.0)
    img = read_dicom(str(get_testdata_file("CT_small.dcm")))
    hu = img.modality_pixels(0)
    bone = render_frame(img, window="ct_bone")
    lung = render_frame(img, window="CT_LUNG")
    np.testing.assert_array_equal(bone, apply_window(hu, PRESETS["ct_bone"]))
    assert not np.array_equal(bone, lung)
    with pytest.raises(InvalidInput, match="unknown window preset"):
        render_frame(img, window="ct_nope")


def test_auto_window_percentiles() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(1000, 100, 100_000)
    values[:10] = 1e6  # outliers must not stretch the window
    w = auto_window(values)
    lo, hi = np.percentile(values, [0.5, 99.5])
    assert w.center - w.width / 2 == pytest.approx(lo)
    assert w.center + w.width / 2 == pytest.approx(hi)
    out = apply_window(values, w)
    assert (out == 0).mean() == pytest.approx(0.005, abs=0.001)
    assert (out == 255).mean() == pytest.approx(0.005, abs=0.001)


def test_colour_render_and_16bit_colour() -> None:
    img = read_dicom(str(get_testdata_file("SC_rgb.dcm")))
    np.testing.assert_array_equal(render_frame(img), img.pixels[0])
    img16 = read_dicom(str(get_testdata_file("SC_rgb_16bit.dcm")))
    out = render_frame(img16)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.round(img16.pixels[0] / 65535 * 255).astype(np.uint8))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_round_trip_and_size(fmt: str) -> None:
    yy, xx = np.mgrid[0:300, 0:200]
    gray = ((xx + yy) % 256).astype(np.uint8)
    data = encode(gray, fmt, quality=95)  # type: ignore[arg-type]
    back = np.asarray(PILImage.open(io.BytesIO(data)).convert("L"))
    assert back.shape == (300, 200)
    if fmt == "png":
        np.testing.assert_array_equal(back, gray)
    small = PILImage.open(io.BytesIO(encode(gray, fmt, size=150)))  # type: ignore[arg-type]
    assert small.size == (100, 150)
    assert PILImage.open(io.BytesIO(data)).format.lower() == fmt


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(InvalidInput, match="uint8"):
        encode(np.zeros((4, 4), dtype=np.uint16))
    with pytest.raises(InvalidInput, match="quality"):
        encode(np.zeros((4, 4), dtype=np.uint8), "jpeg", quality=0)
    with pytest.raises(InvalidInput, match="format"):
        encode(np.zeros((4, 4), dtype=np.uint8), "gif")  # type: ignore[arg-type]


def test_raw_export() -> None:
    img = read_dicom(str(get_testdata_file("CT_small.dcm")))
    raw = raw_export(img, "int16")
    assert raw.dtype == "<i2" and raw.shape == (1, 128, 128)
    back = np.frombuffer(raw.data, dtype=raw.dtype).reshape(raw.shape)
    np.testing.assert_array_equal(back, img.modality_pixels())
    f = raw_export(img, "float32")
    assert f.dtype == "<f4" and len(f.data) == 128 * 128 * 4
    with pytest.raises(InvalidInput, match="int16"):
        raw_export(np.array([40000.0]), "int16")
    with pytest.raises(InvalidInput, match="integral"):
        raw_export(np.array([0.5]), "int16")


def test_window_validation() -> None:
    with pytest.raises(InvalidInput, match=r"\(0028,1051\)"):
        Window(0.0, 0.5)
    with pytest.raises(InvalidInput, match="VOI LUT Function"):
        Window(0.0, 10.0, function="CUBIC")


def test_modality_lut_sequence_matches_pydicom() -> None:
    from pydicom.pixels import apply_modality_lut

    path = str(get_testdata_file("mlut_18.dcm"))
    img = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert img.info.modality_lut is not None and img.info.modality_lut.first_mapped == -2048
    np.testing.assert_array_equal(img.modality_pixels(0), apply_modality_lut(ds.pixel_array, ds))
    assert not np.array_equal(img.modality_pixels(0), img.pixels[0])  # the LUT is not the identity


def test_voi_lut_sequence_matches_pydicom() -> None:
    path = str(get_testdata_file("vlut_04.dcm"))
    img = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert img.info.has_voi_lut_sequence and len(img.info.voi_luts) == 1
    ref = apply_voi_lut(ds.pixel_array, ds).astype(float)  # 16-bit LUT output
    ours = render_frame(img)
    np.testing.assert_array_equal(ours, np.round(ref / 65535 * 255).astype(np.uint8))
    # an explicit window overrides the LUT
    assert not np.array_equal(render_frame(img, window=Window(100.0, 50.0)), ours)
