"""NIfTI scrubbing and the folder tool behind ``medlabel deid IN OUT``."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medlabel.deid import deidentify_folder, deidentify_nifti, pseudonymous_name
from medlabel.errors import InvalidInput

from .deid_factories import SECRET, config, context

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def _phi_nifti(path: Path, cls: type = nib.Nifti1Image) -> None:
    img = cls(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header["descrip"] = b"Doe^John 19710203"
    img.header["aux_file"] = b"john_doe.txt"
    img.header["intent_name"] = b"DOEJ"
    if "db_name" in img.header:
        img.header["db_name"] = b"MRN12345"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"Patient John Doe MRN12345"))
    nib.save(img, path)


@pytest.mark.parametrize("cls", [nib.Nifti1Image, nib.Nifti2Image])
def test_deidentify_nifti_scrubs_text(tmp_path: Path, cls: type) -> None:
    src = tmp_path / "john_doe.nii.gz"
    _phi_nifti(src, cls)
    img = nib.load(src)
    out = deidentify_nifti(img)
    dst = tmp_path / "out.nii"
    nib.save(out, dst)
    raw = dst.read_bytes()
    for leak in (b"Doe", b"john", b"DOEJ", b"MRN12345", b"19710203"):
        assert leak not in raw
    back = nib.load(dst)
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj))
    assert np.allclose(back.affine, img.affine)
    assert len(back.header.extensions) == 0
    # the input image object keeps its header: a copy was scrubbed
    assert b"Doe" in bytes(img.header["descrip"]) and len(img.header.extensions) == 1


def test_deidentify_nifti_on_nibabel_example() -> None:
    img = nib.load(NIB_DATA / "example4d.nii.gz")
    assert len(img.header.extensions) > 0 and bytes(img.header["descrip"]).strip(b"\x00")
    out = deidentify_nifti(img)
    assert bytes(out.header["descrip"]).strip(b"\x00") == b""
    assert len(out.header.extensions) == 0
    assert out.shape == img.shape


def test_pseudonymous_name_is_stable_and_hides_the_name() -> None:
    a = pseudonymous_name(SECRET, "Doe_John.nii.gz")
    assert a == pseudonymous_name(SECRET, "Doe_John.nii.gz")
    assert "Doe" not in a and a.endswith(".nii.gz")
    assert a != pseudonymous_name(SECRET, "Roe_Jane.nii.gz")


def _copy(name: str, dst: Path) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, dst)
    return dst


def test_folder(tmp_path: Path) -> None:
    src = tmp_path / "in"
    out = tmp_path / "out"
    _copy("CT_small.dcm", src / "CompressedSamples_CT1" / "ct.dcm")
    _copy("MR_small.dcm", src / "mr" / "mr.dcm")
    _copy("US1_UNCR.dcm", src / "us.dcm")
    (src / "notes.txt").write_text("Patient CompressedSamples^CT1")
    (src / "noise.bin").write_bytes(bytes(range(256)) * 8)
    _copy("rtstruct.dcm", src / "raw" / "rtstruct.dcm")  # a raw data set without PS3.10 preamble
    _phi_nifti(src / "john_doe.nii.gz")
    ct_name = str(pydicom.dcmread(src / "CompressedSamples_CT1" / "ct.dcm").PatientName)

    report = deidentify_folder(src, out, config(), context())
    by = {f.source: f for f in report.files}
    assert by["notes.txt"].status == "skipped" and "not a DICOM" in by["notes.txt"].note
    assert by["CompressedSamples_CT1/ct.dcm"].status == "written"
    assert by["us.dcm"].status == "quarantined"
    assert (by["us.dcm"].output or "").startswith("quarantine/")
    assert by["john_doe.nii.gz"].status == "written"
    assert by["noise.bin"].status == "skipped"
    assert by["raw/rtstruct.dcm"].status == "written" and "raw data set" in by["raw/rtstruct.dcm"].warnings[0]
    assert report.count("written") == 4 and report.count("quarantined") == 1
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(written) == 5
    for p in written:
        rel = p.relative_to(out).as_posix()
        assert "CompressedSamples" not in rel and "john" not in rel.lower() and "doe" not in rel.lower()
        raw = p.read_bytes()
        assert ct_name.encode() not in raw and b"Doe^John" not in raw
    for f in report.files:
        if f.output and f.output.endswith(".dcm"):
            ds = pydicom.dcmread(out / f.output)
            assert ds.PatientIdentityRemoved == "YES"
            assert f.output.endswith(f"{ds.SOPInstanceUID}.dcm")
    # the source tree is untouched and a second run overwrites nothing
    assert (src / "notes.txt").read_text().startswith("Patient")
    again = deidentify_folder(src, out, config(), context())
    assert again.count("written") == 0 and again.count("skipped") == 7
    assert report.to_dict()["counts"]["quarantined"] == 1


def test_folder_refuses_output_inside_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="inside the input"):
        deidentify_folder(tmp_path, tmp_path / "out", config(), context())
    with pytest.raises(InvalidInput, match="does not exist"):
        deidentify_folder(tmp_path / "missing", tmp_path / "o", config(), context())


def test_the_preamble_is_not_carried_over(tmp_path: Path) -> None:
    """PS3.10 7.1 leaves the 128-byte preamble to applications; whatever the original's holds
    (here a patient's name and birth date) is not copied into the de-identified file: neither
    by the folder tool nor by the import's writer."""
    from medlabel.deid import deidentify_dataset
    from medlabel.imaging.dicom import open_dataset
    from medlabel.imaging.dicom_encode import encode_dataset

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.preamble = b"II*\x00 DOE^JOHN 19600101".ljust(128, b"\x00")
    ds.save_as(src / "ct.dcm", enforce_file_format=True)
    assert b"DOE^JOHN" in (src / "ct.dcm").read_bytes()[:128]

    deidentify_folder(src, out, config(), context())
    (written,) = [p for p in out.rglob("*") if p.is_file()]
    assert written.read_bytes()[:132] == bytes(128) + b"DICM"

    read = open_dataset((src / "ct.dcm").read_bytes())
    deidentify_dataset(read, config(), context(), in_place=True)
    assert b"".join(encode_dataset(read))[:132] == bytes(128) + b"DICM"
    copy = deidentify_dataset(pydicom.dcmread(src / "ct.dcm"), config(), context()).dataset
    assert not getattr(copy, "preamble", None)
