"""Multipart uploads parsed as they stream in (the import route, upload-session batches).

Starlette's form parser spools every part to a temporary file (in memory up to 1 MiB), and the
route then copied each one to the upload folder: every byte was copied twice in Python, and at
most 1000 files were accepted. Here the body is parsed as it arrives and each ``files`` part is
written once, to its final name in the upload folder (``receive_files``). The writes leave the
event loop in batches of a few MiB (one thread hop per batch, not per network chunk), so a slow
disk never stalls other requests.

``iter_file_parts`` is the parsing for an upload session's batch route: each ``files`` part is
handed over (in memory, or spooled to a file when big) as soon as it has been received whole,
so the route prepares it while the rest of the body arrives.

Both cut the body at its delimiters with ``bytes.find`` (``_Splitter``) rather than
python-multipart's per-byte state machine (the batch route receives hundreds of files a second
on one event loop); python-multipart's option-header parser reads the part headers. A body cut
short inside a part is refused (422).
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from medlabel.errors import InvalidInput, TooLarge
from medlabel.items.unpack import safe_name

__all__ = ["FIELD", "OPENAPI_BODY", "FilePart", "iter_file_parts", "openapi_body", "receive_files"]

#: The multipart field that carries the files (repeated).
FIELD = "files"
_BATCH = 4 << 20  # bytes handed to a thread per write batch
_MAX_HEADER = 16 << 10  # bytes of part headers (name, filename) per part

def openapi_body(description: str) -> dict[str, Any]:
    """A multipart body of ``files`` parts in the OpenAPI document, as FastAPI would describe
    ``list[UploadFile]``; ``description`` says what the files may be."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [FIELD],
                        "properties": {
                            FIELD: {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": description,
                            }
                        },
                    }
                }
            },
        }
    }


#: The import route's request body in the OpenAPI document.
OPENAPI_BODY: dict[str, Any] = openapi_body("DICOM, NIfTI, PNG/JPEG/TIFF, slides, or ZIPs of those")


class _Parts:
    """The part callbacks (python-multipart's protocol, called by ``_Splitter``) shared by the receivers: which part is a ``files`` part,
    and its file name; a part's headers are capped at ``_MAX_HEADER`` bytes and the ``files``
    parts at ``max_files`` (413)."""

    def __init__(self, charset: str, max_files: int, what: str) -> None:
        self.charset = charset
        self.max_files = max_files
        self.what = what  # "an import", "a request": for the 413 message
        self.files = 0
        self.header_name = b""
        self.header_value = b""
        self.header_bytes = 0
        self.disposition = b""

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.charset)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("latin-1")

    def on_part_begin(self) -> None:
        self.disposition = b""
        self.header_bytes = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_value += data[start:end]

    def _count_header(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > _MAX_HEADER:
            raise InvalidInput(f"a multipart part has over {_MAX_HEADER} bytes of headers")

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def file_part(self) -> str | None:
        """At the end of a part's headers: the file name of a ``files`` part ("" when it has
        none), None for another field (ignored, as FastAPI ignores unknown form fields)."""
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise InvalidInput('a multipart part has no Content-Disposition "name"')
        if self._decode(options[b"name"]) != FIELD:
            return None
        if self.files >= self.max_files:
            raise TooLarge(f"{self.what} takes at most {self.max_files} files", detail={"limit": self.max_files})
        self.files += 1
        return self._decode(options.get(b"filename", b""))

    def on_headers_finished(self) -> None:
        raise NotImplementedError

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        raise NotImplementedError

    def on_part_end(self) -> None:
        pass


class _Receiver(_Parts):
    """``files`` parts go to ``folder`` under :func:`safe_name`."""

    def __init__(self, folder: Path, charset: str, max_files: int) -> None:
        super().__init__(charset, max_files, "an import")
        self.folder = folder
        self.target: Path | None = None  # the current part's file, None for other fields
        self.pending: list[tuple[Path, bytes | memoryview]] = []  # (file, data) not written yet, in order
        self.pending_bytes = 0
        self.opened: set[Path] = set()

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self.target = None

    def on_headers_finished(self) -> None:
        filename = self.file_part()
        if filename is None:
            return
        self.target = self.folder / safe_name(filename or "file", self.files - 1)
        self.pending.append((self.target, b""))  # creates the file even when it is empty

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.target is not None and end > start:
            # a received chunk is immutable bytes: keep a view, not a copy (the parser's own
            # look-behind buffer is not, so that is copied)
            piece = memoryview(data)[start:end] if isinstance(data, bytes) else bytes(data[start:end])
            self.pending.append((self.target, piece))
            self.pending_bytes += end - start

    def write_pending(self) -> None:
        """Append the pending data to the files (runs on a worker thread)."""
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        out: IO[bytes] | None = None
        current: Path | None = None
        try:
            for path, data in batch:
                if path != current:
                    if out is not None:
                        out.close()
                    out = open(path, "ab" if path in self.opened else "xb")  # noqa: SIM115
                    self.opened.add(path)
                    current = path
                if data:
                    out.write(data)  # type: ignore[union-attr]
        finally:
            if out is not None:
                out.close()


def _multipart(content_type: str) -> tuple[bytes, str]:
    """The boundary and charset of a ``multipart/form-data`` body; 422 for any other body."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidInput(
            "expected a multipart/form-data body with one or more 'files' parts",
            detail={"field": FIELD},
        )
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    return params[b"boundary"], charset


async def receive_files(
    content_type: str, stream: AsyncIterator[bytes], folder: Path, *, max_files: int
) -> int:
    """Write the ``files`` parts of a ``multipart/form-data`` body to ``folder``; returns how
    many. Raises ``InvalidInput`` (422) for a body that is not multipart or has no ``files``."""
    boundary, charset = _multipart(content_type)
    rx = _Receiver(folder, charset, max_files)
    splitter = _Splitter(boundary, rx)
    async for chunk in stream:
        splitter.write(chunk)
        if rx.pending_bytes >= _BATCH:
            await run_in_threadpool(rx.write_pending)
    if rx.pending:
        await run_in_threadpool(rx.write_pending)
    if rx.files == 0:
        raise InvalidInput("no 'files' part in the upload", detail={"field": FIELD})
    splitter.finish()  # a body cut short inside a part: 422 (the caller removes the folder)
    return rx.files


# ---------------------------------------------------------------- parts one by one


@dataclass(slots=True)
class FilePart:
    """A ``files`` part received whole: its place among the ``files`` parts (from 0), its file
    name as sent ("" when it has none), and its bytes, or the file it was spooled to when it
    was bigger than ``in_memory`` (``data`` is then None; the caller deletes the file)."""

    index: int
    filename: str
    data: bytes | None
    path: Path | None
    size: int


@dataclass(slots=True)
class _Current:
    index: int
    filename: str
    pieces: list[bytes | memoryview] = field(default_factory=list)
    size: int = 0
    pending: int = 0  # bytes in ``pieces``
    spool: IO[bytes] | None = None
    path: Path | None = None


class _Collector(_Parts):
    """``files`` parts collected in memory; each finished one waits in ``done``."""

    def __init__(self, charset: str, max_files: int) -> None:
        super().__init__(charset, max_files, "a request")
        self.current: _Current | None = None
        self.done: list[_Current] = []

    def on_headers_finished(self) -> None:
        filename = self.file_part()
        self.current = None if filename is None else _Current(self.files - 1, filename)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        cur = self.current
        if cur is not None and end > start:
            # a view of the received chunk, not a copy (the parser's look-behind buffer is
            # reused, so that one is copied)
            cur.pieces.append(memoryview(data)[start:end] if isinstance(data, bytes) else bytes(data[start:end]))
            cur.size += end - start
            cur.pending += end - start

    def on_part_end(self) -> None:
        if self.current is not None:
            self.done.append(self.current)
            self.current = None


_PREAMBLE, _AFTER, _DATA, _EPILOGUE = range(4)  # where a ``_Splitter`` is in the body
_HEAD_STEP = 4 << 10  # bytes of a chunk looked at per step for the end of a part's headers


class _Splitter:
    """A ``multipart/form-data`` body (RFC 7578, RFC 2046 5.1) cut at its delimiters with
    ``bytes.find``, the parts' data handed to ``parts`` as views of the received chunks (both
    routes: the import's ``_Receiver``, the batch's ``_Collector``).

    python-multipart (the parser Starlette uses, and these routes before) runs a state machine
    in Python over every chunk and calls back per piece; for an upload batch (hundreds of
    0.5 MiB files a second) that cost ≈ 0.04 ms more of the event loop's time a file. The part
    headers go through python-multipart's callback protocol, which ``_Parts`` implements
    (names, file names, the limits). Only CRLF line ends are taken, as python-multipart takes
    them; unlike it, a preamble and transport padding after a boundary are skipped."""

    def __init__(self, boundary: bytes, parts: _Parts) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.parts = parts
        self.state = _PREAMBLE
        self.carry = b"\r\n"  # held back: maybe the start of a delimiter (the first has no CRLF)
        self.head = bytearray()  # after a delimiter: the rest of its line and the part's headers

    def write(self, chunk: bytes) -> None:
        at: int | None = 0
        while at is not None and at < len(chunk):
            if self.state == _DATA or self.state == _PREAMBLE:
                at = self._data(chunk, at)
            elif self.state == _AFTER:
                at = self._after(chunk, at)
            else:  # the epilogue is ignored
                return

    def finish(self) -> None:
        """At the end of the body: raises ``InvalidInput`` when it ends inside a part."""
        if self.state in (_DATA, _AFTER):
            raise InvalidInput("malformed multipart body: it ends inside a part")

    def _emit(self, data: bytes, start: int, end: int) -> None:
        if self.state == _DATA and end > start:
            self.parts.on_part_data(data, start, end)

    def _data(self, chunk: bytes, at: int) -> int | None:
        """Part data (or the preamble) up to the next delimiter; the position after it, or None
        when the chunk ended first."""
        d = self.delimiter
        size = len(d)
        if self.carry:
            carry, self.carry = self.carry, b""
            if len(chunk) - at < size:  # too little to tell alone: look at both together
                both = carry + chunk[at:]
                i = both.find(d)
                if i != -1:
                    self._emit(both, 0, i)
                    return self._delimited(at + i + size - len(carry))
                cut = max(0, len(both) - (size - 1))
                self._emit(both, 0, cut)
                self.carry = both[cut:]
                return None
            seam = carry + chunk[at : at + size - 1]
            i = seam.find(d)
            if i != -1:  # a delimiter starting in what was held back
                self._emit(carry, 0, i)
                return self._delimited(at + i + size - len(carry))
            self._emit(carry, 0, len(carry))
        i = chunk.find(d, at)
        if i != -1:
            self._emit(chunk, at, i)
            return self._delimited(i + size)
        cut = max(at, len(chunk) - (size - 1))
        self._emit(chunk, at, cut)
        self.carry = chunk[cut:]
        return None

    def _delimited(self, after: int) -> int:
        if self.state == _DATA:
            self.parts.on_part_end()
        self.state = _AFTER
        self.head.clear()
        return after

    def _after(self, chunk: bytes, at: int) -> int | None:
        """After a delimiter: ``--`` (the close), or transport padding, CRLF and the part's
        header lines up to an empty line; the position where the part's data starts."""
        head = self.head
        while at < len(chunk):
            before = len(head)
            head += chunk[at : at + _HEAD_STEP]
            if head[:2] == b"--":
                self.state = _EPILOGUE
                return len(chunk)
            end = head.find(b"\r\n\r\n", max(before - 3, 0))
            if end == -1:
                if len(head) > _MAX_HEADER + 256:
                    raise InvalidInput(f"a multipart part has over {_MAX_HEADER} bytes of headers")
                at += len(head) - before
                continue
            self._headers(bytes(head[: end + 2]))
            self.state = _DATA
            return at + end + 4 - before
        return None

    def _headers(self, block: bytes) -> None:
        """The delimiter's line (only blanks may follow the boundary) and the header lines."""
        line, _, rest = block.partition(b"\r\n")
        if line.strip(b" \t"):
            raise InvalidInput("malformed multipart body: a boundary line goes on after the boundary")
        parts = self.parts
        parts.on_part_begin()
        for header in rest.split(b"\r\n")[:-1]:
            name, colon, value = header.partition(b":")
            if not colon or not name or b"\r" in header or b"\n" in header:
                raise InvalidInput(f"malformed multipart body: a part header line is not 'name: value': {header[:60]!r}")
            name, value = name.strip(b" \t"), value.strip(b" \t")
            parts.on_header_field(name, 0, len(name))
            parts.on_header_value(value, 0, len(value))
            parts.on_header_end()
        parts.on_headers_finished()


async def _spool(part: _Current, spool_to: Callable[[], Path]) -> None:
    """Append the part's pending data to its spool file (opened first when needed), off the loop."""
    if part.spool is None:
        part.path = spool_to()
        part.spool = await run_in_threadpool(open, part.path, "xb")
    pieces, part.pieces, part.pending = part.pieces, [], 0
    await run_in_threadpool(part.spool.writelines, pieces)


async def _finished(part: _Current, in_memory: int, spool_to: Callable[[], Path]) -> FilePart:
    if part.spool is None and part.size <= in_memory:
        return FilePart(part.index, part.filename, b"".join(part.pieces), None, part.size)
    await _spool(part, spool_to)
    assert part.spool is not None
    spool, part.spool = part.spool, None
    await run_in_threadpool(spool.close)
    return FilePart(part.index, part.filename, None, part.path, part.size)


def _drop(parts: list[_Current]) -> None:
    for part in parts:
        if part.spool is not None:
            part.spool.close()
        if part.path is not None:
            part.path.unlink(missing_ok=True)


async def iter_file_parts(
    content_type: str,
    stream: AsyncIterator[bytes],
    *,
    max_files: int,
    in_memory: int,
    spool_to: Callable[[], Path],
) -> AsyncGenerator[FilePart, None]:
    """The ``files`` parts of a ``multipart/form-data`` body, each as soon as it has been
    received whole, while the rest of the body is still to come (the caller's pace sets the
    reading's: a slow consumer holds the client back, not memory). A part is kept in memory up
    to ``in_memory`` bytes; a bigger one is written, a few MiB per thread hop, to a fresh file
    ``spool_to()``. Other form fields are ignored.

    Raises ``InvalidInput`` (422) for a body that is not multipart, is malformed, or has no
    ``files`` part, and ``TooLarge`` (413) at the ``files`` part after ``max_files`` (the parts
    before it have been yielded). Use it under ``contextlib.aclosing``: a part not yet yielded
    when the caller stops has its spool file deleted."""
    boundary, charset = _multipart(content_type)
    rx = _Collector(charset, max_files)
    splitter = _Splitter(boundary, rx)
    try:
        async for chunk in stream:
            try:
                splitter.write(chunk)
            finally:  # the parts completed before a refusal in this chunk come first
                while rx.done:
                    yield await _finished(rx.done.pop(0), in_memory, spool_to)
            cur = rx.current
            if cur is not None and cur.size > in_memory and (cur.spool is None or cur.pending >= _BATCH):
                await _spool(cur, spool_to)
        if rx.files == 0:
            raise InvalidInput("no 'files' part in the upload", detail={"field": FIELD})
        splitter.finish()
    finally:
        _drop([*rx.done, *([rx.current] if rx.current is not None else [])])
