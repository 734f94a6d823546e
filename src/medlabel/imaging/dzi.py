"""Deep Zoom (DZI) tiling over a slide pyramid.

Level math follows the Deep Zoom format (as used by OpenSeadragon): level ``L`` of
``max_level + 1`` levels, ``max_level = ceil(log2(max(width, height)))``, has dimensions
``ceil(width / 2**(max_level - L))`` x ``ceil(height / 2**(max_level - L))``; level 0 is 1x1 and
level ``max_level`` is full resolution. Tiles are ``tile_size`` square plus ``overlap`` pixels on
each side that has a neighbour.

A tile is read from the finest native pyramid level whose downsample does not exceed the tile
level's, then scaled with Pillow (Lanczos) to the exact tile size.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol
from xml.sax.saxutils import quoteattr

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from medlabel.errors import InvalidInput, NotFound

__all__ = ["RegionSource", "TileRequest", "DeepZoom", "ArrayRegionSource", "tile_pixels", "render_tile"]

TileFormat = Literal["jpeg", "png"]


class _Level(Protocol):
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def downsample(self) -> float: ...


class RegionSource(Protocol):
    """What DZI needs from a slide: its levels and a region reader (e.g. :class:`~.wsi.Slide`)."""

    @property
    def levels(self) -> Sequence[_Level]: ...

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> npt.NDArray[np.generic]: ...


@dataclass(frozen=True, slots=True)
class _ArrayLevel:
    width: int
    height: int
    downsample: float


class ArrayRegionSource:
    """A single in-memory array (2D gray or RGB) as a one-level :class:`RegionSource`."""

    def __init__(self, array: npt.NDArray[np.generic]) -> None:
        if array.ndim not in (2, 3):
            raise InvalidInput(f"expected (h, w) or (h, w, 3), got shape {array.shape}")
        self.array = array
        self._levels = (_ArrayLevel(int(array.shape[1]), int(array.shape[0]), 1.0),)

    @property
    def levels(self) -> Sequence[_ArrayLevel]:
        return self._levels

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> npt.NDArray[np.generic]:
        if level != 0:
            raise InvalidInput(f"level {level} out of range 0..0")
        h, w = self.array.shape[:2]
        out = np.full((height, width, *self.array.shape[2:]), 255, dtype=self.array.dtype)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, w), min(y + height, h)
        if x0 < x1 and y0 < y1:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.array[y0:y1, x0:x1]
        return out


@dataclass(frozen=True, slots=True)
class TileRequest:
    """Where a DZI tile comes from: a native level region and the size to scale it to."""

    native_level: int
    x: int
    y: int
    width: int
    height: int
    """Region in the native level's pixel coordinates."""
    out_width: int
    out_height: int
    """Tile size in pixels (including overlap)."""


@dataclass(frozen=True, slots=True)
class DeepZoom:
    """DZI geometry for an image of ``width`` x ``height`` (level-0 pixels)."""

    width: int
    height: int
    tile_size: int = 254
    overlap: int = 1
    format: TileFormat = "jpeg"

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise InvalidInput(f"image size must be positive, got {self.width}x{self.height}")
        if self.tile_size < 1 or self.overlap < 0 or self.overlap >= self.tile_size:
            raise InvalidInput(
                f"TileSize {self.tile_size} / Overlap {self.overlap} invalid (0 <= overlap < size)"
            )
        if self.format not in ("jpeg", "png"):
            raise InvalidInput(f"tile Format must be jpeg or png, got {self.format!r}")

    @property
    def max_level(self) -> int:
        return int(math.ceil(math.log2(max(self.width, self.height))))

    @property
    def level_count(self) -> int:
        return self.max_level + 1

    def scale(self, level: int) -> int:
        """Downsample of ``level`` relative to full resolution (a power of two)."""
        self._check_level(level)
        return int(2 ** (self.max_level - level))

    def level_dimensions(self, level: int) -> tuple[int, int]:
        s = self.scale(level)
        return (int(math.ceil(self.width / s)), int(math.ceil(self.height / s)))

    def tile_grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level``."""
        w, h = self.level_dimensions(level)
        return (int(math.ceil(w / self.tile_size)), int(math.ceil(h / self.tile_size)))

    def tile_bounds(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a tile in ``level`` coordinates, overlap included."""
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise NotFound(f"tile ({col}, {row}) outside the {cols}x{rows} grid of level {level}")
        w, h = self.level_dimensions(level)
        x = col * self.tile_size - (self.overlap if col > 0 else 0)
        y = row * self.tile_size - (self.overlap if row > 0 else 0)
        x_end = min(w, (col + 1) * self.tile_size + self.overlap)
        y_end = min(h, (row + 1) * self.tile_size + self.overlap)
        return (x, y, x_end - x, y_end - y)

    def descriptor(self) -> str:
        """The ``.dzi`` XML document."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f"Format={quoteattr(self.format)} Overlap={quoteattr(str(self.overlap))} "
            f"TileSize={quoteattr(str(self.tile_size))}>"
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )

    def tile_request(
        self, level: int, col: int, row: int, native_downsamples: Sequence[float]
    ) -> TileRequest:
        """Map a tile to the best native level (finest with downsample <= the tile level's)."""
        x, y, w, h = self.tile_bounds(level, col, row)
        s = self.scale(level)
        native = 0
        for i, d in enumerate(native_downsamples):
            if d <= s * (1 + 1e-6) and d >= native_downsamples[native]:
                native = i
        nd = float(native_downsamples[native])
        # level-0 rectangle, clipped to the image
        x0, y0 = x * s, y * s
        x1, y1 = min((x + w) * s, self.width), min((y + h) * s, self.height)
        nx, ny = int(math.floor(x0 / nd)), int(math.floor(y0 / nd))
        nx1, ny1 = int(math.ceil(x1 / nd)), int(math.ceil(y1 / nd))
        return TileRequest(native, nx, ny, max(nx1 - nx, 1), max(ny1 - ny, 1), w, h)

    def _check_level(self, level: int) -> None:
        if not 0 <= level <= self.max_level:
            raise NotFound(f"DZI level {level} outside 0..{self.max_level}")


def tile_pixels(source: RegionSource, dz: DeepZoom, level: int, col: int, row: int) -> npt.NDArray[np.uint8]:
    """A tile's uint8 pixels (gray or RGB), scaled from the best native level."""
    req = dz.tile_request(level, col, row, [lv.downsample for lv in source.levels])
    region = source.read_region(req.native_level, req.x, req.y, req.width, req.height)
    if region.dtype != np.uint8:
        raise InvalidInput(f"DZI tiles need 8-bit slides, got {region.dtype}")
    if (req.width, req.height) == (req.out_width, req.out_height):
        return region  # type: ignore[return-value]
    im = PILImage.fromarray(region)
    return np.asarray(im.resize((req.out_width, req.out_height), PILImage.Resampling.LANCZOS))


def render_tile(
    source: RegionSource, dz: DeepZoom, level: int, col: int, row: int, *, quality: int = 80
) -> bytes:
    """Encode one tile in the descriptor's format (JPEG ``quality`` or PNG)."""
    if not 1 <= quality <= 100:
        raise InvalidInput(f"quality must be 1..100, got {quality}")
    pixels = tile_pixels(source, dz, level, col, row)
    buf = io.BytesIO()
    im = PILImage.fromarray(pixels)
    if dz.format == "jpeg":
        im.save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "PNG")
    return buf.getvalue()
