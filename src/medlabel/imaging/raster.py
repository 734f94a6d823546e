"""PNG, JPEG and (non-pyramidal) TIFF as 2D images: grayscale (8/16-bit) or RGB.

Pillow reads PNG/JPEG, tifffile reads TIFF (so 16-bit and float TIFF keep their depth). The
size announced by the header is checked against :class:`Limits` before decoding, which also
stops decompression bombs. Alpha is dropped (warning); palette images become RGB.
"""

from __future__ import annotations

import io
import os
import warnings as pywarnings
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from medlabel.errors import InvalidInput, TooLarge, UnsupportedMedia
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits, check_budget
from medlabel.imaging.model import Image, ImageInfo, Photometric

__all__ = ["read_raster", "RasterSource"]

RasterSource = str | os.PathLike[str] | bytes | BinaryIO


def _fileobj(src: RasterSource) -> BinaryIO | str:
    if isinstance(src, bytes | bytearray):
        return io.BytesIO(src)
    if isinstance(src, str | os.PathLike):
        return os.fspath(src)
    return src


def _is_tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _head(src: RasterSource) -> bytes:
    if isinstance(src, bytes | bytearray):
        return bytes(src[:8])
    if isinstance(src, str | os.PathLike):
        try:
            with open(src, "rb") as fh:
                return fh.read(8)
        except FileNotFoundError as exc:
            raise InvalidInput(f"file not found: {os.fspath(src)!r}") from exc
    pos = src.tell()
    head = src.read(8)
    src.seek(pos)
    return head


def _build(arr: np.ndarray, kind: str, warnings: list[str], spacing: tuple[float, float] | None) -> Image:
    if arr.ndim == 3 and arr.shape[2] == 4:
        warnings.append("alpha channel dropped")
        arr = arr[:, :, :3]
    if arr.ndim == 3 and arr.shape[2] == 2:
        warnings.append("gray+alpha: alpha channel dropped")
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise UnsupportedMedia(f"{kind}: pixel array of shape {arr.shape} is not 2D gray or RGB")
    color = arr.ndim == 3
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    bits = arr.dtype.itemsize * 8
    info = ImageInfo(
        kind=kind,
        rows=int(arr.shape[0]),
        columns=int(arr.shape[1]),
        frames=1,
        samples_per_pixel=3 if color else 1,
        photometric=Photometric.RGB if color else Photometric.MONOCHROME2,
        modality="OT",
        bits_allocated=bits,
        bits_stored=bits,
        pixel_representation=1 if arr.dtype.kind == "i" else 0,
        pixel_spacing=spacing,
        warnings=tuple(warnings),
    )
    return Image(info=info, pixels=arr[np.newaxis])


def _read_tiff(src: RasterSource, limits: Limits, warnings: list[str]) -> Image:
    try:
        with tifffile.TiffFile(_fileobj(src)) as tif:
            page = tif.pages.first
            shape = tuple(int(s) for s in page.shape)
            samples = int(page.samplesperpixel)
            pixels = int(page.imagelength) * int(page.imagewidth)
            check_budget(
                limits,
                pixels=pixels,
                samples=samples,
                bytes_per_sample=page.dtype.itemsize if page.dtype else 1,
                what=f"TIFF {page.imagewidth}x{page.imagelength}",
            )
            if len(tif.pages) > 1:
                warnings.append(f"TIFF has {len(tif.pages)} pages; read the first")
            arr = page.asarray()
            spacing = tiff_spacing_mm(page)
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, KeyError) as exc:
        raise UnsupportedMedia(f"TIFF unreadable: {exc}") from exc
    if arr.ndim == 3 and page.planarconfig == 2 and arr.shape[0] in (3, 4) and shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return _build(arr, "tiff", warnings, spacing)


def tiff_spacing_mm(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """Pixel spacing in mm from X/YResolution when the unit is centimetre or inch."""
    try:
        unit = int(page.tags["ResolutionUnit"].value)
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
    except KeyError:
        return None
    mm = {2: 25.4, 3: 10.0}.get(unit)
    if mm is None:
        return None
    x = xr[0] / xr[1] if xr[1] else 0
    y = yr[0] / yr[1] if yr[1] else 0
    if x <= 0 or y <= 0:
        return None
    return (mm / y, mm / x)


def read_raster(src: RasterSource, *, limits: Limits = DEFAULT_LIMITS) -> Image:
    """Read a PNG, JPEG or TIFF into a one-frame :class:`Image` (gray or RGB)."""
    warnings: list[str] = []
    head = _head(src)
    if _is_tiff(head):
        return _read_tiff(src, limits, warnings)
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("error", PILImage.DecompressionBombWarning)
            im: PILImage.Image = PILImage.open(_fileobj(src))
            w, h = im.size
            bands = len(im.getbands())
            depth = 2 if ";16" in im.mode or im.mode in ("I", "F") else 1
            check_budget(
                limits, pixels=w * h, samples=bands, bytes_per_sample=depth, what=f"{im.format} {w}x{h}"
            )
            fmt = (im.format or "").lower()
            if fmt not in ("png", "jpeg", "mpo", "bmp", "webp"):
                raise UnsupportedMedia(f"image format {im.format!r} not supported (PNG, JPEG, TIFF)")
            im.load()
    except (
        UnidentifiedImageError,
        PILImage.DecompressionBombError,
        PILImage.DecompressionBombWarning,
    ) as exc:
        if isinstance(exc, PILImage.DecompressionBombError | PILImage.DecompressionBombWarning):
            raise TooLarge(f"image too large: {exc}") from exc
        raise UnsupportedMedia(f"not a PNG/JPEG/TIFF image: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnsupportedMedia(f"image unreadable (truncated or corrupt?): {exc}") from exc
    kind = "jpeg" if fmt in ("jpeg", "mpo") else fmt
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "I":
        arr32 = np.asarray(im)
        if arr32.min() >= 0 and arr32.max() <= 65535:
            return _build(arr32.astype(np.uint16), kind, warnings, None)
    arr = np.asarray(im)
    if mode == "I;16B" or mode == "I;16":
        arr = arr.astype(np.uint16)
    return _build(arr, kind, warnings, None)
