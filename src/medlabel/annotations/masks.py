"""Compact storage of 3D masks: never raw arrays in JSON.

Two encodings, both loss-free and both JSON-safe:

``rle-slices``
    One COCO RLE (see :mod:`medlabel.annotations.rle`) per non-empty slice along axis 0
    (``{"encoding": "rle-slices", "shape": [d, h, w], "slices": {"12": {"size":…, "counts":"…"}}}``).
    Empty slices are omitted. Best for sparse lesions in big CT volumes and readable by any COCO tool
    slice by slice.
``packbits-zlib``
    A binary volume bit-packed with ``np.packbits`` (C order, big-endian bits) then zlib-compressed
    and base64-encoded, with the shape and dtype in a header
    (``{"encoding": "packbits-zlib", "shape": […], "dtype": "bool", "data": "<base64>"}``).
    Integer label maps (``uint8``/``uint16``) use ``zlib`` over the raw C-order bytes instead
    (``"encoding": "zlib"``, dtype as a little-endian numpy string such as ``"<u2"``).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medlabel.annotations import rle as _rle
from medlabel.errors import InvalidInput

__all__ = ["VolumeMask", "PackedArray", "pack_array", "unpack_array"]

_LABEL_DTYPES = ("|u1", "<u2", "<u4")


@dataclass(frozen=True, slots=True)
class PackedArray:
    """A compressed N-d array with its header; ``data`` is the compressed payload bytes."""

    encoding: str  # "packbits-zlib" (binary) or "zlib" (integer label map)
    shape: tuple[int, ...]
    dtype: str  # "bool" or a numpy dtype string such as "|u1", "<u2"
    data: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoding": self.encoding,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "data": base64.b64encode(self.data).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackedArray:
        if not isinstance(data, Mapping):
            raise InvalidInput(f"packed array {data!r:.80} is not a JSON object")
        try:
            enc = str(data["encoding"])
            shape = _shape(data["shape"], None)
            dtype = str(data["dtype"])
            payload = base64.b64decode(str(data["data"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise InvalidInput(
                f"packed array header {sorted(map(str, data))} is malformed; expected keys encoding, "
                "shape, dtype and base64 data"
            ) from exc
        return cls(enc, shape, dtype, payload)


def _shape(raw: Any, ndim: int | None) -> tuple[int, ...]:
    if (
        not isinstance(raw, list | tuple)
        or (ndim is not None and len(raw) != ndim)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw)
    ):
        want = f"{ndim} " if ndim else ""
        raise InvalidInput(f"mask shape {raw!r:.80} is not a list of {want}non-negative integers")
    return tuple(raw)


def pack_array(arr: npt.ArrayLike) -> PackedArray:
    """Compress a binary (bool/0-1) or integer label array into a :class:`PackedArray`."""
    a = np.asarray(arr)
    if a.dtype == bool:
        return PackedArray(
            "packbits-zlib", a.shape, "bool", zlib.compress(np.packbits(a, axis=None).tobytes())
        )
    if a.dtype.kind in "ui":
        if a.size and (a.min() < 0):
            raise InvalidInput(f"label array has negative value {a.min()}; expected labels >= 0")
        top = int(a.max()) if a.size else 0
        dt = np.dtype("<u1") if top < 2**8 else np.dtype("<u2") if top < 2**16 else np.dtype("<u4")
        return PackedArray("zlib", a.shape, dt.str, zlib.compress(a.astype(dt).tobytes(order="C")))
    raise InvalidInput(
        f"cannot pack an array of dtype {a.dtype}; expected bool or an unsigned integer label map"
    )


def unpack_array(packed: PackedArray) -> npt.NDArray[Any]:
    """Inverse of :func:`pack_array`; checks the payload against the header."""
    n = int(np.prod(packed.shape, dtype=np.int64))
    itemsize = 1 if packed.dtype in ("bool", "|u1") else 4
    limit = (n + 7) // 8 if packed.encoding == "packbits-zlib" else n * itemsize
    try:
        # never inflate more than the header allows (a zlib bomb stops here)
        raw = zlib.decompressobj().decompress(packed.data, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"packed array payload is not valid zlib data ({exc})") from exc
    if packed.encoding == "packbits-zlib":
        if packed.dtype != "bool":
            raise InvalidInput(f"packbits-zlib array has dtype {packed.dtype!r}; expected 'bool'")
        if len(raw) != (n + 7) // 8:
            raise InvalidInput(
                f"packbits payload has {len(raw)} bytes, expected {(n + 7) // 8} "
                f"for shape {list(packed.shape)}"
            )
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n)
        return bits.astype(bool).reshape(packed.shape)
    if packed.encoding == "zlib":
        if packed.dtype not in _LABEL_DTYPES:
            raise InvalidInput(
                f"zlib label array has dtype {packed.dtype!r}; expected one of {_LABEL_DTYPES}"
            )
        dt = np.dtype(packed.dtype)
        if len(raw) != n * dt.itemsize:
            raise InvalidInput(
                f"zlib payload has {len(raw)} bytes, expected {n * dt.itemsize} for shape "
                f"{list(packed.shape)} of {packed.dtype}"
            )
        return np.frombuffer(raw, dtype=dt).reshape(packed.shape).copy()
    raise InvalidInput(f"packed array encoding {packed.encoding!r} is not one of packbits-zlib, zlib")


@dataclass(frozen=True, slots=True)
class VolumeMask:
    """A binary 3D mask of shape ``(depth, height, width)`` kept as one COCO RLE per non-empty slice.

    Axis 0 is the slice index of the volume as stored (axial slices for a CT series sorted by
    position), axes 1 and 2 are rows (y) and columns (x).
    """

    shape: tuple[int, int, int]
    slices: tuple[tuple[int, _rle.RLE], ...]  # sorted by slice index, non-empty slices only

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(s < 0 for s in self.shape):
            raise InvalidInput(f"volume mask shape {list(self.shape)} is not (depth, height, width) >= 0")
        d, h, w = self.shape
        last = -1
        for idx, r in self.slices:
            if not 0 <= idx < d:
                raise InvalidInput(f"volume mask slice {idx} is outside 0..{d - 1} (depth {d})")
            if idx <= last:
                raise InvalidInput(
                    f"volume mask slice {idx} is repeated or out of order; expected ascending indices"
                )
            if r.size != (h, w):
                raise InvalidInput(f"volume mask slice {idx} has size {list(r.size)}, expected [{h}, {w}]")
            last = idx

    @classmethod
    def from_array(cls, arr: npt.ArrayLike) -> VolumeMask:
        a = np.asarray(arr)
        if a.ndim != 3:
            raise InvalidInput(f"volume mask array has shape {a.shape}; expected 3D (depth, height, width)")
        a = a != 0
        nonempty = np.flatnonzero(a.reshape(a.shape[0], -1).any(axis=1))
        slices = tuple((int(i), _rle.encode(a[i])) for i in nonempty)
        d, h, w = a.shape
        return cls((int(d), int(h), int(w)), slices)

    def to_array(self) -> npt.NDArray[np.bool_]:
        out = np.zeros(self.shape, dtype=bool)
        for idx, r in self.slices:
            out[idx] = _rle.decode(r).astype(bool)
        return out

    @property
    def voxel_count(self) -> int:
        return sum(r.area for _, r in self.slices)

    def slice_mask(self, index: int) -> _rle.RLE:
        """The RLE of slice ``index`` (an all-zero RLE when the slice is empty)."""
        d, h, w = self.shape
        if not 0 <= index < d:
            raise InvalidInput(f"slice {index} is outside 0..{d - 1} of a volume mask of depth {d}")
        for idx, r in self.slices:
            if idx == index:
                return r
        return _rle.RLE(h, w, (h * w,) if h * w else ())

    def to_dict(self, *, encoding: str = "rle-slices") -> dict[str, Any]:
        if encoding == "rle-slices":
            return {
                "encoding": "rle-slices",
                "shape": list(self.shape),
                "slices": {str(i): r.to_dict() for i, r in self.slices},
            }
        if encoding == "packbits-zlib":
            return pack_array(self.to_array()).to_dict()
        raise InvalidInput(f"volume mask encoding {encoding!r} is not one of rle-slices, packbits-zlib")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VolumeMask:
        enc = data.get("encoding") if isinstance(data, Mapping) else None
        if enc == "rle-slices":
            shape = _shape(data.get("shape"), 3)
            raw = data.get("slices", {})
            if not isinstance(raw, Mapping):
                raise InvalidInput("volume mask 'slices' must map slice index strings to COCO RLE objects")
            try:
                items = sorted(((int(k), _rle.RLE.from_dict(v)) for k, v in raw.items()), key=lambda t: t[0])
            except ValueError as exc:
                raise InvalidInput(f"volume mask slice keys {sorted(raw)} must be integer strings") from exc
            return cls((shape[0], shape[1], shape[2]), tuple((i, r) for i, r in items if r.area))
        if enc in ("packbits-zlib", "zlib"):
            arr = unpack_array(PackedArray.from_dict(data))
            if arr.ndim != 3:
                raise InvalidInput(f"volume mask shape {list(arr.shape)} is not [depth, height, width]")
            return cls.from_array(arr)
        raise InvalidInput(f"volume mask encoding {enc!r} is not one of rle-slices, packbits-zlib, zlib")
