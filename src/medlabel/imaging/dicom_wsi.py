"""DICOM whole-slide images (VL Whole Slide Microscopy Image, PS3.3 A.32.8) read lazily with pydicom.

A pyramid is the set of VOLUME instances (Image Type value 3, (0008,0008)) of one series, one
instance per level, ordered by Total Pixel Matrix Columns (0048,0006). Frames are tiles of
Rows x Columns; their placement is either implicit (Dimension Organization Type (0020,9311)
``TILED_FULL``: row-major, first focal plane and optical path first, PS3.3 C.7.6.17.3) or given
per frame (``TILED_SPARSE``: Plane Position (Slide) Sequence (0048,021A)).

Only the frames a region needs are decoded: ``pydicom.pixels.pixel_array(path, index=i)``
reads one frame from the file without loading the others. Only the first focal plane and
optical path are used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt
from pydicom import pixels as pdpixels
from pydicom.dataset import Dataset

from medlabel.errors import DicomError, InvalidInput, MedlabelError, UnsupportedMedia
from medlabel.imaging.dicom import SUPPORTED_TRANSFER_SYNTAXES, open_dataset
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits, check_region
from medlabel.imaging.wsi import SlideInfo, SlideLevel, slide_thumbnail

__all__ = ["WSI_SOP_CLASS", "DicomSlide", "open_dicom_slide"]

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


@dataclass(frozen=True, slots=True)
class _LevelFile:
    path: str
    width: int
    height: int
    tile_width: int
    tile_height: int
    frames: dict[tuple[int, int], int]
    """(tile row, tile column) -> frame index (0-based)."""
    transfer_syntax: str
    pixel_spacing: tuple[float, float] | None
    samples: int
    dtype: str


def _frame_map(ds: Dataset, tw: int, th: int, width: int, height: int) -> dict[tuple[int, int], int]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    organisation = str(ds.get("DimensionOrganizationType", "") or "")
    cols, rows = math.ceil(width / tw), math.ceil(height / th)
    if organisation == "TILED_FULL" or "PerFrameFunctionalGroupsSequence" not in ds:
        if n < cols * rows:
            raise DicomError(
                f"(0028,0008) Number of Frames {n} is less than the {cols}x{rows} tiles of a "
                f"{width}x{height} TILED_FULL matrix (PS3.3 C.7.6.17.3)"
            )
        return {(r, c): r * cols + c for r in range(rows) for c in range(cols)}
    out: dict[tuple[int, int], int] = {}
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        try:
            pos = item.PlanePositionSlideSequence[0]
            col = int(pos.ColumnPositionInTotalImagePixelMatrix)
            row = int(pos.RowPositionInTotalImagePixelMatrix)
        except (AttributeError, IndexError, ValueError, TypeError) as exc:
            raise DicomError(
                f"frame {i + 1}: (0048,021A) Plane Position (Slide) Sequence unusable for TILED_SPARSE: {exc}"
            ) from exc
        key = ((row - 1) // th, (col - 1) // tw)
        out.setdefault(key, i)  # first focal plane / optical path wins
    return out


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    try:
        pm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        return (float(pm.PixelSpacing[0]), float(pm.PixelSpacing[1]))
    except (AttributeError, IndexError, ValueError, TypeError):
        return None


class DicomSlide:
    """A DICOM-WSI pyramid; same reading interface as :class:`~medlabel.imaging.wsi.Slide`."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        warnings: list[str] = []
        levels: list[_LevelFile] = []
        series: set[str] = set()
        associated: list[str] = []
        for p in paths:
            path = os.fspath(p)
            try:
                ds = open_dataset(path, stop_before_pixels=True)
            except MedlabelError as exc:
                warnings.append(f"{os.path.basename(path)}: skipped ({exc.message})")
                continue
            if str(ds.get("SOPClassUID", "")) != WSI_SOP_CLASS:
                warnings.append(f"{os.path.basename(path)}: not VL Whole Slide Microscopy; skipped")
                continue
            image_type = [str(v) for v in (ds.get("ImageType") or [])]
            flavour = image_type[2] if len(image_type) > 2 else ""
            if flavour != "VOLUME":
                associated.append(flavour or "UNKNOWN")
                continue
            ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
            if ts not in SUPPORTED_TRANSFER_SYNTAXES:
                raise UnsupportedMedia(
                    f"{os.path.basename(path)}: (0002,0010) Transfer Syntax {ts} not supported"
                )
            try:
                width, height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
                tw, th = int(ds.Columns), int(ds.Rows)
            except (AttributeError, ValueError, TypeError) as exc:
                raise DicomError(
                    f"{os.path.basename(path)}: (0048,0006)/(0048,0007) Total Pixel Matrix or "
                    f"(0028,0010)/(0028,0011) tile size missing: {exc}"
                ) from exc
            series.add(str(ds.get("SeriesInstanceUID", "")))
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            bits = int(ds.get("BitsAllocated", 8) or 8)
            if samples not in (1, 3) or bits not in (8, 16):
                raise UnsupportedMedia(
                    f"{os.path.basename(path)}: (0028,0002) Samples per Pixel {samples} / (0028,0100) "
                    f"Bits Allocated {bits} not supported (1 or 3 samples of 8 or 16 bits)"
                )
            frames = _frame_map(ds, tw, th, width, height)
            dtype = "uint8" if bits == 8 else "uint16"
            levels.append(_LevelFile(path, width, height, tw, th, frames, ts, _spacing(ds), samples, dtype))
        if not levels:
            raise UnsupportedMedia("no VOLUME instance of VL Whole Slide Microscopy Image Storage found")
        if len(series) > 1:
            warnings.append(f"instances come from {len(series)} series; levels combined by size")
        levels.sort(key=lambda lv: -lv.width)
        dedup: list[_LevelFile] = []
        for lv in levels:
            if dedup and dedup[-1].width == lv.width:
                warnings.append(f"{os.path.basename(lv.path)}: second instance of width {lv.width}; ignored")
                continue
            dedup.append(lv)
        self._levels = dedup
        base = dedup[0]
        mpp = (base.pixel_spacing[1] * 1000.0, base.pixel_spacing[0] * 1000.0) if base.pixel_spacing else None
        self.info = SlideInfo(
            width=base.width,
            height=base.height,
            levels=tuple(
                SlideLevel(
                    i,
                    lv.width,
                    lv.height,
                    base.width / lv.width,
                    lv.tile_width,
                    lv.tile_height,
                    lv.transfer_syntax,
                )
                for i, lv in enumerate(dedup)
            ),
            mpp=mpp,
            samples_per_pixel=base.samples,
            dtype=base.dtype,
            vendor="dicom",
            associated=tuple(associated),
            warnings=tuple(warnings),
        )

    @property
    def levels(self) -> tuple[SlideLevel, ...]:
        return self.info.levels

    def close(self) -> None:
        """Nothing is held open (each frame read opens the file)."""

    def __enter__(self) -> DicomSlide:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def best_level_for_downsample(self, downsample: float) -> int:
        best = 0
        for lvl in self.levels:
            if lvl.downsample <= downsample * (1 + 1e-6) and lvl.downsample >= self.levels[best].downsample:
                best = lvl.index
        return best

    def thumbnail(self, max_size: int = 512) -> npt.NDArray[np.generic]:
        """The whole slide scaled to fit ``max_size`` (as :meth:`Slide.thumbnail <.wsi.Slide.thumbnail>`)."""
        return slide_thumbnail(self, max_size)

    def _tile(self, lv: _LevelFile, frame: int) -> npt.NDArray[np.generic]:
        try:
            arr = pdpixels.pixel_array(lv.path, index=frame, as_rgb=True)
        except (ValueError, RuntimeError, NotImplementedError, AttributeError, OSError, EOFError) as exc:
            raise DicomError(
                f"{os.path.basename(lv.path)}: frame {frame + 1} cannot be decoded: {exc}"
            ) from exc
        return arr

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> npt.NDArray[np.generic]:
        """``(height, width, 3)`` RGB or ``(height, width)`` gray; missing tiles and outside are white."""
        check_region(level, len(self._levels), width, height, self.limits)
        lv = self._levels[level]
        dtype = np.dtype(lv.dtype)
        shape = (height, width, 3) if lv.samples == 3 else (height, width)
        out = np.full(shape, np.iinfo(dtype).max, dtype=dtype)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lv.width), min(y + height, lv.height)
        if x0 >= x1 or y0 >= y1:
            return out
        tw, th = lv.tile_width, lv.tile_height
        for r in range(y0 // th, (y1 - 1) // th + 1):
            for c in range(x0 // tw, (x1 - 1) // tw + 1):
                frame = lv.frames.get((r, c))
                if frame is None:
                    continue
                tile = self._tile(lv, frame)
                ty, tx = r * th, c * tw
                ix0, iy0 = max(tx, x0), max(ty, y0)
                ix1, iy1 = min(tx + tw, x1), min(ty + th, y1)
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = tile[iy0 - ty : iy1 - ty, ix0 - tx : ix1 - tx]
        return out


def open_dicom_slide(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, limits: Limits = DEFAULT_LIMITS
) -> DicomSlide:
    """Open a DICOM-WSI pyramid from a folder (all files in it) or a list of instance files."""
    if isinstance(src, str | os.PathLike):
        root = os.fspath(src)
        if not os.path.isdir(root):
            raise InvalidInput(f"not a folder: {root!r}")
        files: list[str | os.PathLike[str]] = [
            os.path.join(root, f) for f in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, f))
        ]
        return DicomSlide(files, limits=limits)
    return DicomSlide(src, limits=limits)
