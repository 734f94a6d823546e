"""Builders shared by the de-identification tests: datasets with PHI planted in every attribute."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medlabel.deid import DeidConfig, DeidContext, InMemoryDateOffsetStore, InMemoryPseudonymStore, rows

SECRET = b"medlabel-test-secret-0123456789"
PLANTED_UID_ROOT = "1.2.826.0.1.3680043.9.9999."
PLANTED_DATE = "19710203"
PLANTED_TIME = "112233"
PLANTED_AGE = "071Y"
PLANTED_NUMBER = 4321
# An unlisted standard sequence (not in Table E.1-1): PHI is planted inside its item too.
CONTAINER_SEQ = 0x00089215  # Derivation Code Sequence


def config(**kwargs: Any) -> DeidConfig:
    kwargs.setdefault("project_secret", SECRET)
    return DeidConfig(**kwargs)


def context() -> DeidContext:
    return DeidContext(InMemoryPseudonymStore(), InMemoryDateOffsetStore(SECRET))


def marker(tag: int) -> str:
    return f"PHI{tag:08X}"


def guess_vr(tag: int, name: str) -> str:
    """VR from pydicom's dictionary, or from the name for attributes newer than the dictionary."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        if name.endswith("Sequence"):
            return "SQ"
        if name.endswith("DateTime"):
            return "DT"
        if name.endswith("UID"):
            return "UI"
        return "LO"
    return vr.split(" or ")[0]


def planted_value(tag: int, vr: str) -> Any:
    m = marker(tag)
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE"):
        return m
    if vr == "PN":
        return f"{m}^Marker"
    if vr == "UR":
        return f"http://{m.lower()}.example"
    if vr == "DA":
        return PLANTED_DATE
    if vr == "DT":
        return PLANTED_DATE + PLANTED_TIME
    if vr == "TM":
        return PLANTED_TIME
    if vr == "AS":
        return PLANTED_AGE
    if vr == "UI":
        return f"{PLANTED_UID_ROOT}{tag}"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return PLANTED_NUMBER
    if vr in ("FL", "FD"):
        return float(PLANTED_NUMBER) + 0.5
    if vr == "DS":
        return "4321.5"
    if vr == "IS":
        return str(PLANTED_NUMBER)
    if vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
        raw = m.encode()
        return raw + b"\x00" * (-len(raw) % 8)
    if vr == "SQ":
        inner = Dataset()
        inner.PatientComments = marker(0x00104000)  # Patient Comments: X in Table E.1-1
        return Sequence([inner])
    if vr == "AT":
        return None
    raise AssertionError(f"no planted value for VR {vr}")


def planted_tags() -> Iterator[tuple[int, str, str]]:
    """(tag, VR, name) for every concrete attribute the profile names, masks instantiated."""
    for row in rows():
        if row.tag == "PRIVATE":
            continue
        # masked rows: Curve Data (50xx,xxxx) → (5000,3000); Overlay (60xx,eeee) → (6000,eeee)
        tag = 0x50003000 if row.tag == "50xxxxxx" else int(row.tag.replace("x", "0"), 16)
        if tag >> 16 in (0x0000, 0x0002):  # command set / file meta: not in a stored data set
            continue
        name = row.name.replace(" ", "").replace("'", "").replace("(", "").replace(")", "")
        vr = guess_vr(tag, name)
        if vr == "AT":
            continue
        yield tag, vr, row.name


def plant_all(ds: Dataset) -> None:
    for tag, vr, _name in planted_tags():
        ds.add(DataElement(tag, vr, planted_value(tag, vr)))


def planted_dataset() -> Dataset:
    """A CT-like dataset with PHI in every Table E.1-1 attribute, top level and nested, and private."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = f"{PLANTED_UID_ROOT}1"
    ds.file_meta.SourceApplicationEntityTitle = marker(0x00020016)
    plant_all(ds)
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    item = Dataset()
    plant_all(item)
    deeper = Dataset()
    plant_all(deeper)
    item.add(DataElement(CONTAINER_SEQ, "SQ", Sequence([deeper])))
    ds.add(DataElement(CONTAINER_SEQ, "SQ", Sequence([item])))
    # private attributes, including one inside a nested item
    block = ds.private_block(0x0009, "PHI PRIVATE CREATOR", create=True)
    block.add_new(0x01, "LO", marker(0x00091001))
    block.add_new(0x02, "OB", marker(0x00091002).encode() + b"\x00")
    block.add_new(0x03, "UI", f"{PLANTED_UID_ROOT}91003")
    nested = item.private_block(0x0011, "PHI NESTED CREATOR", create=True)
    nested.add_new(0x01, "SH", marker(0x00111001))
    return ds


def minimal(patient_id: str = "P1") -> Dataset:
    """A header-only CT instance with the attributes a stored file needs."""
    ds = Dataset()
    ds.PatientID = patient_id
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{PLANTED_UID_ROOT}{zlib.crc32(patient_id.encode())}"
    ds.Modality = "CT"
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def round_trip(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def walk(ds: Dataset) -> Iterator[DataElement]:
    """Every data element at every depth."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from walk(item)


def all_text(ds: Dataset) -> str:
    """Every value at every depth as one string (file meta included)."""
    parts = [str(e.value) for e in walk(ds)]
    if getattr(ds, "file_meta", None) is not None:
        parts += [str(e.value) for e in ds.file_meta]
    return "\n".join(parts)
