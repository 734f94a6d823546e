"""Rendering: VOI windowing to 8 bit, presets, auto window, encoding, raw export.

Pure functions over arrays, in the order of the DICOM grayscale pipeline (PS3.4 N.2):
stored values -> Modality LUT (rescale, PS3.3 C.11.1.1.2) -> VOI LUT (window, PS3.3
C.11.2.1.2) -> Presentation LUT (MONOCHROME1 is inverted, PS3.3 C.7.6.3.1.2; so is Presentation LUT
Shape INVERSE, PS3.3 C.11.6.1.2).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from medlabel.errors import InvalidInput
from medlabel.imaging.model import Image, LookupTable, Window

__all__ = [
    "PRESETS",
    "ImageFormat",
    "apply_window",
    "apply_lut",
    "auto_window",
    "resolve_window",
    "render_frame",
    "to_uint8",
    "encode",
    "encode_png",
    "map_by_table",
    "RawExport",
    "raw_export",
]

PRESETS: Mapping[str, Window] = {
    # Common CT window settings (centre/level, width) in HU as used by radiology viewers.
    "ct_lung": Window(-600.0, 1500.0, "CT lung"),
    "ct_mediastinum": Window(50.0, 350.0, "CT mediastinum"),
    "ct_bone": Window(400.0, 1800.0, "CT bone"),
    "ct_brain": Window(40.0, 80.0, "CT brain"),
    "ct_subdural": Window(75.0, 215.0, "CT subdural"),
    "ct_stroke": Window(40.0, 40.0, "CT stroke"),
    "ct_abdomen": Window(40.0, 400.0, "CT abdomen / soft tissue"),
    "ct_liver": Window(30.0, 150.0, "CT liver"),
}
"""Named VOI windows. Values: lung W1500/L-600, mediastinum W350/L50, bone W1800/L400, brain
W80/L40, subdural W215/L75, stroke W40/L40, abdomen W400/L40, liver W150/L30."""

ImageFormat = Literal["png", "jpeg", "webp"]


def apply_window(
    values: npt.NDArray[np.generic],
    window: Window,
    *,
    invert: bool = False,
) -> npt.NDArray[np.uint8]:
    """Map modality values to 0..255 with a VOI window (PS3.3 C.11.2.1.2.1 / .2 / .3).

    LINEAR:       x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 255;
                  else ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    LINEAR_EXACT: x <= c - w/2 -> 0; x > c + w/2 -> 255; else ((x - c) / w + 0.5) * 255
    SIGMOID:      255 / (1 + exp(-4 (x - c) / w))

    Integer input is mapped through a lookup table built with the same float64 maths over the
    values' range (one evaluation per distinct value), so the output is identical.
    """
    fn = window.function.upper()
    if fn == "LINEAR" and float(window.width) < 1:
        raise InvalidInput(
            f"LINEAR window width must be >= 1, got {float(window.width)} (PS3.3 C.11.2.1.2.1)"
        )
    if fn not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise InvalidInput(f"(0028,1056) VOI LUT Function {window.function!r} unknown")
    by_table = map_by_table(values, lambda v: _window_float(v, window, invert))
    return by_table if by_table is not None else _window_float(values, window, invert)


def _window_float(values: npt.NDArray[np.generic], window: Window, invert: bool) -> npt.NDArray[np.uint8]:
    """The VOI window in float64, element by element (see :func:`apply_window`)."""
    x = np.asarray(values, dtype=np.float64)
    c, w = float(window.center), float(window.width)
    fn = window.function.upper()
    if fn == "LINEAR":
        lo = c - 0.5 - (w - 1) / 2
        hi = c - 0.5 + (w - 1) / 2
        y = np.where(x <= lo, 0.0, np.where(x > hi, 1.0, (x - (c - 0.5)) / max(w - 1, 1e-12) + 0.5))
    elif fn == "LINEAR_EXACT":
        y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, (x - c) / w + 0.5))
    else:  # SIGMOID
        y = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - c) / w, -700.0, 700.0)))
    y = np.clip(y, 0.0, 1.0)
    if invert:
        y = 1.0 - y
    return np.round(y * 255.0).astype(np.uint8)


_TABLE_MIN_VALUES = 4096
"""Below this many values the direct maths costs no more than building a table."""
_TABLE_MAX_SPAN = 1 << 20


def map_by_table(
    values: npt.NDArray[np.generic], fn: Callable[[npt.NDArray[np.generic]], npt.NDArray[np.uint8]]
) -> npt.NDArray[np.uint8] | None:
    """``fn(values)`` for an element-wise ``fn`` over an integer array, evaluated once per value of
    the range ``min..max`` (a lookup table of the same dtype) and gathered with ``np.take``.

    Identical to calling ``fn`` on the array. None when a table does not pay: not an integer
    dtype, fewer than 4096 values, or a range wider than the array (or than 2**20).
    """
    v = np.asarray(values)
    if v.dtype.kind not in "iu" or v.size < _TABLE_MIN_VALUES or v.dtype.itemsize > 4:
        return None
    lo, hi = int(v.min()), int(v.max())
    span = hi - lo + 1
    if span > min(v.size, _TABLE_MAX_SPAN):
        return None
    if not v.dtype.isnative:
        v = v.astype(v.dtype.newbyteorder("="))
    domain = (np.arange(span, dtype=np.int64) + lo).astype(v.dtype)
    table = np.asarray(fn(domain))
    if table.shape != (span,):
        return None
    # Offsets from ``lo`` in the unsigned type of the same width: the wrap-around of the
    # subtraction gives the exact offset (0 .. span-1) for signed values too.
    unsigned = v.view(np.dtype(f"u{v.dtype.itemsize}"))
    lo_u = np.array(lo, dtype=np.int64).astype(unsigned.dtype)
    offsets = unsigned if lo == 0 else np.subtract(unsigned, lo_u, dtype=unsigned.dtype)
    return np.take(table, offsets)  # type: ignore[no-any-return]


def auto_window(
    values: npt.NDArray[np.generic],
    *,
    low_percentile: float = 0.5,
    high_percentile: float = 99.5,
) -> Window:
    """A window spanning the ``low``..``high`` percentiles of ``values`` (e.g. MR, X-ray)."""
    if not 0 <= low_percentile < high_percentile <= 100:
        raise InvalidInput(
            f"percentiles must satisfy 0 <= low < high <= 100, got {low_percentile}, {high_percentile}"
        )
    arr = np.asarray(values)
    arr = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr.ravel()
    if arr.size == 0:
        return Window(0.0, 1.0, "auto (empty)")
    if arr.size > 1_000_000:  # a strided sample is plenty for percentiles
        arr = arr.ravel()[:: arr.size // 1_000_000 + 1]
    lo, hi = (float(v) for v in np.percentile(arr, [low_percentile, high_percentile]))
    width = max(hi - lo, 1.0)
    return Window(
        lo + width / 2, width, f"auto {low_percentile}-{high_percentile} percentile", "LINEAR_EXACT"
    )


def resolve_window(image: Image, window: Window | str | None = None, *, frame: int = 0) -> Window:
    """``window`` as given, a preset name, the header's first VOI window, or :func:`auto_window`."""
    if isinstance(window, Window):
        return window
    if isinstance(window, str):
        key = window.lower()
        if key not in PRESETS:
            raise InvalidInput(f"unknown window preset {window!r}; known: {', '.join(sorted(PRESETS))}")
        return PRESETS[key]
    if image.info.windows:
        return image.info.windows[0]
    return auto_window(image.modality_pixels(frame))


def to_uint8(pixels: npt.NDArray[np.generic], bits_stored: int | None = None) -> npt.NDArray[np.uint8]:
    """Scale colour (or any) samples to 8 bit by their bit depth (no windowing)."""
    if pixels.dtype == np.uint8:
        return pixels  # type: ignore[return-value]
    if pixels.dtype.kind == "f":
        fl = pixels.astype(np.float64)
        lo, hi = float(np.nanmin(fl)), float(np.nanmax(fl))
        scaled = (fl - lo) / (hi - lo or 1.0) * 255.0
        return np.round(np.nan_to_num(scaled)).astype(np.uint8)
    bits = bits_stored or pixels.dtype.itemsize * 8
    maxval = float(2**bits - 1)

    def scale(v: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
        return np.round(np.clip(v.astype(np.float64), 0, maxval) / maxval * 255.0).astype(np.uint8)

    by_table = map_by_table(pixels, scale)
    return by_table if by_table is not None else scale(pixels)


def apply_lut(
    values: npt.NDArray[np.generic], lut: LookupTable, *, invert: bool = False
) -> npt.NDArray[np.uint8]:
    """A VOI LUT (PS3.3 C.11.2.1.1) to 0..255: entries are scaled from 0 .. 2**bits - 1."""

    def scale(v: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
        out = lut.apply(v).astype(np.float64) / float(2**lut.bits - 1)
        out = np.clip(out, 0.0, 1.0)
        if invert:
            out = 1.0 - out
        return np.round(out * 255.0).astype(np.uint8)

    by_table = map_by_table(values, scale)
    return by_table if by_table is not None else scale(values)


def render_frame(
    image: Image, *, frame: int = 0, window: Window | str | None = None
) -> npt.NDArray[np.uint8]:
    """One frame as display-ready uint8: gray ``(rows, columns)`` or RGB ``(rows, columns, 3)``.

    Gray: Modality LUT or rescale, then the VOI transform -- ``window`` (a ``Window`` or preset
    name) when given, else the first VOI LUT Sequence item, else the header's first window, else
    :func:`auto_window` -- then the inversion of MONOCHROME1 or Presentation LUT Shape INVERSE
    (``ImageInfo.inverted``).
    Colour: no windowing; samples are scaled to 8 bit from Bits Stored.
    """
    if image.info.is_color:
        return to_uint8(image.frame(frame), image.info.bits_stored)
    invert = image.info.inverted
    voi: Callable[[npt.NDArray[np.generic]], npt.NDArray[np.uint8]]
    if window is None and image.info.voi_luts:
        lut = image.info.voi_luts[0]

        def voi(v: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
            return apply_lut(v, lut, invert=invert)

    else:
        w = resolve_window(image, window, frame=frame)

        def voi(v: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
            return apply_window(v, w, invert=invert)

    # Stored integers: the whole pipeline (Modality LUT or rescale, then VOI) once per stored
    # value, as a table; the same maths element by element, so the same output.
    by_table = map_by_table(image.frame(frame), lambda d: voi(_modality_values(image, d)))
    return by_table if by_table is not None else voi(image.modality_pixels(frame))


def _modality_values(image: Image, stored: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """``image.modality_pixels`` of a 1-D array of stored values (same dtype, same maths)."""
    info = replace(image.info, frames=1, rows=1, columns=int(stored.size))
    return Image(info, stored.reshape(1, 1, -1)).modality_pixels(0).reshape(-1)


def encode(
    pixels: npt.NDArray[np.uint8],
    fmt: ImageFormat = "png",
    *,
    quality: int = 90,
    size: int | None = None,
) -> bytes:
    """Encode a uint8 gray/RGB array as PNG, JPEG or WebP; ``size`` bounds the longest side."""
    if pixels.dtype != np.uint8:
        raise InvalidInput(f"encode expects uint8 pixels, got {pixels.dtype}; render first")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise InvalidInput(f"encode expects (rows, cols) or (rows, cols, 3), got shape {pixels.shape}")
    if not 1 <= quality <= 100:
        raise InvalidInput(f"quality must be 1..100, got {quality}")
    fmt_l = fmt.lower()
    if fmt_l not in ("png", "jpeg", "jpg", "webp"):
        raise InvalidInput(f"format {fmt!r} not supported (png, jpeg, webp)")
    im = PILImage.fromarray(pixels.squeeze(-1) if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
    if size is not None:
        if size < 1:
            raise InvalidInput(f"size must be >= 1, got {size}")
        w, h = im.size
        scale = size / max(w, h)
        if scale < 1:
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), PILImage.Resampling.LANCZOS)
    if fmt_l == "png":
        return encode_png(np.asarray(im))
    buf = io.BytesIO()
    if fmt_l in ("jpeg", "jpg"):
        im.save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "WEBP", quality=quality)
    return buf.getvalue()


def _load_isal() -> ModuleType | None:
    """ISA-L deflate (``isal``): the same zlib format, several times faster at level 1."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
        return None
    return isal_zlib


_isal = _load_isal()


def _deflate(data: memoryview, *, rle: bool) -> bytes:
    """A zlib stream of ``data`` at speed: ISA-L level 1 when ``isal`` is installed (about 4x
    faster than zlib at a similar size), else zlib level 1 (run-length strategy for gray)."""
    if _isal is not None:
        return bytes(_isal.compress(data, 1))
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE if rle else zlib.Z_DEFAULT_STRATEGY)
    return z.compress(data) + z.flush()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """8-bit gray ``(rows, cols)`` or RGB ``(rows, cols, 3)`` as PNG, for speed over size.

    Every row uses the PNG "Up" filter (the difference from the row above, one vectorised
    subtraction), then deflate at level 1 (ISA-L when available, else zlib with the run-length
    strategy for gray): medical images come out about the size of Pillow's level 6 in a tenth
    of the time.
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise InvalidInput(f"encode_png expects uint8 (rows, cols) or (rows, cols, 3), got {pixels.shape}")
    rows, cols = int(pixels.shape[0]), int(pixels.shape[1])
    channels = 1 if pixels.ndim == 2 else 3
    lines = np.ascontiguousarray(pixels).reshape(rows, cols * channels)
    raw = np.empty((rows, cols * channels + 1), dtype=np.uint8)
    raw[:, 0] = 2  # filter type Up (PNG spec 9.2); the row above the first one is zeros
    if rows:
        raw[0, 1:] = lines[0]
        np.subtract(lines[1:], lines[:-1], out=raw[1:, 1:])  # modulo 256, as the filter is defined
    idat = _deflate(raw.data, rle=channels == 1)
    header = struct.pack(">IIBBBBB", cols, rows, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@dataclass(frozen=True, slots=True)
class RawExport:
    """Little-endian raw pixels plus what is needed to read them back."""

    data: bytes
    dtype: str
    """numpy dtype string, ``<i2`` or ``<f4``."""
    shape: tuple[int, ...]
    rescale_applied: bool = True


def raw_export(
    image_or_array: Image | npt.NDArray[np.generic],
    dtype: Literal["int16", "float32"] = "int16",
) -> RawExport:
    """Rescaled (modality) values as little-endian ``int16`` or ``float32`` bytes.

    ``int16`` refuses values that are not integral or do not fit (use ``float32`` then).
    """
    values = (
        image_or_array.modality_pixels() if isinstance(image_or_array, Image) else np.asarray(image_or_array)
    )
    if dtype == "int16":
        if values.size:
            lo, hi = float(np.min(values)), float(np.max(values))
            if lo < -32768 or hi > 32767:
                raise InvalidInput(f"values {lo}..{hi} do not fit int16 (-32768..32767); export float32")
            if values.dtype.kind == "f" and not np.all(np.equal(np.mod(values, 1), 0)):
                raise InvalidInput("values are not integral (rescale slope/intercept); export float32")
        out = values.astype("<i2")
    elif dtype == "float32":
        out = values.astype("<f4")
    else:
        raise InvalidInput(f"raw export dtype must be int16 or float32, got {dtype!r}")
    return RawExport(data=out.tobytes(order="C"), dtype=out.dtype.str, shape=tuple(int(s) for s in out.shape))
