"""Multipart uploads streamed straight to disk (the import route).

Starlette's form parser spools every part to a temporary file (in memory up to 1 MiB), and the
route then copied each one to the upload folder: every byte was copied twice in Python, and at
most 1000 files were accepted. Here the body is parsed as it arrives (``python-multipart``, the
parser Starlette uses) and each ``files`` part is written once, to its final name in the upload
folder. The writes leave the event loop in batches of a few MiB (one thread hop per batch, not
per network chunk), so a slow disk never stalls other requests.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from medlabel.errors import InvalidInput, TooLarge
from medlabel.items.unpack import safe_name

__all__ = ["FIELD", "OPENAPI_BODY", "receive_files"]

#: The multipart field that carries the files (repeated).
FIELD = "files"
_BATCH = 4 << 20  # bytes handed to a thread per write batch
_MAX_HEADER = 16 << 10  # bytes of part headers (name, filename) per part

#: The request body in the OpenAPI document, as FastAPI would describe ``list[UploadFile]``.
OPENAPI_BODY: dict[str, Any] = {
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
                            "description": "DICOM, NIfTI, PNG/JPEG/TIFF, slides, or ZIPs of those",
                        }
                    },
                }
            }
        },
    }
}


class _Receiver:
    """python-multipart callbacks: ``files`` parts go to ``folder`` under :func:`safe_name`."""

    def __init__(self, folder: Path, charset: str, max_files: int) -> None:
        self.folder = folder
        self.charset = charset
        self.max_files = max_files
        self.files = 0
        self.header_name = b""
        self.header_value = b""
        self.header_bytes = 0
        self.disposition = b""
        self.target: Path | None = None  # the current part's file, None for other fields
        self.pending: list[tuple[Path, bytes | memoryview]] = []  # (file, data) not written yet, in order
        self.pending_bytes = 0
        self.opened: set[Path] = set()

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.charset)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("latin-1")

    def on_part_begin(self) -> None:
        self.disposition = b""
        self.header_bytes = 0
        self.target = None

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

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise InvalidInput('a multipart part has no Content-Disposition "name"')
        if self._decode(options[b"name"]) != FIELD:
            return  # another field: ignored, as FastAPI ignores unknown form fields
        if self.files >= self.max_files:
            raise TooLarge(f"an import takes at most {self.max_files} files")
        filename = self._decode(options.get(b"filename", b"")) or "file"
        self.target = self.folder / safe_name(filename, self.files)
        self.files += 1
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


async def receive_files(
    content_type: str, stream: AsyncIterator[bytes], folder: Path, *, max_files: int
) -> int:
    """Write the ``files`` parts of a ``multipart/form-data`` body to ``folder``; returns how
    many. Raises ``InvalidInput`` (422) for a body that is not multipart or has no ``files``."""
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
    rx = _Receiver(folder, charset, max_files)
    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": rx.on_part_begin,
            "on_part_data": rx.on_part_data,
            "on_header_field": rx.on_header_field,
            "on_header_value": rx.on_header_value,
            "on_header_end": rx.on_header_end,
            "on_headers_finished": rx.on_headers_finished,
        },
    )
    async for chunk in stream:
        try:
            parser.write(chunk)
        except ValueError as exc:  # python-multipart's MultipartParseError
            raise InvalidInput(f"malformed multipart body: {exc}") from exc
        if rx.pending_bytes >= _BATCH:
            await run_in_threadpool(rx.write_pending)
    try:
        parser.finalize()
    except ValueError as exc:
        raise InvalidInput(f"malformed multipart body: {exc}") from exc
    if rx.pending:
        await run_in_threadpool(rx.write_pending)
    if rx.files == 0:
        raise InvalidInput("no 'files' part in the upload", detail={"field": FIELD})
    return rx.files
