"""De-identify the next files of a series by reusing what was decided for an earlier one.

The files of one series repeat most of their header byte for byte: patient, study, series,
equipment, the pixel description. Preparing a file the whole way (pydicom parses every element,
the engine walks Table E.1-1 over all of them, the writer writes them back) costs about 2 ms of
Python a file, most of it repeating what the previous file of the series decided.

A file the whole way through becomes a *template* (:meth:`SeriesTemplates.learn`): its input
elements (value bytes), its output elements (the bytes ``encode_dataset`` wrote), the engine's
:class:`~medlabel.deid.engine.DeidState` and the image header. A later file of the same transfer
syntax, series, element tags and Pixel Data length is compared with it byte for byte
(:meth:`SeriesTemplates.apply`); when every element that differs is *independent*
(:func:`~medlabel.deid.engine.independent_element`: treated on its own, an input of no decision:
SOP Instance UID, Instance Number, positions, times, window values…), only those are
de-identified (:func:`~medlabel.deid.engine.deidentify_more`, under the template's state) and
encoded (:func:`~medlabel.imaging.dicom_encode.encode_element`); the output is the template's
with those elements and the SOP Instance UID of the File Meta replaced, and the file's own Pixel
Data appended. The result is byte for byte what the whole way gives (the tests compare them on
every element of pydicom's test files, changed one at a time); anything else (another patient,
a changed sequence, private or pixel-description element, a warning anywhere, a syntax other
than explicit or implicit VR little endian, an element of undefined length at the end of the
file…) answers None and the file goes the whole way, becoming the template of its series.

Templates are kept per process (the last ``MAX_TEMPLATES`` series), keyed by the
de-identification configuration; the patient's pseudonym and date offset are asked of the
caller's stores for every file and must be the template's.
"""

from __future__ import annotations

import struct
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag

from medlabel.deid.config import DeidConfig
from medlabel.deid.engine import DeidContext, DeidResult, DeidState, deidentify_more, independent_element
from medlabel.errors import MedlabelError
from medlabel.imaging.dicom import info_from_dataset, reread_info
from medlabel.imaging.dicom_encode import dataset_encodings, encode_element
from medlabel.imaging.model import ImageInfo

__all__ = ["MAX_HEADER_BYTES", "MAX_TEMPLATES", "Reused", "Scan", "SeriesTemplates", "scan"]

MAX_TEMPLATES = 64
#: Headers (everything before Pixel Data) longer than this make no template: a template keeps
#: its header about three times (input, output, decoded), and files with such headers
#: (enhanced multi-frame, with a functional group per frame) come one per series anyway.
MAX_HEADER_BYTES = 256 << 10

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_PIXEL_DATA = 0x7FE00010
_SOP_INSTANCE = 0x00080018
_SERIES = 0x0020000E
_META_INSTANCE = 0x00020003
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# explicit VRs with a 4-byte length after 2 reserved bytes (PS3.5 Table 7.1-1)
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
_EXPLICIT_HEAD = struct.Struct("<HH2sH")  # tag, VR, 2-byte length (PS3.5 7.1.2)
_MAX_DEPTH = 16


class _Unfit(Exception):
    """The bytes are not the plain file this module reads: the whole way decides."""


class _Element(NamedTuple):
    """An element's place in the file (a tuple: a file has dozens, scanned for every file of a
    series)."""

    tag: int
    vr: str | None  # as written (explicit VR), None in implicit VR
    start: int  # first byte of the tag
    value: int  # first byte of the value
    end: int  # one past the last byte (of the sequence delimiter for undefined lengths)
    length: int  # as written (``_UNDEFINED`` for undefined lengths)


@dataclass(frozen=True, slots=True)
class Scan:
    """Where the elements of a PS3.10 file are (preamble, ``DICM``, File Meta, data set), in
    explicit or implicit VR little endian, Pixel Data native and last."""

    syntax: str
    meta: tuple[_Element, ...]
    elements: tuple[_Element, ...]  # top-level data set elements before Pixel Data, in order
    pixel: _Element

    @property
    def implicit(self) -> bool:
        return self.syntax == _IMPLICIT_LE


def _read(
    data: bytes | memoryview, pos: int, implicit: bool, size: int | None = None, depth: int = 0
) -> _Element:
    """The element starting at ``pos`` (its value skipped, sequences of undefined length too);
    ``size``: the length of the whole file when ``data`` is only its beginning; ``depth``: how
    many sequences of undefined length it is nested in."""
    if pos + 8 > len(data):
        raise _Unfit("cut short")
    group, elem = _TAG.unpack_from(data, pos)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:  # items and delimiters have no VR (PS3.5 7.5)
        vr = None
        length = _U32.unpack_from(data, pos + 4)[0]
        value = pos + 8
    else:
        code = bytes(data[pos + 4 : pos + 6])
        vr = code.decode("latin-1")
        if code in _LONG_VRS:
            if pos + 12 > len(data):
                raise _Unfit("cut short")
            length = _U32.unpack_from(data, pos + 8)[0]
            value = pos + 12
        else:
            length = _U16.unpack_from(data, pos + 6)[0]
            value = pos + 8
    if length == _UNDEFINED:
        end = _skip_undefined(data, value, implicit, depth)
    else:
        end = value + length
        if end > (len(data) if size is None else size):
            raise _Unfit("value runs past the end")
    return _Element(tag, vr, pos, value, end, length)


def _skip_undefined(data: bytes | memoryview, pos: int, implicit: bool, depth: int) -> int:
    """The end of a value of undefined length starting at ``pos``: items up to the sequence
    delimitation item (PS3.5 7.5.2), each item's elements read up to its own delimiter."""
    if depth > _MAX_DEPTH:
        raise _Unfit("sequences nested too deep")
    while True:
        item = _read_item_head(data, pos)
        if item.tag == _SEQUENCE_END:
            return item.value
        if item.tag != _ITEM:
            raise _Unfit("not an item in a sequence of undefined length")  # encapsulated data
        if item.length != _UNDEFINED:
            pos = item.value + item.length
            if pos > len(data):
                raise _Unfit("item runs past the end")
            continue
        pos = item.value
        while True:
            inner = _read_item_head(data, pos)
            if inner.tag == _ITEM_END:
                pos = inner.value
                break
            if inner.tag >> 16 == 0xFFFE:
                raise _Unfit("unexpected delimiter in an item")
            pos = _read(data, pos, implicit, depth=depth + 1).end


def _read_item_head(data: bytes | memoryview, pos: int) -> _Element:
    if pos + 8 > len(data):
        raise _Unfit("cut short in a sequence")
    group, elem = _TAG.unpack_from(data, pos)
    length = _U32.unpack_from(data, pos + 4)[0]
    return _Element(group << 16 | elem, None, pos, pos + 8, pos + 8, length)


def scan(data: bytes | memoryview, *, pixels_after: int = 0) -> Scan | None:
    """Where the elements of ``data`` are, or None when it is not a file this module reads:
    no preamble and ``DICM``, another transfer syntax, elements out of order, Pixel Data
    missing, of undefined length or not last. ``pixels_after``: ``data`` stops after the Pixel
    Data element's header, and this many value bytes follow (not read)."""
    try:
        return _scan(data, len(data) + pixels_after)
    except (_Unfit, struct.error, UnicodeDecodeError):
        return None


def _scan(data: bytes | memoryview, size: int) -> Scan:
    if len(data) < 132 or bytes(data[128:132]) != b"DICM":
        raise _Unfit("no DICM prefix")
    pos = 132
    meta: list[_Element] = []
    syntax = ""
    while pos + 8 <= len(data) and _U16.unpack_from(data, pos)[0] == 0x0002:
        e = _read(data, pos, implicit=False)  # the File Meta is always explicit VR LE
        if e.length == _UNDEFINED:
            raise _Unfit("undefined length in the File Meta")
        if e.tag == 0x00020010:
            syntax = bytes(data[e.value : e.end]).rstrip(b"\x00 ").decode("ascii")
        meta.append(e)
        pos = e.end
    if syntax not in (_EXPLICIT_LE, _IMPLICIT_LE):
        raise _Unfit(f"transfer syntax {syntax!r}")
    implicit = syntax == _IMPLICIT_LE
    elements: list[_Element] = []
    last = -1
    n = len(data)
    head = _EXPLICIT_HEAD.unpack_from
    while pos < n:
        # the common element inline (explicit VR with a 2-byte length): ``_read`` for the rest
        if not implicit and pos + 8 <= n:
            group, number, code, length = head(data, pos)
            if code not in _LONG_VRS and group != 0xFFFE:
                end = pos + 8 + length
                if end > size:
                    raise _Unfit("value runs past the end")
                tag = group << 16 | number
                e = _Element(tag, code.decode("latin-1"), pos, pos + 8, end, length)
            else:
                e = _read(data, pos, implicit, size)
        else:
            e = _read(data, pos, implicit, size)
        tag = e.tag
        if tag <= last or tag >> 16 in (0x0000, 0x0002):
            raise _Unfit("elements out of order, or command/File Meta elements in the data set")
        last = tag
        if tag == _PIXEL_DATA:
            if e.length == _UNDEFINED or e.end != size:
                raise _Unfit("Pixel Data encapsulated, or not the last element")
            return Scan(syntax, tuple(meta), tuple(elements), e)
        elements.append(e)
        pos = e.end
    raise _Unfit("no Pixel Data")


@dataclass(frozen=True, slots=True)
class Reused:
    """A file prepared from a template: the de-identified file in pieces, and its header."""

    pieces: list[bytes | memoryview]
    info: ImageInfo
    reasons: tuple[str, ...]
    pseudonym: str
    changed: int  #: elements de-identified for this file (the others were reused)


@dataclass(slots=True)
class _Template:
    implicit: bool
    inputs: dict[int, bytes]  # input value bytes per top-level tag (Pixel Data aside)
    vrs: dict[int, str | None]
    outputs: dict[int, bytes]  # whole output elements per tag, in tag order
    meta: list[tuple[int, bytes]]  # output File Meta elements (group length aside)
    pixel_head: bytes
    state: DeidState
    patient: tuple[str, str]  # (Patient ID or "NAME:" + name, issuer) the pseudonym is keyed by
    reasons: tuple[str, ...]
    pseudonym: str
    info: ImageInfo
    info_reads: frozenset[int]  # the top-level tags ``info_from_dataset`` looked at
    header: dict[Any, Any]  # the output data set's elements (Pixel Data: an empty stand-in)
    file_meta: FileMetaDataset
    charset: RawDataElement | None  # the input's Specific Character Set, to decode changed text
    encodings: tuple[list[str], Any]


def _key(config: DeidConfig, s: Scan, data: bytes | memoryview) -> tuple[Any, ...]:
    series = next((bytes(data[e.value : e.end]) for e in s.elements if e.tag == _SERIES), b"")
    return (config, s.syntax, tuple(e.tag for e in s.elements), s.pixel.vr, s.pixel.length, series)


class SeriesTemplates:
    """The templates of the series this process prepared lately (thread-safe)."""

    def __init__(self, capacity: int = MAX_TEMPLATES) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._templates: OrderedDict[tuple[Any, ...], _Template] = OrderedDict()

    def __len__(self) -> int:
        return len(self._templates)

    def clear(self) -> None:
        with self._lock:
            self._templates.clear()

    def learn(
        self,
        data: bytes | memoryview,
        source: Scan,
        *,
        config: DeidConfig,
        result: DeidResult,
        pieces: list[bytes | memoryview],
        info: ImageInfo,
    ) -> bool:
        """Keep the file ``data`` (scanned as ``source``), prepared the whole way without a
        warning into ``pieces`` (``result``, ``info``), as its series' template. False when it
        cannot serve as one (its output is not a file :func:`scan` reads, it has no state)."""
        if source.pixel.start > MAX_HEADER_BYTES:
            return False
        if len(pieces) > 1 and len(pieces[-1]) == source.pixel.length:  # the Pixel Data value
            out = b"".join(pieces[:-1])  # the header only: the pixels are not copied
            done = scan(out, pixels_after=source.pixel.length)
        else:
            out = b"".join(pieces)
            done = scan(out)
        ds = result.dataset
        if (
            done is None
            or result.state is None
            or result.warnings
            or info.warnings
            or done.syntax != source.syntax
            or done.pixel.length != source.pixel.length
            or ds.original_character_set != ds._character_set
        ):
            return False
        header = {t: e for t, e in ds._dict.items() if t != _PIXEL_DATA}
        header[BaseTag(_PIXEL_DATA)] = RawDataElement(
            BaseTag(_PIXEL_DATA), source.pixel.vr, 0, b"", 0, source.implicit, True
        )
        charset = next((e for e in source.elements if e.tag == 0x00080005), None)
        template = _Template(
            implicit=source.implicit,
            inputs={e.tag: bytes(data[e.value : e.end]) for e in source.elements},
            vrs={e.tag: e.vr for e in source.elements},
            outputs={e.tag: out[e.start : e.end] for e in done.elements},
            meta=[(e.tag, out[e.start : e.end]) for e in done.meta if e.tag != 0x00020000],
            pixel_head=out[done.pixel.start : done.pixel.value],
            state=result.state,
            patient=result.state.patient,
            reasons=tuple(result.reasons),
            pseudonym=result.pseudonym,
            info=info,
            info_reads=_info_reads(header, ds.file_meta, info),
            header=header,
            file_meta=ds.file_meta,
            charset=None if charset is None else _raw(data, charset, source.implicit),
            encodings=dataset_encodings(ds),
        )
        with self._lock:
            self._templates[_key(config, source, data)] = template
            while len(self._templates) > self._capacity:
                self._templates.popitem(last=False)
        return True

    def apply(
        self, data: bytes | memoryview, source: Scan, *, config: DeidConfig, ctx: DeidContext
    ) -> Reused | None:
        """``data`` (scanned as ``source``) prepared from its series' template, or None when it
        must go the whole way (no template, or a difference this module does not reuse)."""
        with self._lock:
            t = self._templates.get(_key(config, source, data))
        if t is None:
            return None
        changed = [e for e in source.elements if data[e.value : e.end] != t.inputs[e.tag]]
        vrs = t.vrs
        for e in changed:
            vr = vrs[e.tag] if not t.implicit else _implicit_vr(e.tag)
            if not independent_element(e.tag, vr, config):
                return None
        if ctx.pseudonyms.get_or_create(*t.patient) != t.pseudonym:
            return None  # another project's store, or another mapping
        if t.state.offset is not None and (
            ctx.date_offsets is None or ctx.date_offsets.get_or_create(t.pseudonym) != t.state.offset
        ):
            return None
        outputs = t.outputs
        meta = t.meta
        info = t.info
        if changed:
            redone = _redo(data, changed, t, config, ctx)
            if redone is None:
                return None
            encoded, mini = redone
            outputs = {**outputs, **encoded}
            header = dict(t.header)
            for tag in encoded:
                header[BaseTag(tag)] = mini[BaseTag(tag)]
            if _SOP_INSTANCE in encoded:
                uid = str(mini[BaseTag(_SOP_INSTANCE)].value).encode("latin-1")
                uid += b"\x00" * (len(uid) % 2)
                new = b"\x02\x00\x03\x00UI" + _U16.pack(len(uid)) + uid
                meta = [(tag, new if tag == _META_INSTANCE else b) for tag, b in meta]
            merged = Dataset(header)
            merged.file_meta = t.file_meta
            try:
                found = reread_info(t.info, merged, t.info_reads.intersection(encoded))
            except MedlabelError:
                return None  # the whole way words the error
            if found is None:
                sink: list[str] = []
                found = info_from_dataset(merged, warnings_sink=sink)
                if sink:
                    return None
            info = found
        group = b"".join(b for _, b in meta)
        head = b"".join(
            [
                b"\x00" * 128,
                b"DICM\x02\x00\x00\x00UL\x04\x00",
                _U32.pack(len(group)),
                group,
                *outputs.values(),
                t.pixel_head,
            ]
        )
        pixels = memoryview(data)[source.pixel.value : source.pixel.end]
        return Reused([head, pixels], info, t.reasons, t.pseudonym, len(changed))


def _redo(
    data: bytes | memoryview, changed: list[_Element], t: _Template, config: DeidConfig, ctx: DeidContext
) -> tuple[dict[int, bytes], Dataset] | None:
    """The changed elements de-identified under the template's state and encoded (tag → bytes
    of those kept), and the data set they were de-identified in; None when the result does not
    fit the template (a warning, an element removed here but kept there, or the reverse)."""
    mini = Dataset()
    if t.charset is not None:
        mini[BaseTag(0x00080005)] = t.charset  # type: ignore[assignment]
    for e in changed:
        mini[BaseTag(e.tag)] = _raw(data, e, t.implicit)  # type: ignore[assignment]
    encoded: dict[int, bytes] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes, dates_touched = deidentify_more(mini, config, ctx, t.state)
        if notes or (dates_touched and not t.state.dates_touched):
            return None
        encodings, dataset_encoding = t.encodings
        for e in changed:
            elem = mini._dict.get(BaseTag(e.tag))
            if (elem is None) != (e.tag not in t.outputs):
                return None
            if elem is not None:
                encoded[e.tag] = encode_element(
                    e.tag, elem, implicit=t.implicit, encodings=encodings, dataset_encoding=dataset_encoding
                )
    if caught:
        return None
    return encoded, mini


def _raw(data: bytes | memoryview, e: _Element, implicit: bool) -> RawDataElement:
    value = bytes(data[e.value : e.end])
    return RawDataElement(BaseTag(e.tag), e.vr, e.length, value, e.value, implicit, True)


def _implicit_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


class _ReadLog(dict[Any, Any]):
    """A data set's elements that note which tags were looked at (read or tested for)."""

    def __init__(self, elements: dict[Any, Any]) -> None:
        super().__init__(elements)
        self.seen: set[int] = set()

    def __getitem__(self, key: Any) -> Any:
        self.seen.add(int(key))
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.seen.add(int(key))
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        try:
            self.seen.add(int(key))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            pass
        return super().__contains__(key)

    def values(self) -> Any:
        self.seen.update(int(k) for k in self)
        return super().values()

    def items(self) -> Any:
        self.seen.update(int(k) for k in self)
        return super().items()


def _info_reads(header: dict[Any, Any], file_meta: FileMetaDataset, info: ImageInfo) -> frozenset[int]:
    """The top-level tags ``info_from_dataset`` looks at for this header: a file whose changed
    elements are none of these has the same info (it is a function of what it reads). Every tag
    when the reading does not give ``info`` again."""
    log = _ReadLog(header)
    ds = Dataset(log)
    ds.file_meta = file_meta
    try:
        again = info_from_dataset(ds)
    except MedlabelError:
        again = None
    if again != info:
        return frozenset(int(k) for k in header)
    return frozenset(log.seen)
