"""The typed image model shared by every reader.

Conventions (the same as DICOM and ITK):

* Patient coordinates are **LPS** (x towards the patient's Left, y Posterior, z Superior), in mm.
  NIfTI's RAS affine is converted on read.
* Arrays are indexed ``[frame/slice, row, column]`` i.e. ``(z, y, x)``; colour images add a trailing
  sample axis of 3 (RGB).
* ``spacing`` is given in the **array axis order**: ``(slice, row, column)`` for a volume,
  ``(row, column)`` for a frame.
* ``direction`` is a 3x3 matrix whose **columns** are the LPS unit vectors of the index axes
  *column (x), row (y), slice (z)* -- exactly ITK's ``GetDirection()`` reshaped to 3x3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from medlabel.pickling import by_fields

__all__ = [
    "Photometric",
    "Window",
    "LookupTable",
    "SourceUIDs",
    "ImageInfo",
    "Image",
    "Volume",
]


class Photometric(StrEnum):
    """Photometric Interpretation (0028,0004), PS3.3 C.7.6.3.1.2, after our colour conversion."""

    MONOCHROME1 = "MONOCHROME1"
    MONOCHROME2 = "MONOCHROME2"
    RGB = "RGB"


@by_fields
@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): centre and width in modality units (e.g. HU)."""

    center: float
    width: float
    explanation: str = ""
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        from medlabel.errors import InvalidInput

        if not np.isfinite(self.center) or not np.isfinite(self.width):
            raise InvalidInput(f"window centre/width must be finite, got {self.center}/{self.width}")
        if self.width < 1 and self.function.upper() != "LINEAR_EXACT":
            raise InvalidInput(
                f"(0028,1051) Window Width must be >= 1 for {self.function}, got {self.width} "
                "(PS3.3 C.11.2.1.2.1)"
            )
        if self.width <= 0:
            raise InvalidInput(f"(0028,1051) Window Width must be > 0, got {self.width}")
        if self.function.upper() not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise InvalidInput(
                f"(0028,1056) VOI LUT Function {self.function!r} is not LINEAR, LINEAR_EXACT or SIGMOID"
            )


@by_fields
@dataclass(frozen=True, slots=True)
class LookupTable:
    """A Modality or VOI LUT (PS3.3 C.11.1 / C.11.2): LUT Descriptor (0028,3002) + LUT Data (0028,3006).

    Input values below ``first_mapped`` map to the first entry, above the last to the last entry.
    """

    first_mapped: int
    bits: int
    """Bits per output entry (third value of the descriptor): outputs are 0 .. 2**bits - 1."""
    data: tuple[int, ...]
    explanation: str = ""

    def __post_init__(self) -> None:
        from medlabel.errors import InvalidInput

        if not self.data:
            raise InvalidInput("(0028,3006) LUT Data is empty")
        if not 1 <= self.bits <= 16:
            raise InvalidInput(f"(0028,3002) LUT Descriptor bits must be 1..16, got {self.bits}")

    def apply(self, values: npt.NDArray[np.generic]) -> npt.NDArray[np.uint16]:
        table = np.asarray(self.data, dtype=np.uint16)
        index = np.clip(np.asarray(values).astype(np.int64) - self.first_mapped, 0, len(table) - 1)
        return table[index]


@by_fields
@dataclass(frozen=True, slots=True)
class SourceUIDs:
    """Identifiers carried from the source (after de-identification, PatientID is the pseudonym)."""

    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_class_uid: str = ""
    patient_id: str = ""


@by_fields
@dataclass(frozen=True, slots=True)
class ImageInfo:
    """Everything about an image except its pixels; cheap to read (header only)."""

    kind: str
    """Reader that produced it: ``dicom``, ``nifti``, ``nrrd``, ``png``, ``jpeg``, ``tiff``."""
    rows: int
    columns: int
    frames: int = 1
    samples_per_pixel: int = 1
    photometric: Photometric = Photometric.MONOCHROME2
    modality: str = ""
    bits_allocated: int = 8
    bits_stored: int = 8
    pixel_representation: int = 0
    """0 unsigned, 1 two's complement (0028,0103)."""
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    rescale_type: str = ""
    windows: tuple[Window, ...] = ()
    pixel_spacing: tuple[float, float] | None = None
    """(row spacing, column spacing) in mm, (0028,0030) or the imager's spacing."""
    slice_thickness: float | None = None
    image_position: tuple[float, float, float] | None = None
    """LPS position of the first transmitted pixel's centre (0020,0032)."""
    image_orientation: tuple[float, float, float, float, float, float] | None = None
    """Row then column direction cosines in LPS (0020,0037)."""
    transfer_syntax_uid: str = ""
    uids: SourceUIDs = field(default_factory=SourceUIDs)
    has_voi_lut_sequence: bool = False
    modality_lut: LookupTable | None = None
    """Modality LUT Sequence (0028,3000); when set it replaces rescale (PS3.3 C.11.1)."""
    voi_luts: tuple[LookupTable, ...] = ()
    """VOI LUT Sequence (0028,3010) items."""
    warnings: tuple[str, ...] = ()
    presentation_lut_shape: str = ""
    """Presentation LUT Shape (2050,0020): ``IDENTITY``, ``INVERSE``, or "" when absent."""
    dimension: tuple[tuple[str, float], ...] = ()
    """What tells apart images of one series taken at the same position: (name, value) pairs of
    Temporal Position Identifier (0020,0100), Trigger Time (0018,1060), Echo Numbers (0018,0086)
    and Diffusion b-value (0018,9087), those present (cine, multi-phase, multi-echo, diffusion)."""

    @property
    def is_color(self) -> bool:
        return self.photometric is Photometric.RGB

    @property
    def inverted(self) -> bool:
        """Whether display inverts the grey scale: MONOCHROME1 (PS3.3 C.7.6.3.1.2), or Presentation
        LUT Shape INVERSE (PS3.3 C.11.6.1.2: "output after inversion is in P-Values"; the DX and
        MG modules pair INVERSE with MONOCHROME1, so the two never invert twice)."""
        return self.photometric is Photometric.MONOCHROME1 or self.presentation_lut_shape == "INVERSE"

    @property
    def pixel_count(self) -> int:
        return self.rows * self.columns * self.frames

    @property
    def normal(self) -> tuple[float, float, float] | None:
        """Slice normal (row cosines x column cosines), or None without orientation."""
        if self.image_orientation is None:
            return None
        r = np.asarray(self.image_orientation[:3], dtype=float)
        c = np.asarray(self.image_orientation[3:], dtype=float)
        n = np.cross(r, c)
        return (float(n[0]), float(n[1]), float(n[2]))


@dataclass(frozen=True, slots=True, eq=False)
class Image:
    """A decoded 2D image with one or more frames.

    ``pixels`` holds the *stored* values (after colour conversion to RGB and palette lookup),
    shape ``(frames, rows, columns)`` or ``(frames, rows, columns, 3)``. Use
    :meth:`modality_pixels` for rescaled values (e.g. Hounsfield units).
    """

    info: ImageInfo
    pixels: npt.NDArray[np.generic]

    def __post_init__(self) -> None:
        from medlabel.errors import InvalidInput

        expected = (self.info.frames, self.info.rows, self.info.columns)
        if self.pixels.shape[:3] != expected:
            raise InvalidInput(f"pixel array shape {self.pixels.shape} does not match header {expected}")

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.info.warnings

    def frame(self, index: int = 0) -> npt.NDArray[np.generic]:
        from medlabel.errors import InvalidInput

        if not 0 <= index < self.info.frames:
            raise InvalidInput(f"frame {index} out of range 0..{self.info.frames - 1}")
        return self.pixels[index]

    def modality_pixels(self, index: int | None = None) -> npt.NDArray[np.floating]:
        """Modality values: the Modality LUT if present, else ``stored * slope + intercept``
        (PS3.3 C.11.1, C.11.1.1.2), as float32 (float64 for 32-bit input)."""
        arr = self.pixels if index is None else self.frame(index)
        if self.info.is_color:
            return arr.astype(np.float32)
        if self.info.modality_lut is not None:
            return self.info.modality_lut.apply(arr).astype(np.float32)
        slope, intercept = self.info.rescale_slope, self.info.rescale_intercept
        dtype = np.float64 if arr.dtype.itemsize >= 4 else np.float32
        out: npt.NDArray[np.floating] = arr.astype(dtype)
        if slope != 1.0:
            out *= slope
        if intercept != 0.0:
            out += intercept
        return out


@dataclass(frozen=True, slots=True, eq=False)
class Volume:
    """A 3D scalar volume, array ``(z, y, x)`` in modality units, geometry in LPS mm."""

    array: npt.NDArray[np.generic]
    spacing: tuple[float, float, float]
    """(slice, row, column) spacing in mm, i.e. (sz, sy, sx)."""
    origin: tuple[float, float, float]
    """LPS position of voxel [0, 0, 0]."""
    direction: tuple[tuple[float, float, float], ...]
    """3x3, columns = LPS unit vectors of index axes x (column), y (row), z (slice)."""
    modality: str = ""
    uids: SourceUIDs = field(default_factory=SourceUIDs)
    windows: tuple[Window, ...] = ()
    source: str = ""
    """Reader: ``dicom``, ``nifti`` or ``nrrd``."""
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from medlabel.errors import InvalidInput

        if self.array.ndim != 3:
            raise InvalidInput(f"Volume array must be 3D (z, y, x), got shape {self.array.shape}")
        if len(self.spacing) != 3 or any(not (s > 0) for s in self.spacing):
            raise InvalidInput(f"Volume spacing must be three positive numbers, got {self.spacing}")
        d = np.asarray(self.direction, dtype=float)
        if d.shape != (3, 3):
            raise InvalidInput(f"Volume direction must be 3x3, got shape {d.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (int(z), int(y), int(x))

    @property
    def direction_matrix(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.direction, dtype=np.float64)

    def affine(self) -> npt.NDArray[np.float64]:
        """4x4 mapping homogeneous index ``(x, y, z, 1)`` (column, row, slice) to LPS mm."""
        sz, sy, sx = self.spacing
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix @ np.diag([sx, sy, sz])
        a[:3, 3] = self.origin
        return a

    def index_to_lps(self, z: float, y: float, x: float) -> tuple[float, float, float]:
        p = self.affine() @ np.array([x, y, z, 1.0])
        return (float(p[0]), float(p[1]), float(p[2]))
