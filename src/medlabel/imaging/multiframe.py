"""Enhanced / legacy-converted multi-frame DICOM (one file, many slices) -> volumes.

Geometry comes from the functional groups (PS3.3 C.7.6.16): Plane Position (Patient)
(0020,9113) per frame, Plane Orientation (Patient) (0020,9116) and Pixel Measures (0028,9110)
shared or per frame, Pixel Value Transformation (0028,9145) for rescale. Frames are sorted along
the slice normal exactly like a single-frame series, and split at gaps or irregular steps with
a warning on each part (see :mod:`medlabel.imaging.series`).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from medlabel.errors import DicomError, InvalidInput, UnsupportedMedia
from medlabel.imaging.dicom import DicomSource, image_from_dataset, open_dataset
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits, check_budget
from medlabel.imaging.model import Volume
from medlabel.imaging.series import SPACING_TOLERANCE

__all__ = ["read_multiframe_volumes"]


def _item(ds: Dataset, frame: int, seq: str) -> Dataset | None:
    """The functional group macro ``seq`` for ``frame``: per-frame first, then shared."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and frame < len(per) and seq in per[frame] and len(per[frame][seq].value):
        item: Dataset = per[frame][seq].value[0]
        return item
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared is not None and len(shared) and seq in shared[0] and len(shared[0][seq].value):
        item = shared[0][seq].value[0]
        return item
    return None


def _floats(item: Dataset | None, keyword: str, n: int, tag: str, frame: int) -> np.ndarray | None:
    if item is None or keyword not in item:
        return None
    try:
        values = np.asarray([float(v) for v in item[keyword].value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"frame {frame + 1}: {tag} {keyword} unreadable: {exc}") from exc
    if values.shape != (n,):
        raise DicomError(f"frame {frame + 1}: {tag} {keyword} has {values.size} values, expected {n}")
    return values


def read_multiframe_volumes(src: DicomSource, *, limits: Limits = DEFAULT_LIMITS) -> list[Volume]:
    """Volumes of a multi-frame image, split where the frames are not evenly spaced."""
    sink: list[str] = []
    ds = open_dataset(src, warnings_sink=sink)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        raise UnsupportedMedia(
            "no (5200,9230) Per-frame Functional Groups Sequence: not an enhanced multi-frame image"
        )
    image = image_from_dataset(ds, limits=limits, warnings_sink=sink)
    info = image.info
    if info.is_color:
        raise InvalidInput(f"multi-frame image is colour ({info.photometric}); not a volume")
    n = info.frames
    check_budget(
        limits, pixels=info.rows * info.columns * n, bytes_per_sample=8, what=f"volume of {n} frames"
    )
    positions, orientation, spacing = [], None, None
    slopes, intercepts = np.ones(n), np.zeros(n)
    for f in range(n):
        pos = _floats(_item(ds, f, "PlanePositionSequence"), "ImagePositionPatient", 3, "(0020,0032)", f)
        ori = _floats(
            _item(ds, f, "PlaneOrientationSequence"), "ImageOrientationPatient", 6, "(0020,0037)", f
        )
        pm = _floats(_item(ds, f, "PixelMeasuresSequence"), "PixelSpacing", 2, "(0028,0030)", f)
        if pos is None or ori is None:
            raise DicomError(
                f"frame {f + 1}: (0020,9113) Plane Position or (0020,9116) Plane Orientation missing; "
                "cannot place the frame in a volume"
            )
        if orientation is None:
            orientation = ori
        elif not np.allclose(orientation, ori, atol=1e-4):
            raise UnsupportedMedia(
                f"frame {f + 1}: orientation {ori.tolist()} differs from frame 1 {orientation.tolist()}; "
                "mixed orientations are not one volume"
            )
        if pm is not None and spacing is None:
            spacing = pm
        pvt = _item(ds, f, "PixelValueTransformationSequence")
        if pvt is not None and "RescaleSlope" in pvt:
            slopes[f] = float(pvt.RescaleSlope)
            intercepts[f] = float(pvt.get("RescaleIntercept", 0.0))
        else:
            slopes[f], intercepts[f] = info.rescale_slope, info.rescale_intercept
        positions.append(pos)
    if orientation is None:
        raise DicomError("no frames: (0028,0008) Number of Frames is 0")
    if spacing is None:
        sink.append("(0028,9110) Pixel Measures missing; 1 mm assumed")
        spacing = np.array([1.0, 1.0])
    normal = np.cross(orientation[:3], orientation[3:])
    d = np.asarray([float(np.dot(p, normal)) for p in positions])
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    if n > 1 and np.any(np.diff(d_sorted) < 1e-3):
        sink.append(
            "frames share positions (several temporal/diffusion frames?); only distinct positions kept"
        )
        keep = np.concatenate([[True], np.diff(d_sorted) >= 1e-3])
        order, d_sorted = order[keep], d_sorted[keep]
    values = image.pixels.astype(np.float64) * slopes[:, None, None] + intercepts[:, None, None]
    integral = np.all(np.mod(slopes, 1) == 0) and np.all(np.mod(intercepts, 1) == 0)
    runs: list[list[int]] = [[0]]
    nominal = float(np.median(np.diff(d_sorted))) if len(d_sorted) > 1 else 0.0
    for i, step in enumerate(np.diff(d_sorted)):
        if abs(step - nominal) > SPACING_TOLERANCE * nominal:
            sink.append(
                f"step of {step:.3f} mm between frames at {d_sorted[i]:.3f} and {d_sorted[i + 1]:.3f} mm "
                f"(expected {nominal:.3f} mm); volume split"
            )
            runs.append([])
        runs[-1].append(i + 1)
    direction = tuple((float(orientation[i]), float(orientation[3 + i]), float(normal[i])) for i in range(3))
    volumes = []
    for run in runs:
        frames = order[run]
        arr = values[frames]
        if integral and arr.size and -32768 <= arr.min() and arr.max() <= 32767:
            arr = arr.astype(np.int16)
        else:
            arr = arr.astype(np.float32)
        steps = np.diff(d_sorted[run])
        step = float(np.median(steps)) if len(steps) else (info.slice_thickness or nominal or 1.0)
        volumes.append(
            Volume(
                array=arr,
                spacing=(step, float(spacing[0]), float(spacing[1])),
                origin=(
                    float(positions[frames[0]][0]),
                    float(positions[frames[0]][1]),
                    float(positions[frames[0]][2]),
                ),
                direction=direction,
                modality=info.modality,
                uids=info.uids,
                windows=info.windows,
                source="dicom",
                warnings=tuple(dict.fromkeys(sink)),
            )
        )
    return volumes
