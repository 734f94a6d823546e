"""DICOM series -> volumes, and DICOMDIR resolution.

A series is grouped by Series Instance UID (0020,000E), then split into *stacks* of slices that
share orientation (0020,0037) and size (0028,0010)/(0028,0011). Slices are sorted by their
position along the slice normal, ``d = ImagePositionPatient . (row x column cosines)``
(PS3.3 C.7.6.2.1.1). Spacing comes from the positions, not Slice Thickness.

Nothing is silently wrong: mixed orientations or sizes, duplicate positions, missing slices (a gap
that is a multiple of the usual spacing) and irregular spacing produce **warnings and separate
stacks** instead of one volume with the wrong geometry.

Several images at one position (cine, multi-phase, multi-echo, diffusion series) are told apart by
the first of Temporal Position Identifier, Trigger Time, Echo Numbers and Diffusion b-value that
splits them into stacks without repeated positions, each of two slices or more (``ImageInfo.
dimension``); each stack is labelled with its value (``SeriesStack.label``). Images still at a
repeated position go to further stacks ("repeat 2" …): every slice ends up in exactly one stack.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.fileset import FileSet

from medlabel.errors import DicomError, InvalidInput, MedlabelError, UnsupportedMedia
from medlabel.imaging.dicom import _recorded, open_dataset, read_dicom, read_dicom_info
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits, check_budget
from medlabel.imaging.model import ImageInfo, Volume

__all__ = [
    "SliceHeader",
    "SeriesStack",
    "Dicomdir",
    "DicomdirEntry",
    "scan_headers",
    "group_series",
    "load_volume",
    "read_series",
    "read_dicomdir",
    "SPACING_TOLERANCE",
]

SPACING_TOLERANCE = 0.02
"""Relative deviation from the median slice spacing tolerated before a stack is split."""
_DUPLICATE_MM = 1e-3


@dataclass(frozen=True, slots=True)
class SliceHeader:
    """One file's header, enough to place it in a stack."""

    path: str
    info: ImageInfo


@dataclass(frozen=True, slots=True)
class SeriesStack:
    """Slices of one series with one geometry, sorted along the normal (ascending)."""

    series_instance_uid: str
    slices: tuple[SliceHeader, ...]
    positions: tuple[float, ...]
    """Distance of each slice along the normal, mm, ascending."""
    spacing: float
    """Slice spacing in mm (median of differences; 0 for a single slice)."""
    warnings: tuple[str, ...] = ()
    label: str = ""
    """What sets this stack apart from others of the series at the same positions (e.g.
    ``trigger time 40``), or "" for a stack that is the series' only one at its positions."""

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(s.path for s in self.slices)

    def __len__(self) -> int:
        return len(self.slices)


@dataclass(frozen=True, slots=True)
class DicomdirEntry:
    """One image referenced from a DICOMDIR, with its file resolved on disk."""

    path: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def scan_headers(
    paths: Iterable[str | os.PathLike[str]], *, force: bool = False
) -> tuple[list[SliceHeader], list[str]]:
    """Read headers only; files that are not DICOM images are skipped with a warning each."""
    headers: list[SliceHeader] = []
    skipped: list[str] = []
    for p in paths:
        path = os.fspath(p)
        try:
            info = read_dicom_info(path, force=force)
        except MedlabelError as exc:
            skipped.append(f"{os.path.basename(path)}: skipped ({exc.message})")
            continue
        headers.append(SliceHeader(path=path, info=info))
    return headers, skipped


def _geometry_key(info: ImageInfo) -> tuple[object, ...]:
    iop = info.image_orientation
    rounded = tuple(round(v, 4) for v in iop) if iop is not None else None
    return (
        rounded,
        info.rows,
        info.columns,
        info.pixel_spacing and tuple(round(v, 4) for v in info.pixel_spacing),
    )


def _split_sorted(
    uid: str, items: list[tuple[float, SliceHeader]], base_warnings: list[str], label: str = "", repeat: int = 1
) -> list[SeriesStack]:
    """Split a sorted run of slices at gaps and irregular steps; slices at a position already
    taken go, in order, to further stacks of their own ("repeat 2" …)."""
    more = _split_sorted(uid, repeats, base_warnings, label, repeat + 1) if (repeats := _repeats(items)) else []
    if repeat > 1:
        label = f"{label}, repeat {repeat}" if label else f"repeat {repeat}"
    warnings = list(base_warnings)
    kept: list[tuple[float, SliceHeader]] = []
    for d, h in items:
        if kept and abs(d - kept[-1][0]) < _DUPLICATE_MM:
            warnings.append(
                f"{os.path.basename(h.path)}: duplicate position {d:.3f} mm along the normal "
                f"(same as {os.path.basename(kept[-1][1].path)}); put in a separate stack"
            )
            continue
        kept.append((d, h))
    if len(kept) < 2:
        return [
            SeriesStack(uid, tuple(h for _, h in kept), tuple(d for d, _ in kept), 0.0, tuple(warnings), label),
            *more,
        ]
    diffs = np.diff([d for d, _ in kept])
    nominal = float(np.median(diffs))
    runs: list[list[tuple[float, SliceHeader]]] = [[kept[0]]]
    for i, step in enumerate(diffs):
        if abs(step - nominal) > SPACING_TOLERANCE * nominal:
            ratio = step / nominal
            if abs(ratio - round(ratio)) <= SPACING_TOLERANCE * ratio and round(ratio) >= 2:
                warnings.append(
                    f"gap of {step:.3f} mm between slices at {kept[i][0]:.3f} and {kept[i + 1][0]:.3f} mm "
                    f"(expected {nominal:.3f} mm): {round(ratio) - 1} slice(s) missing; stack split"
                )
            else:
                warnings.append(
                    f"irregular spacing {step:.3f} mm between slices at {kept[i][0]:.3f} and "
                    f"{kept[i + 1][0]:.3f} mm (expected {nominal:.3f} mm); stack split"
                )
            runs.append([])
        runs[-1].append(kept[i + 1])
    stacks = []
    for run in runs:
        ds_ = np.diff([d for d, _ in run])
        spacing = float(np.median(ds_)) if len(ds_) else nominal
        stacks.append(
            SeriesStack(uid, tuple(h for _, h in run), tuple(d for d, _ in run), spacing, tuple(warnings), label)
        )
    return stacks + more


def _repeats(items: list[tuple[float, SliceHeader]]) -> list[tuple[float, SliceHeader]]:
    """The slices of a sorted run at a position an earlier slice already takes."""
    out: list[tuple[float, SliceHeader]] = []
    last: float | None = None
    for d, h in items:
        if last is not None and abs(d - last) < _DUPLICATE_MM:
            out.append((d, h))
        else:
            last = d
    return out


def _has_repeats(items: list[tuple[float, SliceHeader]]) -> bool:
    return any(abs(b[0] - a[0]) < _DUPLICATE_MM for a, b in zip(items, items[1:], strict=False))


def _by_dimension(
    uid: str, items: list[tuple[float, SliceHeader]]
) -> list[tuple[str, list[tuple[float, SliceHeader]], list[str]]]:
    """(label, sorted slices, warnings) per stack of images at the same positions (module doc)."""
    if not _has_repeats(items):
        return [("", items, [])]
    # getattr: an ImageInfo pickled by an older version (an upload session's entry) has none
    names = [name for name, _ in getattr(items[0][1].info, "dimension", ())]
    for name in names:
        parts: dict[float, list[tuple[float, SliceHeader]]] = defaultdict(list)
        for d, h in items:
            value = dict(getattr(h.info, "dimension", ())).get(name)
            if value is None:
                break
            parts[value].append((d, h))
        else:
            if len(parts) >= 2 and all(len(p) >= 2 and not _has_repeats(p) for p in parts.values()):
                note = (
                    f"series {uid}: {len(items)} images, several at each position; one stack per "
                    f"{name} ({len(parts)} stacks)"
                )
                return [(f"{name} {value:g}", parts[value], [note]) for value in sorted(parts)]
    return [("", items, [])]


def group_series(headers: Sequence[SliceHeader]) -> list[SeriesStack]:
    """Group headers into geometrically consistent, sorted stacks (see module docstring)."""
    by_series: dict[str, list[SliceHeader]] = defaultdict(list)
    for h in headers:
        by_series[h.info.uids.series_instance_uid].append(h)
    stacks: list[SeriesStack] = []
    for uid, members in by_series.items():
        base: list[str] = []
        if not uid:
            base.append("(0020,000E) Series Instance UID missing; files grouped together")
        located: list[SliceHeader] = []
        unlocated: list[SliceHeader] = []
        for h in members:  # (one pass: a membership test would compare whole headers, n² times)
            (located if h.info.image_position and h.info.image_orientation else unlocated).append(h)
        multi = [h for h in located if h.info.frames > 1]
        located = [h for h in located if h.info.frames == 1]
        for h in unlocated:
            base.append(
                f"{os.path.basename(h.path)}: no (0020,0032) Image Position / (0020,0037) Image "
                "Orientation (Patient); kept as a single-image stack"
            )
        for h in multi:
            base.append(f"{os.path.basename(h.path)}: multi-frame ({h.info.frames}); kept as its own stack")
        by_geom: dict[tuple[object, ...], list[SliceHeader]] = defaultdict(list)
        for h in located:
            by_geom[_geometry_key(h.info)].append(h)
        if len(by_geom) > 1:
            base.append(
                f"series {uid}: {len(by_geom)} different orientations/sizes/pixel spacings; "
                "split into separate stacks"
            )
        for group in by_geom.values():
            normal = np.asarray(group[0].info.normal, dtype=float)
            items = sorted(  # ties (same position) in a fixed order: by SOP Instance UID
                ((float(np.dot(np.asarray(h.info.image_position), normal)), h) for h in group),
                key=lambda t: (t[0], t[1].info.uids.sop_instance_uid),
            )
            for label, part, notes in _by_dimension(uid, items):
                stacks.extend(_split_sorted(uid, part, base + notes, label))
        for h in unlocated + multi:
            stacks.append(SeriesStack(uid, (h,), (0.0,), 0.0, tuple(base)))
    return stacks


def _shear_warning(stack: SeriesStack) -> list[str]:
    """In-plane drift of the slice positions (gantry tilt) is tolerated but reported."""
    if len(stack) < 2:
        return []
    iop = np.asarray(stack.slices[0].info.image_orientation, dtype=float)
    pos = np.asarray([s.info.image_position for s in stack.slices], dtype=float)
    drift = pos - pos[0]
    inplane = np.abs(drift @ np.stack([iop[:3], iop[3:]], axis=1))
    ps = stack.slices[0].info.pixel_spacing or (1.0, 1.0)
    if float(inplane.max()) > 0.1 * min(ps):
        return [
            f"slice positions drift {float(inplane.max()):.3f} mm in-plane (gantry tilt or shear); "
            "volume geometry assumes an orthogonal grid"
        ]
    return []


def load_volume(stack: SeriesStack, *, limits: Limits = DEFAULT_LIMITS) -> Volume:
    """Decode a stack into a :class:`Volume` of modality values (rescale applied per slice)."""
    if len(stack) == 0:
        raise InvalidInput("empty stack: no slices to load")
    first = stack.slices[0].info
    if first.is_color:
        raise InvalidInput(
            f"series {stack.series_instance_uid} is colour ({first.photometric}); not a volume"
        )
    if first.image_orientation is None or first.image_position is None:
        raise DicomError("(0020,0032)/(0020,0037) missing: cannot place the slices in a volume")
    n = len(stack)
    check_budget(
        limits, pixels=first.rows * first.columns * n, bytes_per_sample=4, what=f"volume of {n} slices"
    )
    slopes = [s.info.rescale_slope for s in stack.slices]
    intercepts = [s.info.rescale_intercept for s in stack.slices]
    integral = all(float(s).is_integer() for s in slopes + intercepts)
    planes = []
    for s in stack.slices:
        img = read_dicom(s.path, limits=limits)
        planes.append(img.modality_pixels(0) if not integral else _int_rescale(img.pixels[0], s.info))
    arr = np.stack(planes, axis=0)
    if integral:
        lo, hi = int(arr.min()), int(arr.max())
        for dt in (np.int16, np.int32):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                arr = arr.astype(dt)
                break
    else:
        arr = arr.astype(np.float32)
    iop = np.asarray(first.image_orientation, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    direction = tuple((float(row_dir[i]), float(col_dir[i]), float(normal[i])) for i in range(3))
    ps = first.pixel_spacing
    warnings = list(stack.warnings) + _shear_warning(stack)
    if ps is None:
        warnings.append("(0028,0030) Pixel Spacing missing; 1 mm assumed")
        ps = (1.0, 1.0)
    slice_spacing = stack.spacing
    if slice_spacing <= 0:
        slice_spacing = first.slice_thickness or 1.0
        warnings.append(
            f"single slice: slice spacing taken from (0018,0050) Slice Thickness = {slice_spacing}"
        )
    return Volume(
        array=arr,
        spacing=(float(slice_spacing), float(ps[0]), float(ps[1])),
        origin=tuple(float(v) for v in first.image_position),  # type: ignore[arg-type]
        direction=direction,
        modality=first.modality,
        uids=first.uids,
        windows=first.windows,
        source="dicom",
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _int_rescale(arr: np.ndarray, info: ImageInfo) -> np.ndarray:
    out = arr.astype(np.int64)
    if info.rescale_slope != 1:
        out *= int(info.rescale_slope)
    if info.rescale_intercept != 0:
        out += int(info.rescale_intercept)
    return out


def read_series(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    limits: Limits = DEFAULT_LIMITS,
    min_slices: int = 2,
) -> list[Volume]:
    """Read every stack of ``min_slices`` or more from a folder (recursively) or a list of files.

    Enhanced multi-frame files with per-frame positions become volumes of their own
    (:func:`~medlabel.imaging.multiframe.read_multiframe_volumes`).
    """
    if isinstance(src, str | os.PathLike):
        root = os.fspath(src)
        if not os.path.isdir(root):
            raise InvalidInput(f"not a folder: {root!r}")
        files = sorted(
            os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.upper() != "DICOMDIR"
        )
    else:
        files = [os.fspath(p) for p in src]
    headers, skipped = scan_headers(files)
    vols = []
    for stack in group_series(headers):
        if len(stack) == 1 and stack.slices[0].info.frames >= min_slices:
            from medlabel.imaging.multiframe import read_multiframe_volumes

            try:
                vols.extend(read_multiframe_volumes(stack.slices[0].path, limits=limits))
            except (DicomError, UnsupportedMedia, InvalidInput) as exc:
                skipped.append(
                    f"{os.path.basename(stack.slices[0].path)}: multi-frame not a volume ({exc.message})"
                )
            continue
        if len(stack) >= min_slices:
            v = load_volume(stack, limits=limits)
            if skipped:
                v = Volume(
                    **{
                        **{f: getattr(v, f) for f in v.__dataclass_fields__},
                        "warnings": v.warnings + tuple(skipped),
                    }
                )
            vols.append(v)
    return vols


@dataclass(frozen=True, slots=True)
class Dicomdir:
    """The images a DICOMDIR references that exist on the media, and what was wrong."""

    entries: tuple[DicomdirEntry, ...]
    warnings: tuple[str, ...] = ()


def read_dicomdir(path: str | os.PathLike[str]) -> Dicomdir:
    """Resolve every image referenced by a DICOMDIR (PS3.10 / PS3.3 F.5) to a file on disk.

    Records whose file is missing are left out with a warning (tolerant on read).
    """
    sink: list[str] = []
    ds = open_dataset(path, warnings_sink=sink)
    if "DirectoryRecordSequence" not in ds:
        raise DicomError(f"{os.fspath(path)!r} is not a DICOMDIR: no (0004,1220) Directory Record Sequence")
    try:
        with _recorded(sink):
            fs = FileSet(ds)
    except (ValueError, KeyError, AttributeError, NotImplementedError) as exc:
        raise DicomError(f"DICOMDIR unusable: {exc} (PS3.3 F.5)") from exc
    out: list[DicomdirEntry] = []
    for inst in fs:  # pydicom leaves out (and warns about) records whose file is missing
        p = os.fspath(inst.path)
        out.append(
            DicomdirEntry(
                path=p,
                patient_id=str(getattr(inst, "PatientID", "") or ""),
                study_instance_uid=str(getattr(inst, "StudyInstanceUID", "") or ""),
                series_instance_uid=str(getattr(inst, "SeriesInstanceUID", "") or ""),
                sop_instance_uid=str(getattr(inst, "SOPInstanceUID", "") or ""),
                transfer_syntax_uid=str(getattr(inst, "ReferencedTransferSyntaxUIDInFile", "") or ""),
            )
        )
    return Dicomdir(entries=tuple(out), warnings=tuple(sink))
