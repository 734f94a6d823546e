"""The batch route's multipart splitter (``medlabel.api.uploads._Splitter`` through
``iter_file_parts``) against python-multipart, the parser Starlette uses, on generated bodies:
random boundaries, data full of near-delimiters, every way of cutting the body into chunks."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from python_multipart.multipart import MultipartParser

from medlabel.api import uploads
from medlabel.errors import InvalidInput, TooLarge


def _ours(boundary: str, chunks: list[bytes], max_files: int = 1000) -> list[tuple[str, bytes]]:
    async def stream():  # type: ignore[no-untyped-def]
        for c in chunks:
            yield c

    async def run() -> list[tuple[str, bytes]]:
        out = []
        async for p in uploads.iter_file_parts(
            f"multipart/form-data; boundary={boundary}",
            stream(),
            max_files=max_files,
            in_memory=1 << 30,
            spool_to=lambda: Path("/nonexistent"),
        ):
            assert p.data is not None
            out.append((p.filename, p.data))
        return out

    return asyncio.run(run())


def _theirs(boundary: str, body: bytes) -> list[tuple[str, bytes]]:
    """python-multipart's reading: (file name, data) of every part."""
    parts: list[list] = []
    header: dict[str, bytes] = {"field": b"", "value": b""}
    heads: dict[bytes, bytes] = {}

    def on_part_begin() -> None:
        heads.clear()
        parts.append(["", bytearray()])

    def on_header_field(d: bytes, s: int, e: int) -> None:
        header["field"] += d[s:e]

    def on_header_value(d: bytes, s: int, e: int) -> None:
        header["value"] += d[s:e]

    def on_header_end() -> None:
        heads[header["field"].lower()] = header["value"]
        header["field"] = header["value"] = b""

    def on_headers_finished() -> None:
        _, options = uploads.parse_options_header(heads[b"content-disposition"])
        parts[-1][0] = options[b"filename"].decode()

    def on_part_data(d: bytes, s: int, e: int) -> None:
        parts[-1][1] += d[s:e]

    parser = MultipartParser(
        boundary.encode(),
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    parser.write(body)
    parser.finalize()
    return [(n, bytes(d)) for n, d in parts]


def _body(rng: random.Random) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    boundary = "b" + "".join(rng.choice("abcXYZ019-'()+_,./:=?") for _ in range(rng.randint(1, 40)))
    bb = boundary.encode()
    delimiter = b"\r\n--" + bb
    parts = []
    for i in range(rng.randint(1, 5)):
        # data made of pieces of the delimiter: CRs, LFs, dashes and boundary prefixes
        pieces = [b"\r", b"\n", b"-", b"x", b"\r\n", bb[: rng.randint(0, len(bb))], delimiter[: rng.randint(1, len(delimiter) - 1)]]
        data = b"".join(rng.choice(pieces) for _ in range(rng.choice([0, 1, 4, 40, 2000])))
        while delimiter in data:
            data = data.replace(delimiter, b"")
        parts.append((f"f{i}-{rng.randint(0, 99)}.dcm", data))
    body = b""
    for name, data in parts:
        body += (
            b"--" + bb + b"\r\n"
            + f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'.encode()
            + (b"Content-Type: application/dicom\r\n" if rng.random() < 0.5 else b"")
            + b"\r\n" + data + b"\r\n"
        )
    body += b"--" + bb + b"--\r\n" + (b"an epilogue" if rng.random() < 0.3 else b"")
    return boundary, body, parts


def _chunks(rng: random.Random, body: bytes) -> list[bytes]:
    most = rng.choice([1, 2, 3, 7, 64, 1000, 1 << 20])
    out, at = [], 0
    while at < len(body):
        n = rng.randint(1, most)
        out.append(body[at : at + n])
        at += n
    return out


@pytest.mark.parametrize("seed", range(8))
def test_parts_as_python_multipart_reads_them_in_any_chunking(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        boundary, body, parts = _body(rng)
        assert _theirs(boundary, body) == parts  # the generator makes what the oracle reads
        # a preamble (RFC 2046 5.1.1; python-multipart refuses one) is skipped
        preamble = rng.choice([b"", b"", b"a preamble\r\n", b"--" + boundary.encode()[:-1] + b"\r\n"])
        assert _ours(boundary, _chunks(rng, preamble + body)) == parts


@pytest.mark.parametrize("seed", range(4))
def test_a_body_cut_short_is_refused(seed: int) -> None:
    """Cut anywhere before its close, a body is refused (422), after the parts received whole."""
    rng = random.Random(100 + seed)
    for _ in range(60):
        boundary, body, parts = _body(rng)
        close = body.rindex(b"\r\n--" + boundary.encode() + b"--")
        cut = rng.randint(1, close)
        with pytest.raises(InvalidInput, match="ends inside a part|no 'files' part"):
            _ours(boundary, _chunks(rng, body[:cut]))


def test_malformed_headers_and_limits() -> None:
    ok = b'--B\r\nContent-Disposition: form-data; name="files"; filename="a"\r\n\r\nAA\r\n'
    close = b"--B--\r\n"
    assert _ours("B", [ok + close]) == [("a", b"AA")]
    bad_lines = [
        b"--B\r\nContent-Disposition form-data\r\n\r\nx\r\n",  # no colon
        b'--B\r\nContent-Disposition: form-data; name="files"\rX: y\r\n\r\nx\r\n',  # a bare CR
        b"--Bx\r\nContent-Disposition: form-data; name=files\r\n\r\nx\r\n",  # the line goes on
    ]
    for bad in bad_lines:
        with pytest.raises(InvalidInput, match="malformed multipart body"):
            _ours("B", [ok + bad + close])
    huge = b"--B\r\nX-Pad: " + b"p" * (20 << 10) + b"\r\n\r\nx\r\n"
    with pytest.raises(InvalidInput, match="bytes of headers"):
        _ours("B", [ok + huge + close])
    with pytest.raises(TooLarge):
        _ours("B", [ok + ok + close], max_files=1)
    # transport padding after a boundary (RFC 2046 5.1.1), which python-multipart refuses
    assert _ours("B", [ok.replace(b"--B\r\n", b"--B \t\r\n") + close]) == [("a", b"AA")]
    other = b'--B\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
    assert _ours("B", [other + ok + close]) == [("a", b"AA")]  # other fields are ignored
    with pytest.raises(InvalidInput, match="no 'files' part"):
        _ours("B", [other + close])
