"""Presentation LUT Shape (2050,0020): INVERSE inverts the display (PS3.3 C.11.6.1.2), checked
against pydicom's own Presentation LUT step; with MONOCHROME1 it does not invert twice."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_presentation_lut, apply_windowing

from medlabel.imaging import render_frame
from medlabel.imaging.dicom import read_dicom, read_dicom_info


def _with(name: str, **attrs: object) -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name))
    for k, v in attrs.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_inverse_inverts_a_monochrome2_image_as_pydicom_does() -> None:
    # a narrow window so that the windowed image reaches 255: pydicom's INVERSE is max - value
    raw = _with("MR_small.dcm", WindowCenter=300, WindowWidth=400)
    inverse = _with("MR_small.dcm", WindowCenter=300, WindowWidth=400, PresentationLUTShape="INVERSE")
    plain, inv = read_dicom(raw), read_dicom(inverse)
    assert not plain.info.inverted and inv.info.inverted
    assert inv.info.presentation_lut_shape == "INVERSE"
    ours_plain, ours_inv = render_frame(plain), render_frame(inv)
    np.testing.assert_array_equal(ours_inv, 255 - ours_plain)
    ds = pydicom.dcmread(io.BytesIO(inverse))
    windowed = apply_windowing(ds.pixel_array.astype(np.float64), ds)
    bits = int(ds.BitsStored)  # pydicom's output range: that of the stored values
    low = -(2 ** (bits - 1)) if ds.PixelRepresentation else 0
    ref8 = np.round((windowed - low) / (2**bits - 1) * 255)
    assert ref8.max() == 255
    ref = apply_presentation_lut(ref8, ds)
    assert np.abs(ours_inv.astype(float) - ref).max() <= 1.0
    assert ours_inv.std() > 10


def test_monochrome1_with_inverse_is_inverted_once() -> None:
    # the DX and MG modules pair INVERSE with MONOCHROME1: the same display as MONOCHROME1 alone
    alone = read_dicom(_with("RG3_UNCR.dcm"))
    paired = read_dicom(_with("RG3_UNCR.dcm", PresentationLUTShape="INVERSE"))
    assert alone.info.inverted and paired.info.inverted
    np.testing.assert_array_equal(render_frame(paired), render_frame(alone))
    # IDENTITY changes nothing either way
    identity = read_dicom(_with("RG3_UNCR.dcm", PresentationLUTShape="IDENTITY"))
    np.testing.assert_array_equal(render_frame(identity), render_frame(alone))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_unknown_shapes_and_lut_sequences_are_warned() -> None:
    info = read_dicom_info(_with("MR_small.dcm", PresentationLUTShape="LIN OD"))
    assert info.presentation_lut_shape == "" and not info.inverted
    assert any("(2050,0020)" in w and "LIN OD" in w for w in info.warnings)
    # an identity shape already in pydicom's test data is read as such
    assert read_dicom_info(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm")).presentation_lut_shape == "IDENTITY"
