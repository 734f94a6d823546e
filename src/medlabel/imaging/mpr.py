"""Multi-planar reformatting: axial, coronal and sagittal planes of a :class:`Volume`.

Planes are taken along the volume's *index* axes (for an axial acquisition these are the
anatomical planes; for an oblique one they are the acquisition's own planes). Each plane is
resampled to isotropic in-plane spacing ``min(row, column spacing)`` with linear interpolation.
Sample ``m`` of an axis lies at ``m * target / spacing`` in index units, starting at index 0 --
the same grid as an ITK ``Resample`` that keeps the origin, so the result is directly comparable.

Display orientation: coronal and sagittal planes have slices as rows; when the slice axis points
towards the patient's head (LPS z component > 0) the rows are flipped so that superior is up
(``Plane.flipped`` says so). Axial planes are returned as stored (DICOM radiological view).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medlabel.errors import InvalidInput
from medlabel.imaging.model import Volume

__all__ = ["PlaneName", "Plane", "extract_plane", "resample_isotropic", "plane_count"]


class PlaneName(StrEnum):
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


@dataclass(frozen=True, slots=True, eq=False)
class Plane:
    """A 2D reformatted plane in modality units."""

    pixels: npt.NDArray[np.generic]
    spacing: tuple[float, float]
    """(row, column) spacing in mm after resampling."""
    plane: PlaneName
    index: int
    flipped: bool
    """True when rows were flipped so superior is up."""


def plane_count(volume: Volume, plane: PlaneName | str) -> int:
    """Number of planes of that kind (valid ``index`` is 0..count-1)."""
    z, y, x = volume.shape
    p = PlaneName(plane)
    return {PlaneName.AXIAL: z, PlaneName.CORONAL: y, PlaneName.SAGITTAL: x}[p]


def resample_isotropic(
    arr: npt.NDArray[np.generic], spacing: tuple[float, float], *, order: int = 1
) -> tuple[npt.NDArray[np.generic], tuple[float, float]]:
    """Resample a 2D array to square pixels of ``min(spacing)`` mm (linear by default)."""
    if arr.ndim != 2:
        raise InvalidInput(f"expected a 2D array, got shape {arr.shape}")
    sr, sc = float(spacing[0]), float(spacing[1])
    if sr <= 0 or sc <= 0:
        raise InvalidInput(f"spacing must be positive, got {spacing}")
    target = min(sr, sc)
    if np.isclose(sr, sc, rtol=1e-6):
        return arr, (sr, sc)
    n_r = int(np.floor((arr.shape[0] - 1) * sr / target + 1e-6)) + 1
    n_c = int(np.floor((arr.shape[1] - 1) * sc / target + 1e-6)) + 1
    src = arr.astype(np.float32) if arr.dtype.kind != "f" else arr
    out = ndimage.affine_transform(
        src,
        np.array([target / sr, target / sc]),
        output_shape=(n_r, n_c),
        order=order,
        mode="nearest",
        prefilter=False,
    )
    if arr.dtype.kind in "iu":
        out = np.round(out).astype(arr.dtype)
    return out, (target, target)


def extract_plane(
    volume: Volume,
    plane: PlaneName | str,
    index: int | None = None,
    *,
    isotropic: bool = True,
    display: bool = True,
) -> Plane:
    """Plane ``index`` (default: the middle one) of kind ``plane``.

    ``isotropic`` resamples in-plane to square pixels; ``display`` flips coronal/sagittal rows so
    that superior is up (see module docstring).
    """
    try:
        p = PlaneName(str(plane).lower())
    except ValueError as exc:
        raise InvalidInput(f"plane must be axial, coronal or sagittal, got {plane!r}") from exc
    n = plane_count(volume, p)
    i = n // 2 if index is None else int(index)
    if not 0 <= i < n:
        raise InvalidInput(f"{p} index {i} out of range 0..{n - 1}")
    sz, sy, sx = volume.spacing
    arr = volume.array
    if p is PlaneName.AXIAL:
        img, spacing = arr[i, :, :], (sy, sx)
    elif p is PlaneName.CORONAL:
        img, spacing = arr[:, i, :], (sz, sx)
    else:
        img, spacing = arr[:, :, i], (sz, sy)
    if isotropic:
        img, spacing = resample_isotropic(np.asarray(img), spacing)
    flipped = False
    if display and p is not PlaneName.AXIAL and volume.direction_matrix[2, 2] > 0:
        img = img[::-1, :]
        flipped = True
    return Plane(pixels=np.ascontiguousarray(img), spacing=spacing, plane=p, index=i, flipped=flipped)
