"""COCO-compatible run-length encoding of one 2D binary mask.

The format is exactly the one pycocotools reads and writes (``pycocotools.mask``):

* the mask is flattened in **column-major** (Fortran, ``order="F"``) order, i.e. down the first
  column, then down the second, …;
* ``counts`` alternates run lengths of 0s and 1s and **always starts with a run of 0s** (which is
  ``0`` when the first pixel is set);
* ``size`` is ``[height, width]`` (rows, columns).

The *compressed* form stores ``counts`` as an ASCII string: each count (for ``i > 2`` the
difference to the count two places back) is written as a little-endian sequence of 5-bit groups,
each group offset by 48 (``'0'``), bit ``0x20`` meaning "more groups follow" and bit ``0x10`` of
the last group carrying the sign. Tests check every function here against pycocotools' own
encoder and decoder; we do not depend on pycocotools at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medlabel.errors import InvalidInput

__all__ = [
    "RLE",
    "encode",
    "decode",
    "area",
    "merge",
    "bbox",
    "counts_to_string",
    "string_to_counts",
]


def counts_to_string(counts: Sequence[int]) -> str:
    """Compress uncompressed COCO ``counts`` into pycocotools' ASCII string form."""
    out: list[str] = []
    for i, count in enumerate(counts):
        x = int(count)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, like the C `long` in pycocotools
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(text: str | bytes) -> list[int]:
    """Expand pycocotools' compressed ASCII ``counts`` back into a list of run lengths."""
    try:
        data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"RLE counts string has non-ASCII character {text[exc.start]!r} at {exc.start}; expected "
            "characters '0'..'o' of the COCO compressed RLE alphabet"
        ) from exc
    counts: list[int] = []
    p = 0
    n = len(data)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise InvalidInput(
                    f"RLE counts string is truncated at byte {p}: the last group has the "
                    "'more follows' bit set but nothing follows (COCO compressed RLE)",
                    detail={"position": p},
                )
            c = data[p] - 48
            if c < 0 or c > 63:
                raise InvalidInput(
                    f"RLE counts string has byte {data[p]!r} at {p}; expected characters "
                    "'0'..'o' (48..111) of the COCO compressed RLE alphabet",
                    detail={"position": p},
                )
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


@dataclass(frozen=True, slots=True)
class RLE:
    """A COCO run-length-encoded 2D binary mask: ``size = (height, width)``, uncompressed ``counts``.

    The constructor checks that the counts are non-negative and sum to ``height * width``.
    """

    height: int
    width: int
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.height < 0 or self.width < 0:
            raise InvalidInput(
                f"RLE size [{self.height}, {self.width}] is negative; expected [height, width] >= 0"
            )
        if any(c < 0 for c in self.counts):
            raise InvalidInput(
                f"RLE counts contain a negative run length; expected counts >= 0: {list(self.counts)[:10]}…"
            )
        total = sum(self.counts)
        if total != self.height * self.width:
            raise InvalidInput(
                f"RLE counts sum to {total}, expected height*width = {self.height}*{self.width} = "
                f"{self.height * self.width} (COCO RLE covers every pixel exactly once)"
            )

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def area(self) -> int:
        """Number of set pixels (sum of the odd-indexed runs)."""
        return int(sum(self.counts[1::2]))

    def to_dict(self, *, compressed: bool = True) -> dict[str, Any]:
        """COCO JSON: ``{"size": [h, w], "counts": "<string>"}`` or with a list of ints."""
        counts: str | list[int] = (
            counts_to_string(self.counts) if compressed else [int(c) for c in self.counts]
        )
        return {"size": [self.height, self.width], "counts": counts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RLE:
        """Read COCO JSON RLE, compressed (``str``/``bytes`` counts) or uncompressed (list)."""
        try:
            size = data["size"]
            raw = data["counts"]
        except (KeyError, TypeError) as exc:
            raise InvalidInput(
                f"RLE {data!r} lacks 'size' or 'counts'; expected {{'size': [h, w], 'counts': ...}}"
            ) from exc
        if not (
            isinstance(size, list | tuple)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        ):
            raise InvalidInput(f"RLE size {size!r} is not [height, width] as two integers")
        if isinstance(raw, str | bytes):
            counts = string_to_counts(raw)
        elif isinstance(raw, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw
        ):
            counts = [int(v) for v in raw]
        else:
            raise InvalidInput(
                f"RLE counts of type {type(raw).__name__} are neither a compressed string nor a "
                "list of integers (COCO RLE)"
            )
        return cls(int(size[0]), int(size[1]), tuple(counts))


def encode(mask: npt.ArrayLike) -> RLE:
    """Encode a 2D binary mask (any dtype; non-zero is foreground) as COCO RLE."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInput(f"cannot RLE-encode an array of shape {arr.shape}; expected a 2D mask (h, w)")
    h, w = arr.shape
    flat = arr.ravel(order="F") != 0
    n = flat.size
    if n == 0:
        return RLE(h, w, ())
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [n]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return RLE(h, w, tuple(int(r) for r in runs))


def decode(rle: RLE) -> npt.NDArray[np.uint8]:
    """Decode COCO RLE into a ``(height, width)`` uint8 array of 0/1."""
    n = rle.height * rle.width
    values = np.zeros(len(rle.counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, np.asarray(rle.counts, dtype=np.int64)) if n else np.zeros(0, np.uint8)
    return flat.reshape((rle.height, rle.width), order="F")


def area(rle: RLE) -> int:
    """Number of foreground pixels."""
    return rle.area


def bbox(rle: RLE) -> tuple[float, float, float, float] | None:
    """Tight box ``(x, y, width, height)`` in pixels around the foreground, or None when empty."""
    m = decode(rle)
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    return (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))


def merge(rles: Iterable[RLE], *, intersect: bool = False) -> RLE:
    """Union (or, with ``intersect=True``, intersection) of masks of the same size.

    Same semantics as ``pycocotools.mask.merge``.
    """
    items = list(rles)
    if not items:
        raise InvalidInput("cannot merge an empty list of RLE masks; expected at least one")
    size = items[0].size
    for i, r in enumerate(items):
        if r.size != size:
            raise InvalidInput(
                f"RLE #{i} has size {list(r.size)}, expected {list(size)} like RLE #0 "
                "(merge needs equal sizes)"
            )
    acc = decode(items[0]).astype(bool)
    for r in items[1:]:
        acc = (acc & decode(r).astype(bool)) if intersect else (acc | decode(r).astype(bool))
    return encode(acc)
