"""DICOM reader against pydicom's and pydicom-data's own test files (we did not write them)."""

from __future__ import annotations

import io
import os

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medlabel.errors import DicomError, TooLarge, UnsupportedMedia
from medlabel.imaging import Limits, Photometric, read_dicom, read_dicom_info


def _path(name: str) -> str:
    p = get_testdata_file(name)
    if p is None:
        pytest.skip(f"{name} not installed (pydicom-data)")
    return str(p)


# (reference uncompressed, variant) -- lossless: must match exactly
LOSSLESS_PAIRS = [
    ("MR_small.dcm", "MR_small_RLE.dcm"),
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
    ("MR_small.dcm", "MR_small_bigendian.dcm"),
    ("MR_small.dcm", "MR_small_expb.dcm"),
    ("MR_small.dcm", "MR_small_implicit.dcm"),
    ("emri_small.dcm", "emri_small_RLE.dcm"),
    ("emri_small.dcm", "emri_small_big_endian.dcm"),
    ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
    ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
    ("SC_rgb.dcm", "SC_rgb_rle.dcm"),
    ("SC_rgb.dcm", "SC_rgb_expb.dcm"),
    ("SC_rgb_2frame.dcm", "SC_rgb_rle_2frame.dcm"),
    ("SC_rgb_16bit.dcm", "SC_rgb_rle_16bit.dcm"),
    ("SC_rgb_32bit_2frame.dcm", "SC_rgb_rle_32bit_2frame.dcm"),
    ("SC_rgb_small_odd.dcm", "SC_rgb_small_odd_big_endian.dcm"),
    ("US1_UNCR.dcm", "US1_J2KR.dcm"),
    ("693_UNCR.dcm", "693_J2KR.dcm"),
    ("MR2_UNCR.dcm", "MR2_J2KR.dcm"),
    ("OBXXXX1A.dcm", "OBXXXX1A_rle.dcm"),
    ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"),
    ("rtdose.dcm", "rtdose_rle.dcm"),
    ("rtdose.dcm", "rtdose_expb.dcm"),
    ("liver_1frame.dcm", "liver_expb_1frame.dcm"),
]

# lossy: (reference, variant, max mean absolute error in stored units)
LOSSY_PAIRS = [
    ("US1_UNCR.dcm", "US1_J2KI.dcm", 3.0),
    ("693_UNCR.dcm", "693_J2KI.dcm", 80.0),  # ratio 339:1,
    ("SC_rgb.dcm", "SC_rgb_jpeg_dcmtk.dcm", 3.0),
    ("SC_rgb.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", 3.0),
    ("SC_rgb.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", 3.0),
    ("SC_rgb.dcm", "SC_rgb_jls_lossy_line.dcm", 3.0),
    ("SC_rgb.dcm", "SC_ybr_full_422_uncompressed.dcm", 3.0),
    ("SC_rgb_small_odd.dcm", "SC_rgb_small_odd_jpeg.dcm", 6.0),
]


@pytest.mark.parametrize(("ref", "variant"), LOSSLESS_PAIRS)
def test_lossless_variants_decode_to_identical_pixels(ref: str, variant: str) -> None:
    a = read_dicom(_path(ref))
    b = read_dicom(_path(variant))
    assert a.pixels.shape == b.pixels.shape
    assert a.info.photometric == b.info.photometric
    assert b.pixels.dtype.isnative
    np.testing.assert_array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize(("ref", "variant", "tol"), LOSSY_PAIRS)
def test_lossy_variants_are_close_to_uncompressed(ref: str, variant: str, tol: float) -> None:
    a = read_dicom(_path(ref))
    b = read_dicom(_path(variant))
    assert a.pixels.shape == b.pixels.shape
    err = np.abs(a.pixels.astype(np.float64) - b.pixels.astype(np.float64)).mean()
    assert err < tol
    # the comparison can fail: the upside-down image is much further away
    flipped = b.pixels[:, ::-1].astype(np.float64)
    assert np.abs(a.pixels.astype(np.float64) - flipped).mean() > 3 * err
    assert np.corrcoef(a.pixels.ravel().astype(np.float64), b.pixels.ravel().astype(np.float64))[0, 1] > 0.99


def test_ybr_jpeg_is_converted_to_rgb() -> None:
    img = read_dicom(_path("SC_rgb_jpeg_gdcm.dcm"))
    assert img.info.photometric is Photometric.RGB
    assert img.pixels.shape == (1, 100, 100, 3)
    # SC_rgb's top band is pure red (255, 0, 0)
    r, g, b = img.pixels[0, 5, 50].astype(int)
    assert r > 240 and g < 15 and b < 15


def test_palette_color_is_looked_up() -> None:
    ref = pydicom.dcmread(_path("OT-PAL-8-face.dcm"), force=True)
    assert ref.original_encoding == (True, True)  # no File Meta: implicit VR little endian
    ref.file_meta = pydicom.dataset.FileMetaDataset()
    ref.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    img = read_dicom(_path("OT-PAL-8-face.dcm"), force=True)
    assert img.info.photometric is Photometric.RGB
    expected = pydicom.pixels.apply_color_lut(ref.pixel_array, ref)
    np.testing.assert_array_equal(img.pixels[0], expected)
    assert any("File Meta" in w for w in img.warnings)
    assert any("inferred" in w for w in img.warnings)


def test_deflated_and_jpeg_lossless_decode() -> None:
    dfl = read_dicom(_path("image_dfl.dcm"))
    assert dfl.pixels.shape == (1, 512, 512) and dfl.pixels.std() > 0
    ll = read_dicom(_path("JPEG-LL.dcm"))
    ref = pydicom.dcmread(_path("JPEG-LL.dcm")).pixel_array
    np.testing.assert_array_equal(ll.pixels[0], ref)


def test_ct_header_and_rescale() -> None:
    img = read_dicom(_path("CT_small.dcm"))
    ds = pydicom.dcmread(_path("CT_small.dcm"))
    info = img.info
    assert (info.rows, info.columns, info.frames) == (128, 128, 1)
    assert info.modality == "CT"
    assert info.rescale_slope == float(ds.RescaleSlope)
    assert info.rescale_intercept == float(ds.RescaleIntercept)
    assert info.uids.sop_instance_uid == ds.SOPInstanceUID
    assert info.uids.series_instance_uid == ds.SeriesInstanceUID
    assert info.uids.frame_of_reference_uid == ds.FrameOfReferenceUID
    assert info.image_position == tuple(float(v) for v in ds.ImagePositionPatient)
    expected = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_allclose(img.modality_pixels(0), expected)


def test_multiframe_and_frame_selection() -> None:
    full = read_dicom(_path("emri_small.dcm"))
    assert full.info.frames == 10
    some = read_dicom(_path("emri_small.dcm"), frames=[2, 7])
    assert some.info.frames == 2
    np.testing.assert_array_equal(some.pixels, full.pixels[[2, 7]])
    with pytest.raises(DicomError, match="Number of Frames is 10"):
        read_dicom(_path("emri_small.dcm"), frames=[10])


def test_enhanced_ct_geometry_from_functional_groups() -> None:
    info = read_dicom_info(_path("eCT_Supplemental.dcm"))
    assert info.frames == 2
    assert info.pixel_spacing is not None and info.image_orientation is not None


def test_voi_window_read() -> None:
    info = read_dicom_info(_path("MR_small.dcm"))
    ds = pydicom.dcmread(_path("MR_small.dcm"))
    assert info.windows[0].center == float(ds.WindowCenter)
    assert info.windows[0].width == float(ds.WindowWidth)


def test_bytes_and_file_object_sources() -> None:
    data = open(_path("MR_small.dcm"), "rb").read()
    a = read_dicom(data)
    b = read_dicom(io.BytesIO(data))
    np.testing.assert_array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize(
    ("name", "exc", "pattern"),
    [
        ("MR_truncated.dcm", DicomError, r"\(7FE0,0010\).*truncated"),
        ("rtplan_truncated.dcm", UnsupportedMedia, r"RT Plan Storage.*not an image"),
        ("rtplan.dcm", UnsupportedMedia, r"no Pixel Data \(7FE0,0010\)"),
        ("no_meta.dcm", DicomError, r"DICM.*PS3\.10"),
        ("badVR.dcm", DicomError, r"\(0028,0008\).*'1A'"),
        ("meta_missing_tsyntax.dcm", DicomError, r"\(0028,0010\) Rows"),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", DicomError, r"empty|truncated"),
    ],
)
def test_broken_files_raise_clear_errors(name: str, exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        read_dicom(_path(name))


def test_random_bytes_and_empty_input() -> None:
    rng = np.random.default_rng(3)
    with pytest.raises(DicomError, match="DICM"):
        read_dicom(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DicomError):
        read_dicom(b"")
    garbage = b"\x00" * 128 + b"DICM" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    with pytest.raises((DicomError, UnsupportedMedia)):
        read_dicom(garbage)


def test_pixel_budget_checked_from_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels as pdpixels

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoder must not run when over budget")

    monkeypatch.setattr(pdpixels, "pixel_array", boom)
    with pytest.raises(TooLarge, match="exceeds the limit"):
        read_dicom(_path("emri_small.dcm"), limits=Limits(max_pixels=64 * 64 * 9))
    with pytest.raises(TooLarge, match="bytes"):
        read_dicom(_path("SC_rgb.dcm"), limits=Limits(max_bytes=100 * 100 * 3 - 1))


def test_budget_allows_exact_size() -> None:
    img = read_dicom(
        _path("emri_small.dcm"), limits=Limits(max_pixels=64 * 64 * 10, max_bytes=64 * 64 * 10 * 2)
    )
    assert img.info.frames == 10


def test_tolerated_deviations_are_recorded_as_warnings(recwarn: pytest.WarningsRecorder) -> None:
    # bad_sequence.dcm has UIDs that are not valid UI values; SC_rgb_jpeg.dcm says explicit VR
    # but is encoded implicit: both read, with the deviation on the model, not as a Python warning
    info = read_dicom_info(_path("bad_sequence.dcm"))
    assert any("Invalid value for VR UI" in w for w in info.warnings)
    img = read_dicom(_path("SC_rgb_jpeg.dcm"))
    assert any("implicit VR" in w for w in img.warnings)
    assert img.pixels.shape == (1, 256, 256, 3)
    assert not [w for w in recwarn if "pydicom" in (w.filename or "")]


def test_real_monochrome1_cr_renders_inverted() -> None:
    from pydicom.pixels import apply_windowing

    from medlabel.imaging import render_frame

    path = _path("RG3_UNCR.dcm")
    img = read_dicom(path)
    assert img.info.photometric is Photometric.MONOCHROME1
    ds = pydicom.dcmread(path)
    ref = apply_windowing(ds.pixel_array.astype(np.float64), ds)  # 0 .. 2**BitsStored - 1, not inverted
    ref8 = np.round(ref / (2 ** int(ds.BitsStored) - 1) * 255)
    ours = render_frame(img).astype(float)
    assert np.abs((255 - ours) - ref8).max() <= 1.0
    assert ours.std() > 10


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_supported_syntaxes_cover_every_test_file_syntax() -> None:
    from medlabel.imaging.dicom import SUPPORTED_TRANSFER_SYNTAXES

    base = os.path.dirname(_path("CT_small.dcm"))
    seen = set()
    for f in os.listdir(base):
        if f.endswith(".dcm"):
            try:
                ts = pydicom.dcmread(os.path.join(base, f), stop_before_pixels=True).file_meta.get(
                    "TransferSyntaxUID"
                )
            except Exception:  # noqa: BLE001 - broken fixtures are covered elsewhere
                continue
            if ts:
                seen.add(str(ts))
    assert seen - set(SUPPORTED_TRANSFER_SYNTAXES) == set()


def _all_test_files() -> list[str]:
    dirs = {os.path.dirname(_path("CT_small.dcm")), os.path.dirname(_path("693_UNCR.dcm"))}
    skip = {"color3d_jpeg_baseline.dcm"}  # 120 frames of 3 s: covered by the same syntax elsewhere
    return sorted(
        os.path.join(d, f)
        for d in dirs
        for f in os.listdir(d)
        if os.path.isfile(os.path.join(d, f)) and f not in skip
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_shipped_file_reads_or_raises_a_medlabel_error() -> None:
    """No file in pydicom's and pydicom-data's test sets may crash the reader with a raw error."""
    from medlabel.errors import MedlabelError

    files = _all_test_files()
    assert len(files) > 100
    read = failed = 0
    for f in files:
        try:
            img = read_dicom(f)
        except MedlabelError as exc:
            failed += 1
            assert exc.message  # every refusal explains itself
            continue
        read += 1
        assert img.pixels.shape[0] == img.info.frames
        assert img.pixels.dtype.isnative
    assert read > 100 and failed > 10


@pytest.mark.parametrize(
    "syntax",
    [
        pydicom.uid.RLELossless,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.JPEG2000Lossless,
        pydicom.uid.HTJ2KLossless,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
    ],
)
def test_ct_small_recompressed_by_other_encoders_is_identical(syntax: pydicom.uid.UID) -> None:
    """CT_small.dcm encoded by pydicom's encoders (pyjpegls, openjpeg) or openjph via imagecodecs."""
    ref = read_dicom(_path("CT_small.dcm"))
    ds = pydicom.dcmread(_path("CT_small.dcm"))
    if syntax == pydicom.uid.HTJ2KLossless:
        imagecodecs = pytest.importorskip("imagecodecs")
        ds.PixelData = pydicom.encaps.encapsulate([imagecodecs.htj2k_encode(ds.pixel_array, reversible=True)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds.compress(syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    img = read_dicom(buf.getvalue())
    assert img.info.transfer_syntax_uid == syntax
    np.testing.assert_array_equal(img.pixels, ref.pixels)
