"""Pixel budgets: refuse an image before allocating it.

Every reader takes a :class:`Limits` and checks the size announced by the header (DICOM Rows,
Columns, Number of Frames, Samples per Pixel, Bits Allocated; NIfTI dim; PNG/TIFF size) before
any pixel is decoded, raising :class:`~medlabel.errors.TooLarge`.
"""

from __future__ import annotations

from dataclasses import dataclass

from medlabel.errors import InvalidInput, TooLarge

__all__ = ["Limits", "DEFAULT_LIMITS", "check_budget", "check_region"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds for one decoded image or volume."""

    max_pixels: int = 1_000_000_000
    """Most pixels (all frames/slices, not counting samples) one read may produce."""
    max_bytes: int = 2 * 1024**3
    """Most bytes the decoded array may take (pixels x samples x bytes per sample)."""
    max_region_pixels: int = 64 * 1024 * 1024
    """Most pixels one whole-slide region read may return."""

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_bytes", "max_region_pixels"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"Limits.{name} must be > 0, got {getattr(self, name)}")


DEFAULT_LIMITS = Limits()


def check_budget(
    limits: Limits,
    *,
    pixels: int,
    samples: int = 1,
    bytes_per_sample: int = 1,
    what: str = "image",
) -> None:
    """Raise :class:`TooLarge` when ``pixels`` (x ``samples`` x ``bytes_per_sample``) is over budget."""
    if pixels < 0:
        raise TooLarge(f"{what}: negative pixel count {pixels} in header")
    if pixels > limits.max_pixels:
        raise TooLarge(
            f"{what}: {pixels} pixels exceeds the limit of {limits.max_pixels}",
            detail={"pixels": pixels, "max_pixels": limits.max_pixels},
        )
    nbytes = pixels * max(samples, 1) * max(bytes_per_sample, 1)
    if nbytes > limits.max_bytes:
        raise TooLarge(
            f"{what}: {nbytes} bytes decoded exceeds the limit of {limits.max_bytes}",
            detail={"bytes": nbytes, "max_bytes": limits.max_bytes},
        )


def check_region(level: int, levels: int, width: int, height: int, limits: Limits) -> None:
    """Refuse a slide region request that names no level, is empty, or is over the budget."""
    if not 0 <= level < levels:
        raise InvalidInput(f"level {level} out of range 0..{levels - 1}")
    if width <= 0 or height <= 0:
        raise InvalidInput(f"region size must be positive, got {width}x{height}")
    if width * height > limits.max_region_pixels:
        raise TooLarge(
            f"region {width}x{height} = {width * height} pixels exceeds the limit of {limits.max_region_pixels}"
        )
