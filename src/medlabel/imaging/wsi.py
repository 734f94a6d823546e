"""Whole-slide images: pyramidal TIFF and Aperio SVS via tifffile, read lazily.

Only the tiles (or strips) that intersect a requested region are read from disk and decoded
(``TiffPage.dataoffsets`` / ``databytecounts`` + ``TiffPage.decode``), so a 100 000 x 100 000
slide is never loaded whole. Levels are the pyramid levels tifffile finds for the first series
(SubIFDs, SVS pages, OME levels, or a generic reduced-resolution series).

Microns per pixel come from the Aperio description (``MPP = ...``) or, failing that, from the
TIFF X/YResolution when ResolutionUnit is centimetre or inch.

SVS associated images (label, macro) are listed by name but not read here: labels often carry
identifying text and belong to the de-identification layer.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import numpy as np
import numpy.typing as npt
import tifffile

from medlabel.errors import InvalidInput, TooLarge, UnsupportedMedia
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits, check_region
from medlabel.imaging.raster import tiff_spacing_mm

__all__ = ["SlideLevel", "SlideInfo", "Slide", "open_slide", "slide_thumbnail"]

_MPP_RE = re.compile(r"\bMPP\s*=\s*([0-9.eE+-]+)")


@dataclass(frozen=True, slots=True)
class SlideLevel:
    """One pyramid level."""

    index: int
    width: int
    height: int
    downsample: float
    """Level-0 width / this width."""
    tile_width: int
    tile_height: int
    """Segment size on disk (strips have tile_width = width)."""
    compression: str


@dataclass(frozen=True, slots=True)
class SlideInfo:
    """Slide-level metadata."""

    width: int
    height: int
    levels: tuple[SlideLevel, ...]
    mpp: tuple[float, float] | None
    """(x, y) microns per pixel at level 0, when known."""
    samples_per_pixel: int
    dtype: str
    vendor: str
    """``aperio`` or ``generic``."""
    objective_power: float | None = None
    associated: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


class Slide:
    """An open pyramidal TIFF. Use as a context manager or call :meth:`close`.

    ``read_region`` is safe to call from several threads (file reads are serialised).
    """

    def __init__(self, path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = os.fspath(path)
        self.limits = limits
        try:
            self._tif = tifffile.TiffFile(self.path)
        except FileNotFoundError as exc:
            raise InvalidInput(f"file not found: {self.path!r}") from exc
        except (tifffile.TiffFileError, ValueError, OSError, EOFError) as exc:
            raise UnsupportedMedia(f"not a readable TIFF slide: {exc}") from exc
        self._lock = threading.Lock()
        try:
            self._pages, self.info = self._scan()
        except (tifffile.TiffFileError, ValueError, IndexError, KeyError) as exc:
            self._tif.close()
            raise UnsupportedMedia(f"TIFF slide structure unreadable: {exc}") from exc
        except BaseException:
            self._tif.close()
            raise

    def _scan(self) -> tuple[list[tifffile.TiffPage], SlideInfo]:
        tif = self._tif
        if not tif.series:
            raise UnsupportedMedia("TIFF has no image series")
        series = tif.series[0]
        warnings: list[str] = []
        pages: list[tifffile.TiffPage] = []
        for lvl in series.levels:
            page = lvl.keyframe
            if not isinstance(page, tifffile.TiffPage):
                page = tif.pages[page.index] if hasattr(page, "index") else page
            pages.append(page)  # type: ignore[arg-type]
        base = pages[0]
        if base.imagedepth > 1:
            raise UnsupportedMedia(f"volumetric TIFF (ImageDepth {base.imagedepth}) is not a slide")
        w0, h0 = int(base.imagewidth), int(base.imagelength)
        levels: list[SlideLevel] = []
        for i, p in enumerate(pages):
            tw, th = (
                (int(p.tilewidth), int(p.tilelength))
                if p.is_tiled
                else (int(p.imagewidth), int(p.rowsperstrip))
            )
            levels.append(
                SlideLevel(
                    index=i,
                    width=int(p.imagewidth),
                    height=int(p.imagelength),
                    downsample=w0 / int(p.imagewidth),
                    tile_width=tw,
                    tile_height=min(th, int(p.imagelength)) or int(p.imagelength),
                    compression=p.compression.name if hasattr(p.compression, "name") else str(p.compression),
                )
            )
            if not p.is_tiled and p.imagelength * p.imagewidth > self.limits.max_region_pixels:
                warnings.append(f"level {i} is stripped, not tiled: region reads decode whole strips")
        vendor = "aperio" if tif.is_svs else "generic"
        mpp = None
        objective = None
        desc = base.description or ""
        m = _MPP_RE.search(desc)
        if m:
            try:
                v = float(m.group(1))
                mpp = (v, v)
            except ValueError:
                warnings.append(f"unreadable MPP in description: {m.group(1)!r}")
        mag = re.search(r"\bAppMag\s*=\s*([0-9.]+)", desc)
        if mag:
            objective = float(mag.group(1))
        if mpp is None:
            mpp = _resolution_mpp(base)
        associated = tuple(s.name for s in tif.series[1:] if s.name)
        info = SlideInfo(
            width=w0,
            height=h0,
            levels=tuple(levels),
            mpp=mpp,
            samples_per_pixel=int(base.samplesperpixel),
            dtype=str(base.dtype),
            vendor=vendor,
            objective_power=objective,
            associated=associated,
            warnings=tuple(warnings),
        )
        return pages, info

    # -- context manager -------------------------------------------------------------
    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------
    @property
    def levels(self) -> tuple[SlideLevel, ...]:
        return self.info.levels

    def best_level_for_downsample(self, downsample: float) -> int:
        """The finest level whose downsample is <= ``downsample`` (like OpenSlide)."""
        best = 0
        for lvl in self.levels:
            if lvl.downsample <= downsample * (1 + 1e-6):
                if lvl.downsample >= self.levels[best].downsample:
                    best = lvl.index
        return best

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> npt.NDArray[np.generic]:
        """Pixels of ``level`` in the rectangle (x, y, width, height), in that level's coordinates.

        Parts outside the image are filled with white (255 for 8 bit). Returns ``(h, w, samples)``
        (RGBA is reduced to RGB) or ``(h, w)`` for single-sample slides.
        """
        check_region(level, len(self.levels), width, height, self.limits)
        page = self._pages[level]
        lvl = self.levels[level]
        samples = int(page.samplesperpixel)
        if page.planarconfig != 1 and samples > 1:
            raise UnsupportedMedia("planar (separate) sample layout is not supported for slide regions")
        dtype = np.dtype(page.dtype)
        fill = np.iinfo(dtype).max if dtype.kind in "ui" else 1.0
        out = np.full((height, width, samples), fill, dtype=dtype)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lvl.width), min(y + height, lvl.height)
        if x0 < x1 and y0 < y1:
            tw, th = lvl.tile_width, lvl.tile_height
            ncols = math.ceil(lvl.width / tw)
            decode = page.decode
            jpegtables = page.jpegtables
            for r in range(y0 // th, (y1 - 1) // th + 1):
                for c in range(x0 // tw, (x1 - 1) // tw + 1):
                    index = r * ncols + c
                    seg = self._segment(page, index, decode, jpegtables)
                    ty, tx = r * th, c * tw
                    # intersection in level coordinates
                    ix0, iy0 = max(tx, x0), max(ty, y0)
                    ix1, iy1 = min(tx + tw, x1), min(ty + th, y1)
                    if seg is None:
                        continue
                    out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = seg[iy0 - ty : iy1 - ty, ix0 - tx : ix1 - tx]
        if samples == 4:
            out = out[:, :, :3]
        if samples == 1:
            return out[:, :, 0]
        return out

    def _segment(
        self, page: tifffile.TiffPage, index: int, decode: object, jpegtables: bytes | None
    ) -> npt.NDArray[np.generic] | None:
        offsets, counts = page.dataoffsets, page.databytecounts
        if index >= len(offsets):
            raise UnsupportedMedia(f"segment {index} missing: the TIFF has {len(offsets)} tiles/strips")
        offset, count = int(offsets[index]), int(counts[index])
        if offset == 0 or count == 0:
            return None
        fh = self._tif.filehandle
        with self._lock:
            fh.seek(offset)
            data = fh.read(count)
        if len(data) != count:
            raise UnsupportedMedia(f"tile {index} truncated: read {len(data)} of {count} bytes")
        try:
            seg, _, _ = decode(data, index, jpegtables=jpegtables)  # type: ignore[operator]
        except (ValueError, NotImplementedError, RuntimeError, tifffile.TiffFileError) as exc:
            raise UnsupportedMedia(f"tile {index} cannot be decoded ({page.compression!s}): {exc}") from exc
        if seg is None:
            return None
        arr = np.asarray(seg)
        # (depth, length, width, samples) -> (length, width, samples)
        return arr.reshape(arr.shape[-3:]) if arr.ndim == 4 else arr

    def thumbnail(self, max_size: int = 512) -> npt.NDArray[np.generic]:
        """The whole slide scaled to fit ``max_size``, read from the coarsest sufficient level."""
        return slide_thumbnail(self, max_size)


class _Pyramid(Protocol):
    info: SlideInfo
    limits: Limits

    @property
    def levels(self) -> tuple[SlideLevel, ...]: ...

    def best_level_for_downsample(self, downsample: float) -> int: ...

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> npt.NDArray[np.generic]: ...


def slide_thumbnail(slide: _Pyramid, max_size: int = 512) -> npt.NDArray[np.generic]:
    """A pyramid (:class:`Slide` or ``DicomSlide``) scaled to fit ``max_size``, read from the
    coarsest level still at least ``max_size`` on its longest side."""
    from PIL import Image as PILImage

    scale = max(slide.info.width, slide.info.height) / max_size
    lvl = slide.levels[slide.best_level_for_downsample(max(scale, 1.0))]
    # pick the coarsest level still at least max_size on its longest side
    for cand in slide.levels:
        if max(cand.width, cand.height) >= max_size and cand.downsample > lvl.downsample:
            lvl = cand
    if lvl.width * lvl.height > slide.limits.max_region_pixels:
        raise TooLarge(
            f"no pyramid level small enough for a thumbnail: coarsest usable is {lvl.width}x{lvl.height}"
        )
    region = slide.read_region(lvl.index, 0, 0, lvl.width, lvl.height)
    tw = max(1, round(slide.info.width / scale)) if scale > 1 else lvl.width
    th = max(1, round(slide.info.height / scale)) if scale > 1 else lvl.height
    if region.dtype != np.uint8:
        return region
    im = PILImage.fromarray(region)
    return np.asarray(im.resize((tw, th), PILImage.Resampling.LANCZOS))


def _resolution_mpp(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """Microns per pixel (x, y) from the TIFF resolution tags."""
    spacing = tiff_spacing_mm(page)  # (row, column) in mm
    if spacing is None:
        return None
    return (spacing[1] * 1000.0, spacing[0] * 1000.0)


def open_slide(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> Slide:
    """Open a pyramidal TIFF / SVS slide lazily."""
    return Slide(path, limits=limits)
