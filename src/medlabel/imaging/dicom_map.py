"""Read a big DICOM file without loading its Pixel Data: the header is parsed by pydicom, the
pixel value is a view of the memory-mapped file.

A whole-slide level or a breast tomosynthesis instance can be gigabytes. ``open_mapped(path)``
reads the data set up to (7FE0,0010) Pixel Data with pydicom, then maps the file and gives the
Pixel Data element, as pydicom would read it, a ``memoryview`` of the mapping as its value: the
bytes stay in the page cache and are read only where something looks at them (a frame decoded
for the import's pixel check, the writer copying them out). Everything else — the pixel check,
de-identification, ``encode_dataset`` — works on that data set unchanged and produces the same
bytes as from a data set read whole (tested).

Only the common layout is mapped: little endian (explicit or implicit VR, not deflated), Pixel
Data last, followed by nothing but Data Set Trailing Padding (FFFC,FFFC). Anything else returns
``None`` and the caller reads the file whole as before.
"""

from __future__ import annotations

import io
import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from medlabel.imaging.dicom import open_dataset

__all__ = ["open_mapped", "decodable", "MappedWindow"]

_PIXEL = BaseTag(0x7FE00010)
_LITTLE_ENDIAN = {"1.2.840.10008.1.2": True}  # implicit VR; every other mapped syntax is explicit
_NOT_MAPPED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}  # deflated; big endian (retired)
_ITEM, _SEQ_END, _PADDING = 0xE000FFFE, 0xE0DDFFFE, 0xFFFCFFFC
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


def open_mapped(path: Path | str, *, warnings_sink: list[str] | None = None) -> Dataset | None:
    """The data set of ``path`` with its Pixel Data mapped, not read (see the module); None when
    the file's layout is not the common one. Errors in the header raise as ``open_dataset``."""
    with open(path, "rb") as fp:
        ds = open_dataset(fp, stop_before_pixels=True, warnings_sink=warnings_sink)
        start = fp.tell()
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
        if not ts or ts in _NOT_MAPPED:
            return None
        try:
            mapped = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty, or not mappable
            return None
    element = _pixel_element(mapped, start, implicit=ts in _LITTLE_ENDIAN)
    if element is None:
        mapped.close()
        return None
    ds._dict[_PIXEL] = element  # noqa: SLF001  (as pydicom's reader stores a raw element)
    return ds


def _pixel_element(mapped: mmap.mmap, start: int, *, implicit: bool) -> RawDataElement | None:
    size = len(mapped)
    if start + 12 > size or struct.unpack_from("<HH", mapped, start) != (0x7FE0, 0x0010):
        return None
    vr: str | None
    if implicit:
        vr, (length,), value_at = None, struct.unpack_from("<I", mapped, start + 4), start + 8
    else:
        raw_vr = bytes(mapped[start + 4 : start + 6])
        if raw_vr not in (b"OB", b"OW"):
            return None
        vr, (length,), value_at = raw_vr.decode(), struct.unpack_from("<I", mapped, start + 8), start + 12
    if length == 0xFFFFFFFF:  # encapsulated: items up to the sequence delimiter
        at = value_at
        while True:
            if at + 8 > size:
                return None  # cut short: the whole-file read reports it properly
            tag, item_length = struct.unpack_from("<II", mapped, at)
            if tag == _SEQ_END:
                end, after = at, at + 8
                break
            if tag != _ITEM or item_length == 0xFFFFFFFF:
                return None
            at += 8 + item_length
    else:
        end = after = value_at + length
        if end > size:
            return None
    if not _only_padding(mapped, after, implicit=implicit):
        return None
    value = memoryview(mapped)[value_at:end]
    return RawDataElement(_PIXEL, vr, length, value, value_at, implicit, True)  # type: ignore[arg-type]


def _only_padding(mapped: mmap.mmap, at: int, *, implicit: bool) -> bool:
    """Whether nothing but Data Set Trailing Padding follows the pixels (which de-identification
    removes: PS3.15 Table E.1-1, action X)."""
    size = len(mapped)
    while at < size:
        if at + 8 > size:
            return False
        (tag,) = struct.unpack_from("<I", mapped, at)
        tag = ((tag & 0xFFFF) << 16) | (tag >> 16)
        if tag != _PADDING:
            return False
        if implicit:
            (length,) = struct.unpack_from("<I", mapped, at + 4)
            at += 8 + length
        elif bytes(mapped[at + 4 : at + 6]) in _LONG_VRS:
            if at + 12 > size:
                return False
            (length,) = struct.unpack_from("<I", mapped, at + 8)
            at += 12 + length
        else:
            (length,) = struct.unpack_from("<H", mapped, at + 6)
            at += 8 + length
        if length == 0xFFFFFFFF:
            return False
    return at == size


class MappedWindow(io.BufferedIOBase):
    """A read-only file over a ``memoryview``: pydicom's decoders take encapsulated frames from a
    buffer (a file-like value), reading only the frames asked for."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        stop = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        out = bytes(self._view[self._pos : stop])
        self._pos = max(self._pos, stop)
        return out

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


@contextmanager
def decodable(ds: Dataset) -> Iterator[None]:
    """While inside, a mapped encapsulated Pixel Data value is a :class:`MappedWindow`, which
    pydicom's decoders read frame by frame (they take a ``memoryview`` for a file-like buffer
    otherwise); a native value stays a view, which they read as bytes."""
    raw = ds._dict.get(_PIXEL)  # noqa: SLF001
    swap = isinstance(raw, RawDataElement) and isinstance(raw.value, memoryview) and raw.length == 0xFFFFFFFF
    if swap:
        assert isinstance(raw, RawDataElement) and isinstance(raw.value, memoryview)
        ds._dict[_PIXEL] = raw._replace(value=MappedWindow(raw.value))  # type: ignore[arg-type]  # noqa: SLF001
    try:
        yield
    finally:
        if swap:
            ds._dict[_PIXEL] = raw  # type: ignore[assignment]  # noqa: SLF001
