"""A fast PS3.10 writer for data sets read by pydicom and changed in place (de-identification).

:func:`encode_dataset` gives, byte for byte, what ``pydicom.dcmwrite(fp, ds,
enforce_file_format=True)`` writes (native Pixel Data appended as it was read), in pieces to be
written one after the other. It is pydicom's own writing, restated without its per-element
overhead:

* the File Meta Information group (PS3.10 7.1) is worked out on a copy of the elements, as
  ``dcmwrite`` does on a deep copy of ``ds.file_meta``, and written with its group length;
* an element still undecoded (:class:`~pydicom.dataelem.RawDataElement`) is written with its
  value bytes unchanged, as pydicom writes it: tag, VR and length packed here (PS3.5 7.1);
* a decoded element is encoded by pydicom's own value writer for its VR (``filewriter.writers``,
  the same functions, given the same character sets), its header packed here;
* sequences (PS3.5 7.5) are written item by item the same way, each item's length defined unless
  it was read with an undefined one;
* anything else (an unknown VR, a value written from a buffer, a 16-bit length overflowing) goes
  through pydicom's ``write_data_element`` for that element alone.

The data set is read and converted exactly where ``dcmwrite`` reads and converts it (SOP Class and
Instance UIDs, Specific Character Set, Pixel Data; ambiguous VRs corrected when the encoding or
the character set changed), so what is written is what pydicom writes. Whatever ``dcmwrite``
would refuse or treat specially (no File Meta or no public transfer syntax, Deflated Explicit VR
Little Endian, command or file meta elements in the data set, a bad preamble, a file meta group
that is not plain) and any error on the way is left to pydicom: the whole data set is then
written by ``dcmwrite``, so its errors are its own.
"""

from __future__ import annotations

import copy
import functools
import io
import struct
from collections.abc import MutableSequence
from typing import Any, cast

import pydicom
from pydicom import __version_info__
from pydicom.charset import convert_encodings, default_encoding, encode_string
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element, writers
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR, CUSTOMIZABLE_CHARSET_VR, EXPLICIT_VR_LENGTH_32, PersonName

__all__ = ["encode_dataset", "encode_element", "dataset_encodings"]

_Element = DataElement | RawDataElement
_Encoding = str | MutableSequence[str]

_PIXEL_DATA = 0x7FE00010
_SPECIFIC_CHARACTER_SET = 0x00080005
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_GROUP_LENGTH = 0x00020000
_META_VERSION = 0x00020001
_META_CLASS = 0x00020002
_META_INSTANCE = 0x00020003
_META_SYNTAX = 0x00020010
_META_IMPLEMENTATION = 0x00020012
_META_VERSION_NAME = 0x00020013
_BIG_VALUE = 1 << 14  # values this long stay pieces of their own: appended, never copied
# VRs whose commonest single values are encoded here, as pydicom's writer for the VR does it
_STRING, _UID, _TEXT, _NAME, _NUMBER = range(5)
_FAST_VRS = {
    **dict.fromkeys(("AE", "AS", "CS", "UR", "DA", "DT", "TM"), _STRING),  # write_string, str values
    "UI": _UID,
    **dict.fromkeys(("LO", "LT", "SH", "ST", "UC", "UT"), _TEXT),
    "PN": _NAME,
    **dict.fromkeys(("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"), _NUMBER),
}
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_TAG_PACKERS = {True: struct.Struct("<HH").pack, False: struct.Struct(">HH").pack}
# what pydicom's writers and converters raise on values they cannot write
_ENCODE_ERRORS = (ValueError, TypeError, AttributeError, LookupError, OSError, OverflowError, struct.error)


class _Fallback(Exception):
    """This data set (or element) is left to pydicom."""


class _Sink:
    """The file-like that pydicom's value writers write into: it keeps the pieces, not a copy."""

    __slots__ = ("is_little_endian", "parts", "size", "_tag")

    def __init__(self, little: bool) -> None:
        self.is_little_endian = little
        self.parts: list[Any] = []
        self.size = 0
        self._tag = _TAG_PACKERS[little]

    def write(self, data: Any) -> int:
        n = len(data) if type(data) is bytes else memoryview(data).nbytes
        self.parts.append(data)
        self.size += n
        return n

    def write_tag(self, tag: int) -> None:  # AT values
        self.write(self._tag(tag >> 16, tag & 0xFFFF))


class _Writer:
    """Writes elements in one encoding (PS3.5 7.1.2: explicit VR, 7.1.3: implicit VR)."""

    def __init__(self, implicit: bool, little: bool) -> None:
        self.implicit = implicit
        self.little = little
        order = "<" if little else ">"
        self._order = order
        self._tag = _TAG_PACKERS[little]
        self._implicit_head = struct.Struct(order + "HHI").pack
        self._short_head = struct.Struct(order + "HH2sH").pack
        self._long_head = struct.Struct(order + "HH2sHI").pack
        self._ul = struct.Struct(order + "I").pack
        self._item_prefix = b"\xfe\xff\x00\xe0" if little else b"\xff\xfe\xe0\x00"
        self._sequence_end = self._tag(_SEQUENCE_DELIMITER >> 16, _SEQUENCE_DELIMITER & 0xFFFF) + bytes(4)
        self._item_end = self._tag(_ITEM_DELIMITER >> 16, _ITEM_DELIMITER & 0xFFFF) + bytes(4)
        self._item = self._tag(_ITEM >> 16, _ITEM & 0xFFFF)
        self._vrs: dict[str, tuple[bytes, bool]] = {}

    def dataset(self, out: _Sink, ds: Dataset, parent_encoding: _Encoding = default_encoding) -> None:
        """Mirror of ``pydicom.filewriter.write_dataset``."""
        convert = (self.implicit, self.little) != ds.original_encoding or (
            ds.original_character_set != ds._character_set
        )
        if convert:  # pydicom corrects ambiguous VRs and decodes every element
            ds = correct_ambiguous_vr(ds, self.little)
        if _SPECIFIC_CHARACTER_SET in ds._dict:
            dataset_encoding = cast(_Encoding | None, ds.get("SpecificCharacterSet", parent_encoding))
        else:
            dataset_encoding = parent_encoding
        encodings = convert_encodings(dataset_encoding or [default_encoding])
        elems = {int(tag): elem for tag, elem in ds._dict.items()}
        for tag in sorted(elems):
            if tag & 0xFFFF == 0 and tag >> 16 > 6:  # retired group lengths are not written (PS3.5 7.2)
                continue
            elem = elems[tag]
            if type(elem) is RawDataElement and (convert or elem.value is None):
                elem = ds[tag] if convert else ds.get_item(tag)  # decoded, or read if deferred
            self.element(out, tag, elem, encodings, dataset_encoding)

    def element(
        self, out: _Sink, tag: int, elem: _Element, encodings: list[str], dataset_encoding: _Encoding | None
    ) -> None:
        """Mirror of ``pydicom.filewriter.write_data_element``."""
        if type(elem) is RawDataElement:
            self._raw(out, tag, elem, dataset_encoding)
            return
        elem = cast(DataElement, elem)
        vr = elem.VR
        if vr == "SQ":
            self._sequence(out, tag, elem, encodings)
            return
        data = None if elem.is_undefined_length else self._value(elem, vr, encodings)
        if data is not None:
            self._put(out, tag, vr, len(data), False, [data], dataset_encoding, elem)
            return
        writer = writers.get(cast(Any, vr))
        if writer is None or elem.is_buffered or (not self.implicit and vr and len(vr) != 2):
            self._pydicom(out, elem, dataset_encoding)
            return
        value = _Sink(self.little)
        if not elem.is_empty:
            fn, param = writer
            if vr in CUSTOMIZABLE_CHARSET_VR:
                fn(value, elem, encodings=encodings)  # type: ignore[operator]
            elif param is not None:
                fn(value, elem, param)  # type: ignore[operator]
            else:
                fn(value, elem)  # type: ignore[operator]
        undefined = elem.is_undefined_length
        if undefined and tag == _PIXEL_DATA and not self._encapsulated(value.parts):
            self._pydicom(out, elem, dataset_encoding)  # raises: not encapsulated
            return
        self._put(out, tag, vr, value.size, undefined, value.parts, dataset_encoding, elem)

    def _value(self, elem: DataElement, vr: str, encodings: list[str]) -> bytes | None:
        """The value bytes of the commonest single values, as pydicom's writer for the VR gives
        them (``write_string``, ``write_UI``, ``write_text``, ``write_PN``, ``write_numbers``);
        None for pydicom's writer to do it."""
        kind = _FAST_VRS.get(vr)
        if kind is None:
            return None
        value = elem.value
        kind_of_value = type(value)
        if kind_of_value is str or kind_of_value is UID:
            if kind == _TEXT:
                data = encode_string(value, encodings) if value else b""
                return data + b" " if len(data) % 2 else data
            if kind == _STRING or kind == _UID:
                if len(value) % 2:
                    value += "\0" if kind == _UID else " "
                return cast(str, value).encode(default_encoding)
            return None
        if kind == _NAME and kind_of_value is PersonName:
            data = value.encode(encodings) if value else b""
            return data + b" " if len(data) % 2 else data
        if kind == _NUMBER and (kind_of_value is int or kind_of_value is float):
            return struct.pack(self._order + _NUMBER_FORMATS[vr], value)
        return None

    def _raw(self, out: _Sink, tag: int, elem: RawDataElement, dataset_encoding: _Encoding | None) -> None:
        value = elem.value
        if type(value) is not bytes or (not self.implicit and (not elem.VR or len(elem.VR) != 2)):
            self._pydicom(out, elem, dataset_encoding)
            return
        undefined = elem.length == _UNDEFINED
        if undefined and tag == _PIXEL_DATA and not value.startswith(self._item_prefix):
            self._pydicom(out, elem, dataset_encoding)
            return
        self._put(out, tag, elem.VR, len(value), undefined, [value], dataset_encoding, elem)

    def _put(
        self,
        out: _Sink,
        tag: int,
        vr: str | None,
        length: int,
        undefined: bool,
        parts: list[Any],
        dataset_encoding: _Encoding | None,
        elem: _Element,
    ) -> None:
        """Tag, VR and length as pydicom writes them, then the value."""
        if self.implicit:
            head = self._implicit_head(tag >> 16, tag & 0xFFFF, _UNDEFINED if undefined else length)
        else:
            assert vr is not None
            info = self._vrs.get(vr)
            if info is None:
                info = self._vrs[vr] = (vr.encode(default_encoding), vr in EXPLICIT_VR_LENGTH_32)
            code, long = info
            if long:
                head = self._long_head(tag >> 16, tag & 0xFFFF, code, 0, _UNDEFINED if undefined else length)
            elif undefined:  # an undefined length with a 16-bit length VR: pydicom writes it in 4 bytes
                head = self._short_head(tag >> 16, tag & 0xFFFF, code, 0xFFFF) + b"\xff\xff"
            elif length > 0xFFFF:  # pydicom warns and writes it as UN (PS3.5 6.2.2)
                self._pydicom(out, elem, dataset_encoding)
                return
            else:
                head = self._short_head(tag >> 16, tag & 0xFFFF, code, length)
        out.parts.append(head)
        out.parts.extend(parts)
        out.size += len(head) + length
        if undefined:
            out.parts.append(self._sequence_end)
            out.size += 8

    def _sequence(self, out: _Sink, tag: int, elem: DataElement, encodings: list[str]) -> None:
        """Mirror of ``write_sequence`` and ``write_sequence_item``."""
        value = _Sink(self.little)
        if not elem.is_empty:
            for item in elem.value:
                body = _Sink(self.little)
                self.dataset(body, item, encodings)
                undefined_item = getattr(item, "is_undefined_length_sequence_item", False)
                value.write(self._item + self._ul(_UNDEFINED if undefined_item else body.size))
                value.parts.extend(body.parts)
                value.size += body.size
                if undefined_item:
                    value.write(self._item_end)
        self._put(out, tag, "SQ", value.size, elem.is_undefined_length, value.parts, None, elem)

    def _encapsulated(self, parts: list[Any]) -> bool:
        first = bytes(parts[0][:4]) if parts else b""
        return first.startswith(self._item_prefix)

    def _pydicom(self, out: _Sink, elem: _Element, dataset_encoding: _Encoding | None) -> None:
        """One element through pydicom's own ``write_data_element``."""
        fp = DicomBytesIO()
        fp.is_little_endian = self.little
        fp.is_implicit_VR = self.implicit
        write_data_element(fp, elem, cast(Any, dataset_encoding))
        out.write(fp.getvalue())


class _Meta:
    """The file meta elements as ``dcmwrite`` has them on its copy of ``ds.file_meta``."""

    def __init__(self, meta: FileMetaDataset) -> None:
        self.meta = meta
        self.elems: dict[int, _Element] = {int(t): e for t, e in meta._dict.items()}
        self.added: set[int] = set()  # elements pydicom adds with a constant value (PS3.10 7.1)
        self._charset = meta.original_character_set or meta._character_set

    def get(self, tag: int) -> DataElement | None:
        """The element, converted as ``file_meta[tag]`` converts it on the copy."""
        elem = self.elems.get(tag)
        if type(elem) is RawDataElement:
            if elem.value is None:  # deferred: read it
                self.elems[tag] = elem = self.meta.get_item(tag)
            if type(elem) is RawDataElement:
                elem = convert_raw_data_element(elem, encoding=self._charset, ds=self.meta)
                self.elems[tag] = elem
        return cast(DataElement | None, elem)

    def value(self, tag: int) -> Any:
        elem = self.get(tag)
        return None if elem is None else elem.value

    def set(self, tag: int, value: Any) -> None:
        """As ``file_meta.Keyword = value`` on the copy (the original is left alone)."""
        elem = self.get(tag)
        if elem is None:
            self.elems[tag] = DataElement(tag, dictionary_VR(tag), value)
        else:
            elem = copy.copy(elem)
            elem.value = value
            self.elems[tag] = elem

    def add(self, tag: int, value: str | bytes) -> None:
        """As ``file_meta.Keyword = value`` for an element that is not there: pydicom's bytes."""
        self.elems[tag] = _added_element(tag, value)
        self.added.add(tag)

    def empty(self, tag: int) -> bool:
        elem = self.get(tag)
        return elem is None or elem.is_empty


@functools.cache
def _added_element(tag: int, value: str | bytes) -> RawDataElement:
    """The element pydicom adds to the file meta, as the value bytes its writer gives."""
    elem = DataElement(tag, dictionary_VR(tag), value)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, elem, default_encoding)
    data = fp.getvalue()
    start = 12 if elem.VR in EXPLICIT_VR_LENGTH_32 else 8
    return RawDataElement(BaseTag(tag), elem.VR, len(data) - start, data[start:], 0, False, True)


def _file_meta(ds: Dataset, meta: FileMetaDataset) -> tuple[bytes, UID]:
    """The File Meta Information group (PS3.10 7.1), and the transfer syntax for the data set.

    Mirror of what ``dcmwrite(..., enforce_file_format=True)``, ``validate_file_meta`` and
    ``write_file_meta_info`` do to and with their copy of ``ds.file_meta``.
    """
    m = _Meta(meta)
    if any(t >> 16 != 0x0002 for t in m.elems):
        raise _Fallback("elements outside group 0002 in the file meta")
    syntax = m.value(_META_SYNTAX)
    if not isinstance(syntax, UID) or not syntax.is_transfer_syntax or syntax.is_private:
        raise _Fallback(f"transfer syntax {syntax!r}")
    if syntax == DeflatedExplicitVRLittleEndian or (syntax.is_implicit_VR and not syntax.is_little_endian):
        raise _Fallback(f"transfer syntax {syntax.name}")
    for meta_tag, keyword in ((_META_CLASS, "SOPClassUID"), (_META_INSTANCE, "SOPInstanceUID")):
        in_meta = m.value(meta_tag)
        in_ds = ds.get(keyword, None)
        if in_meta is None or (in_ds and in_ds != in_meta):
            m.set(meta_tag, in_ds)
    for tag, value in (
        (_META_VERSION, b"\x00\x01"),
        (_META_IMPLEMENTATION, UID(PYDICOM_IMPLEMENTATION_UID)),
    ):
        if tag not in m.elems:
            m.add(tag, value)
        elif m.empty(tag):
            m.set(tag, value)
    if _META_VERSION_NAME not in m.elems:
        m.add(_META_VERSION_NAME, f"PYDICOM {'.'.join(__version_info__)}")
    if any(m.empty(t) for t in (_META_CLASS, _META_INSTANCE, _META_SYNTAX)):
        raise _Fallback("required file meta elements missing or empty")
    if (False, True) != meta.original_encoding or meta.original_character_set != meta._character_set:
        for tag in m.elems.keys() - m.added:  # decoded, ambiguous VRs corrected (``write_dataset``)
            if cast(DataElement, m.get(tag)).VR in AMBIGUOUS_VR:
                raise _Fallback("ambiguous VR in the file meta")
    if _GROUP_LENGTH in m.elems:  # pydicom writes it first, then overwrites its 12 bytes
        length = m.get(_GROUP_LENGTH)
        if length is None or length.VR != "UL" or type(length.value) is not int:
            raise _Fallback("file meta group length is not a single UL")
    writer = _Writer(implicit=False, little=True)
    body = _Sink(little=True)
    encodings = convert_encodings(default_encoding)
    for tag in sorted(m.elems):
        if tag != _GROUP_LENGTH:
            writer.element(body, tag, m.elems[tag], encodings, default_encoding)
    group = b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", body.size)
    return b"".join([group, *body.parts]), syntax


def _fast(ds: Dataset) -> list[bytes | memoryview]:
    """``ds`` as ``dcmwrite(..., enforce_file_format=True)`` writes it; raises to fall back."""
    meta = getattr(ds, "file_meta", None)
    if not isinstance(meta, FileMetaDataset):
        raise _Fallback("no file meta")
    if any(t >> 16 in (0x0000, 0x0002) for t in ds.keys()):
        raise _Fallback("command or file meta elements in the data set")
    preamble = getattr(ds, "preamble", None)
    if preamble and len(preamble) != 128:
        raise _Fallback("preamble is not 128 bytes")
    group, syntax = _file_meta(ds, meta)
    if "PixelData" in ds:  # PS3.5 A.4: encapsulated pixel data has an undefined length
        ds["PixelData"].is_undefined_length = syntax.is_compressed
    writer = _Writer(syntax.is_implicit_VR, syntax.is_little_endian)
    body = _Sink(syntax.is_little_endian)
    writer.dataset(body, ds)
    pieces: list[bytes | memoryview] = []
    run: list[Any] = [preamble or b"\x00" * 128, b"DICM", group]
    for part in body.parts:
        if (len(part) if type(part) is bytes else memoryview(part).nbytes) >= _BIG_VALUE:
            pieces.append(b"".join(run))
            pieces.append(part if isinstance(part, bytes | memoryview) else memoryview(part))
            run = []
        else:
            run.append(part)
    if run:
        pieces.append(b"".join(run))
    return pieces


_PIXEL_HEADER = {  # (7FE0,0010) tag and VR as written by each native transfer syntax
    "1.2.840.10008.1.2": (b"\xe0\x7f\x10\x00", None, "<"),
    "1.2.840.10008.1.2.1": (b"\xe0\x7f\x10\x00", b"\x00\x00", "<"),
    "1.2.840.10008.1.2.2": (b"\x7f\xe0\x00\x10", b"\x00\x00", ">"),
}


def _pydicom_encode(ds: Dataset) -> list[bytes | memoryview]:
    """The data set through ``pydicom.dcmwrite``, native Pixel Data appended as it was read."""
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    head = _PIXEL_HEADER.get(ts)
    pix = ds.get_item(_PIXEL_DATA) if head is not None else None
    value = pix.value if pix is not None else None
    split = (
        head is not None
        and pix is not None
        and isinstance(value, bytes)
        and len(value) % 2 == 0
        and len(value) < 0xFFFFFFFF
        and (head[1] is None or pix.VR in ("OB", "OW"))
        and max(ds.keys()) == _PIXEL_DATA
    )
    buf = io.BytesIO()
    if not split:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        return [buf.getbuffer()]
    assert head is not None and pix is not None and isinstance(value, bytes)
    del ds[_PIXEL_DATA]
    try:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    finally:
        ds[_PIXEL_DATA] = pix
    tag, reserved, order = head
    length = struct.pack(f"{order}I", len(value))
    element = tag + length if reserved is None else tag + str(pix.VR).encode() + reserved + length
    return [buf.getbuffer(), element, value]


def encode_dataset(ds: Dataset) -> list[bytes | memoryview]:
    """``ds`` as a PS3.10 file (preamble, 'DICM', File Meta Information, data set), in pieces.

    The bytes are those of ``pydicom.dcmwrite(fp, ds, enforce_file_format=True)``; large values
    (native Pixel Data) are pieces of their own, neither copied nor re-encoded. ``ds`` is changed
    only as ``dcmwrite`` changes it (elements it reads are decoded in place).
    """
    try:
        return _fast(ds)
    except (_Fallback, *_ENCODE_ERRORS):
        pass  # pydicom writes it whole, raising its own error (not chained to ours) if any
    return _pydicom_encode(ds)


@functools.cache
def _little_writer(implicit: bool) -> _Writer:
    return _Writer(implicit, little=True)


def dataset_encodings(ds: Dataset) -> tuple[list[str], _Encoding | None]:
    """The character sets the top-level elements of ``ds`` are written in, as the writer works
    them out (``encodings``, and the data set's own Specific Character Set value or None)."""
    dataset_encoding: _Encoding | None = default_encoding
    if _SPECIFIC_CHARACTER_SET in ds._dict:
        dataset_encoding = cast(_Encoding | None, ds.get("SpecificCharacterSet", default_encoding))
    return convert_encodings(dataset_encoding or [default_encoding]), dataset_encoding


def encode_element(
    tag: int,
    elem: _Element,
    *,
    implicit: bool,
    encodings: list[str],
    dataset_encoding: _Encoding | None,
) -> bytes:
    """One top-level element (tag, VR, length, value) of a little-endian data set, as
    :func:`encode_dataset` writes it in the data set whose character sets are ``encodings`` /
    ``dataset_encoding`` (:func:`dataset_encodings`) when that data set needs no conversion
    (read in the syntax it is written in, character set unchanged)."""
    out = _Sink(little=True)
    _little_writer(implicit).element(out, tag, elem, encodings, dataset_encoding)
    return b"".join(bytes(p) if not isinstance(p, bytes) else p for p in out.parts)
