"""DICOM image reader on pydicom 3 (with the pylibjpeg and pyjpegls decoders).

Supported transfer syntaxes are whatever pydicom decodes with the installed plug-ins: implicit and
explicit VR little endian, explicit VR big endian, deflated, RLE Lossless, JPEG baseline/extended/
lossless, JPEG-LS lossless and near-lossless, JPEG 2000 (lossless and lossy) -- see
:data:`SUPPORTED_TRANSFER_SYNTAXES`.

Colour: YBR_FULL, YBR_FULL_422, YBR_ICT and YBR_RCT become RGB; PALETTE COLOR is looked up into
RGB (PS3.3 C.7.6.3.1.5). MONOCHROME1 is kept as stored and inverted only when rendering.

Tolerant on read: pydicom's warnings about small deviations (bad VR values, odd lengths) are
recorded on :attr:`ImageInfo.warnings` instead of failing. What cannot be tolerated raises
:class:`~medlabel.errors.DicomError` (broken file), :class:`~medlabel.errors.UnsupportedMedia`
(no pixels, unknown transfer syntax) or :class:`~medlabel.errors.TooLarge` (over budget, checked
from the header before decoding).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, BinaryIO, TypeVar

import numpy as np
import pydicom
from pydicom import pixels as pdpixels
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import UID

from medlabel.errors import DicomError, InvalidInput, UnsupportedMedia
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits, check_budget
from medlabel.imaging.model import Image, ImageInfo, LookupTable, Photometric, SourceUIDs, Window

__all__ = [
    "SUPPORTED_TRANSFER_SYNTAXES",
    "DicomSource",
    "open_dataset",
    "info_from_dataset",
    "image_from_dataset",
    "read_dicom_info",
    "read_dicom",
]

DicomSource = str | os.PathLike[str] | bytes | BinaryIO

SUPPORTED_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.201": "HTJ2K Lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K Lossless RPCL",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
}

_YBR = {"YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "YBR_PARTIAL_422"}
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_T = TypeVar("_T")


@contextmanager
def _recorded(sink: list[str]) -> Iterator[None]:
    """Collect pydicom's UserWarnings (tolerated deviations) into ``sink``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        msg = str(w.message).split(" Please see <")[0]
        if msg not in sink:
            sink.append(msg)


def open_dataset(
    src: DicomSource,
    *,
    stop_before_pixels: bool = False,
    force: bool = False,
    warnings_sink: list[str] | None = None,
) -> Dataset:
    """``dcmread`` with errors turned into :class:`DicomError`.

    ``force=True`` also accepts files without the PS3.10 preamble/File Meta (a warning is recorded).
    """
    sink = warnings_sink if warnings_sink is not None else []
    fp: Any = io.BytesIO(src) if isinstance(src, bytes | bytearray) else src
    try:
        with _recorded(sink):
            ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, force=force)
    except InvalidDicomError as exc:
        raise DicomError(
            "not a DICOM file: no 'DICM' prefix after the 128-byte preamble and no File Meta "
            "Information (PS3.10 7.1)",
            detail={"reason": str(exc)},
        ) from exc
    except FileNotFoundError as exc:
        raise DicomError(f"file not found: {src!r}") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
        raise DicomError(f"cannot parse DICOM data set: {type(exc).__name__}: {exc}") from exc
    if force and "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        sink.append("no File Meta Information (PS3.10 7.1); read with force=True")
    # dcmread is lazy for deferred values; touch the group 0028 header now so errors surface here
    return ds


_KEYWORD_TAGS: dict[str, BaseTag] = {}


def _tag_of(keyword: str) -> BaseTag:
    found = _KEYWORD_TAGS.get(keyword)
    if found is None:
        number = tag_for_keyword(keyword)
        if number is None:
            raise KeyError(keyword)
        found = _KEYWORD_TAGS[keyword] = BaseTag(number)
    return found


def _get(ds: Dataset, keyword: str, tag: str, conv: Callable[[Any], _T], default: _T) -> _T:
    """Read one element, naming the tag when its value cannot be converted."""
    try:
        number = _tag_of(keyword)  # a tag, not a keyword: pydicom looks keywords up on every access
        if number not in ds:
            return default
        value = ds[number].value
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise DicomError(f"{tag} {keyword}: unreadable value ({exc})") from exc
    if value is None or value == "":
        return default
    try:
        return conv(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DicomError(f"{tag} {keyword}: value {value!r} cannot be read as {conv.__name__}") from exc


def _as_int(value: Any) -> int:
    return int(value)


def _as_float(value: Any) -> float:
    return float(value)


def _as_str(value: Any) -> str:
    return str(value).strip()


_as_int.__name__ = "an integer"
_as_float.__name__ = "a decimal number"
_as_str.__name__ = "a string"


def _listify(value: Any) -> list[Any]:
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return list(value)
    return [value]


def _floats(n: int) -> Callable[[Any], tuple[float, ...]]:
    def conv(value: Any) -> tuple[float, ...]:
        seq = _listify(value)
        if len(seq) != n:
            raise ValueError(f"expected {n} values, found {len(seq)}")
        return tuple(float(v) for v in seq)

    conv.__name__ = f"{n} decimal strings"
    return conv


def _windows(ds: Dataset, sink: list[str]) -> tuple[Window, ...]:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return ()
    try:
        centers = ds.WindowCenter
        widths = ds.WindowWidth
        centers = _listify(centers)
        widths = _listify(widths)
        expl = _listify(ds.get("WindowCenterWidthExplanation", None) or [])
    except (ValueError, TypeError) as exc:
        sink.append(f"(0028,1050)/(0028,1051) window unreadable ({exc}); ignored")
        return ()
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    out: list[Window] = []
    for i, (c, w) in enumerate(zip(centers, widths, strict=False)):
        try:
            explanation = str(expl[i]) if i < len(expl) and expl[i] is not None else ""
            out.append(Window(float(c), float(w), explanation, function))
        except (ValueError, TypeError) as exc:
            sink.append(f"(0028,1050)/(0028,1051) window {i} ignored: {exc}")
        except DicomError as exc:
            sink.append(f"window {i} ignored: {exc.message}")
    if len(centers) != len(widths):
        sink.append(
            f"(0028,1050) Window Center has {len(centers)} values but (0028,1051) Window Width "
            f"{len(widths)}; paired the first {min(len(centers), len(widths))}"
        )
    return tuple(out)


def _luts(ds: Dataset, keyword: str, tag: str, pixel_repr: int, sink: list[str]) -> list[LookupTable]:
    """Items of a Modality/VOI LUT Sequence; unusable items are skipped with a warning."""
    if keyword not in ds:
        return []
    big = str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.2"
    out: list[LookupTable] = []
    for i, item in enumerate(ds[keyword].value):
        try:
            desc = [int(v) for v in _listify(item.LUTDescriptor)]
            if len(desc) != 3:
                raise ValueError(f"(0028,3002) LUT Descriptor has {len(desc)} values, expected 3")
            entries = desc[0] or 65536
            first = desc[1]
            if pixel_repr == 1 and first > 32767:
                first -= 65536  # US-encoded descriptor of signed input (PS3.3 C.11.1.1.1)
            raw = item.LUTData
            if isinstance(raw, bytes | bytearray):
                width = 2 if len(raw) >= 2 * entries else 1
                dt = np.dtype(f"{'>' if big else '<'}u{width}")
                data = tuple(int(v) for v in np.frombuffer(raw, dtype=dt, count=entries))
            else:
                data = tuple(int(v) for v in _listify(raw))[:entries]
            if len(data) < entries:
                raise ValueError(f"(0028,3006) LUT Data has {len(data)} entries, descriptor says {entries}")
            out.append(LookupTable(first, desc[2], data, str(item.get("LUTExplanation", "") or "")))
        except (AttributeError, ValueError, TypeError, KeyError) as exc:
            sink.append(f"{tag} item {i + 1} ignored: {exc}")
        except InvalidInput as exc:
            sink.append(f"{tag} item {i + 1} ignored: {exc.message}")
    return out


def _first_functional(ds: Dataset, seq: str, item: str) -> Dataset | None:
    """Item ``item`` of the Shared or first Per-frame functional group (enhanced multi-frame)."""
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if group in ds and len(ds[group].value) > 0:
            fg = ds[group].value[0]
            if seq in fg and len(fg[seq].value) > 0:
                inner: Dataset = fg[seq].value[0]
                if item == "" or item in inner:
                    return inner
    return None


def info_from_dataset(ds: Dataset, *, warnings_sink: list[str] | None = None) -> ImageInfo:
    """Build :class:`ImageInfo` from a data set's header; raises if it is not an image.

    pydicom converts values lazily, so its warnings about invalid values are recorded here.
    """
    sink = warnings_sink if warnings_sink is not None else []
    with _recorded(sink):
        info = _build_info(ds, sink)
    return ImageInfo(**{**_asdict(info), "warnings": tuple(sink)})  # type: ignore[arg-type]


def reread_info(info: ImageInfo, ds: Dataset, changed: Iterable[int]) -> ImageInfo | None:
    """``info`` for the data set ``ds``, whose elements ``changed`` are all that differ from the
    data set ``info`` was built from, when they are only Image Position (Patient) (0020,0032)
    and SOP Instance UID (0008,0018) (the slices of a series) and read without a warning; None
    when :func:`info_from_dataset` must build it again. Read as ``_build_info`` reads them."""
    tags = set(changed)
    if not tags <= _REREAD:
        return None
    sink: list[str] = []
    with _recorded(sink):
        position = info.image_position
        if 0x00200032 in tags:
            found = _get(ds, "ImagePositionPatient", "(0020,0032)", _floats(3), None)
            position = (found[0], found[1], found[2]) if found is not None else None
        uids = info.uids
        if 0x00080018 in tags:
            uids = replace(uids, sop_instance_uid=_get(ds, "SOPInstanceUID", "(0008,0018)", _as_str, ""))
    if sink:
        return None
    return replace(info, image_position=position, uids=uids)


_REREAD = frozenset({0x00200032, 0x00080018})


def _build_info(ds: Dataset, sink: list[str]) -> ImageInfo:
    sop_class = _get(ds, "SOPClassUID", "(0008,0016)", _as_str, "")
    if not sop_class and hasattr(ds, "file_meta"):
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    if len(ds) == 0:
        raise DicomError("data set is empty after the File Meta Information: truncated or not DICOM")
    has_pixels = any(t in ds for t in _PIXEL_TAGS)
    if not has_pixels and "Rows" not in ds:
        name = UID(sop_class).name if sop_class else "unknown SOP Class"
        raise UnsupportedMedia(
            f"no Pixel Data (7FE0,0010): {name} ({sop_class or 'no (0008,0016)'}) is not an image"
        )
    rows = _get(ds, "Rows", "(0028,0010)", _as_int, 0)
    columns = _get(ds, "Columns", "(0028,0011)", _as_int, 0)
    frames = _get(ds, "NumberOfFrames", "(0028,0008)", _as_int, 1)
    spp = _get(ds, "SamplesPerPixel", "(0028,0002)", _as_int, 1)
    bits_allocated = _get(ds, "BitsAllocated", "(0028,0100)", _as_int, 0)
    bits_stored = _get(ds, "BitsStored", "(0028,0101)", _as_int, bits_allocated)
    pixel_repr = _get(ds, "PixelRepresentation", "(0028,0103)", _as_int, 0)
    photometric_raw = _get(ds, "PhotometricInterpretation", "(0028,0004)", _as_str, "")
    slope = _get(ds, "RescaleSlope", "(0028,1053)", _as_float, 1.0)
    intercept = _get(ds, "RescaleIntercept", "(0028,1052)", _as_float, 0.0)
    rescale_type = _get(ds, "RescaleType", "(0028,1054)", _as_str, "")
    spacing = _get(ds, "PixelSpacing", "(0028,0030)", _floats(2), None)
    thickness = _get(ds, "SliceThickness", "(0018,0050)", _as_float, None)
    position = _get(ds, "ImagePositionPatient", "(0020,0032)", _floats(3), None)
    orientation = _get(ds, "ImageOrientationPatient", "(0020,0037)", _floats(6), None)
    modality = _get(ds, "Modality", "(0008,0060)", _as_str, "")
    windows = _windows(ds, sink)
    # Enhanced multi-frame objects keep geometry and rescale in functional groups (PS3.3 C.7.6.16)
    if spacing is None:
        pm = _first_functional(ds, "PixelMeasuresSequence", "PixelSpacing")
        if pm is not None:
            spacing = _get(pm, "PixelSpacing", "(0028,0030)", _floats(2), None)
            thickness = _get(pm, "SliceThickness", "(0018,0050)", _as_float, thickness)
    if orientation is None:
        po = _first_functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
        if po is not None:
            orientation = _get(po, "ImageOrientationPatient", "(0020,0037)", _floats(6), None)
    if position is None:
        pp = _first_functional(ds, "PlanePositionSequence", "ImagePositionPatient")
        if pp is not None:
            position = _get(pp, "ImagePositionPatient", "(0020,0032)", _floats(3), None)
    if "RescaleSlope" not in ds:
        pvt = _first_functional(ds, "PixelValueTransformationSequence", "RescaleSlope")
        if pvt is not None:
            slope = _get(pvt, "RescaleSlope", "(0028,1053)", _as_float, 1.0)
            intercept = _get(pvt, "RescaleIntercept", "(0028,1052)", _as_float, 0.0)
    if not windows:
        fv = _first_functional(ds, "FrameVOILUTSequence", "WindowCenter")
        if fv is not None:
            windows = _windows(fv, sink)

    if "Rows" not in ds or "Columns" not in ds:
        raise DicomError("(0028,0010) Rows or (0028,0011) Columns missing from an image data set")
    if rows <= 0 or columns <= 0:
        raise DicomError(f"(0028,0010) Rows / (0028,0011) Columns must be > 0, found {rows} x {columns}")
    if frames <= 0:
        sink.append(f"(0028,0008) Number of Frames is {frames}; read as 1")
        frames = 1
    if spp not in (1, 3):
        raise UnsupportedMedia(f"(0028,0002) Samples per Pixel {spp} not supported (expected 1 or 3)")
    if bits_allocated not in (1, 8, 16, 32, 64):
        raise DicomError(f"(0028,0100) Bits Allocated {bits_allocated} is not 1, 8, 16, 32 or 64")
    if slope == 0:
        sink.append("(0028,1053) Rescale Slope is 0; read as 1")
        slope = 1.0
    if not photometric_raw:
        photometric_raw = "MONOCHROME2" if spp == 1 else "RGB"
        sink.append(f"(0028,0004) Photometric Interpretation missing; assumed {photometric_raw}")
    if photometric_raw == "MONOCHROME1":
        photometric = Photometric.MONOCHROME1
    elif photometric_raw == "MONOCHROME2":
        photometric = Photometric.MONOCHROME2
    elif photometric_raw in _YBR or photometric_raw in ("RGB", "PALETTE COLOR"):
        photometric = Photometric.RGB
    else:
        raise UnsupportedMedia(f"(0028,0004) Photometric Interpretation {photometric_raw!r} not supported")
    if photometric is Photometric.RGB and photometric_raw != "PALETTE COLOR" and spp != 3:
        raise DicomError(f"(0028,0002) Samples per Pixel is {spp} but {photometric_raw} needs 3")

    tsyntax = ""
    if hasattr(ds, "file_meta"):
        tsyntax = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    uids = SourceUIDs(
        study_instance_uid=_get(ds, "StudyInstanceUID", "(0020,000D)", _as_str, ""),
        series_instance_uid=_get(ds, "SeriesInstanceUID", "(0020,000E)", _as_str, ""),
        sop_instance_uid=_get(ds, "SOPInstanceUID", "(0008,0018)", _as_str, ""),
        frame_of_reference_uid=_get(ds, "FrameOfReferenceUID", "(0020,0052)", _as_str, ""),
        sop_class_uid=sop_class,
        patient_id=_get(ds, "PatientID", "(0010,0020)", _as_str, ""),
    )
    dimension = _dimension(ds, sink)
    lut_shape = _get(ds, "PresentationLUTShape", "(2050,0020)", _as_str, "").upper()
    if lut_shape not in ("", "IDENTITY", "INVERSE"):
        sink.append(f"(2050,0020) Presentation LUT Shape {lut_shape!r} is not IDENTITY or INVERSE; ignored")
        lut_shape = ""
    if "PresentationLUTSequence" in ds:
        sink.append("(2050,0010) Presentation LUT Sequence ignored (not applied when rendering)")
    modality_luts = _luts(ds, "ModalityLUTSequence", "(0028,3000)", pixel_repr, sink)
    if modality_luts and ("RescaleSlope" in ds or "RescaleIntercept" in ds):
        sink.append(
            "both Modality LUT Sequence (0028,3000) and Rescale present; the LUT is used (PS3.3 C.11.1)"
        )
    return ImageInfo(
        kind="dicom",
        rows=rows,
        columns=columns,
        frames=frames,
        samples_per_pixel=3 if photometric is Photometric.RGB else 1,
        photometric=photometric,
        modality=modality,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=pixel_repr,
        rescale_slope=slope,
        rescale_intercept=intercept,
        rescale_type=rescale_type,
        windows=windows,
        pixel_spacing=(spacing[0], spacing[1]) if spacing is not None else None,
        slice_thickness=thickness,
        image_position=(position[0], position[1], position[2]) if position is not None else None,
        image_orientation=tuple(orientation) if orientation is not None else None,  # type: ignore[arg-type]
        transfer_syntax_uid=tsyntax,
        uids=uids,
        has_voi_lut_sequence="VOILUTSequence" in ds,
        modality_lut=modality_luts[0] if modality_luts else None,
        voi_luts=tuple(_luts(ds, "VOILUTSequence", "(0028,3010)", pixel_repr, sink)),
        warnings=tuple(sink),
        presentation_lut_shape=lut_shape,
        dimension=dimension,
    )


#: (keyword, tag, name shown) of the attributes that tell apart images at one position.
_DIMENSIONS = (
    ("TemporalPositionIdentifier", "(0020,0100)", "temporal position"),
    ("TriggerTime", "(0018,1060)", "trigger time"),
    ("EchoNumbers", "(0018,0086)", "echo"),
    ("DiffusionBValue", "(0018,9087)", "b-value"),
)


def _dimension(ds: Dataset, sink: list[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for keyword, tag, name in _DIMENSIONS:
        try:
            value = _get(ds, keyword, tag, _first_float, None)
        except DicomError as exc:
            sink.append(f"{exc.message}; not used to tell images apart")
            continue
        if value is not None:
            out.append((name, value))
    return tuple(out)


def _first_float(value: Any) -> float:
    return float(_listify(value)[0])


_first_float.__name__ = "a number"


def _infer_syntax(ds: Dataset, sink: list[str]) -> str:
    """Without (0002,0010), use the encoding pydicom detected while parsing (native pixels only)."""
    encoding = getattr(ds, "original_encoding", (None, None))
    implicit, little = encoding if encoding else (None, None)
    if implicit is None or little is None or (0x7FE00010 in ds and ds[0x7FE00010].is_undefined_length):
        return ""
    ts = "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
    if not hasattr(ds, "file_meta"):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    sink.append(f"(0002,0010) Transfer Syntax UID missing; {UID(ts).name} inferred from the data set")
    return ts


def _check_syntax(ds: Dataset, info: ImageInfo) -> None:
    ts = info.transfer_syntax_uid
    if not ts:
        raise DicomError("(0002,0010) Transfer Syntax UID missing from File Meta; cannot decode pixels")
    if ts not in SUPPORTED_TRANSFER_SYNTAXES:
        name = UID(ts).name
        raise UnsupportedMedia(
            f"(0002,0010) Transfer Syntax {name} ({ts}) cannot be decoded; "
            f"supported: {', '.join(sorted(set(SUPPORTED_TRANSFER_SYNTAXES.values())))}"
        )


def image_from_dataset(
    ds: Dataset,
    *,
    limits: Limits = DEFAULT_LIMITS,
    frames: Sequence[int] | None = None,
    warnings_sink: list[str] | None = None,
) -> Image:
    """Decode a data set's pixels (all frames or ``frames``) into an :class:`Image`."""
    sink = warnings_sink if warnings_sink is not None else []
    info = info_from_dataset(ds, warnings_sink=sink)
    if not any(t in ds for t in _PIXEL_TAGS):
        raise UnsupportedMedia("no Pixel Data (7FE0,0010) in a data set that has Rows/Columns")
    if not info.transfer_syntax_uid:
        inferred = _infer_syntax(ds, sink)
        if inferred:
            info = ImageInfo(**{**_asdict(info), "transfer_syntax_uid": inferred})  # type: ignore[arg-type]
    _check_syntax(ds, info)
    wanted = list(range(info.frames)) if frames is None else list(frames)
    if not wanted:
        raise InvalidInput("frames must name at least one frame")
    for f in wanted:
        if not 0 <= f < info.frames:
            raise DicomError(f"frame {f} out of range: (0028,0008) Number of Frames is {info.frames}")
    photometric_raw = str(ds.get("PhotometricInterpretation", ""))
    out_samples = 3 if info.is_color else 1
    bytes_per_sample = max(info.bits_allocated // 8, 1)
    if photometric_raw == "PALETTE COLOR":
        bytes_per_sample = 2  # LUT entries are up to 16 bit
    check_budget(
        limits,
        pixels=info.rows * info.columns * max(len(wanted), 1),
        samples=out_samples,
        bytes_per_sample=bytes_per_sample,
        what=f"DICOM {info.rows}x{info.columns}x{len(wanted)} frames",
    )
    arrays: list[np.ndarray] = []
    try:
        with _recorded(sink):
            if frames is None:
                arr = pdpixels.pixel_array(ds, as_rgb=True)
                arrays.append(arr[np.newaxis] if info.frames == 1 else arr)
            else:
                for f in wanted:
                    a = pdpixels.pixel_array(ds, index=f, as_rgb=True)
                    arrays.append(a[np.newaxis])
    except (
        ValueError,
        RuntimeError,
        NotImplementedError,
        AttributeError,
        TypeError,
        OSError,
        EOFError,
    ) as exc:
        msg = str(exc)
        if "less than expected" in msg or "truncat" in msg.lower():
            raise DicomError(f"(7FE0,0010) Pixel Data is truncated: {msg}") from exc
        if isinstance(exc, NotImplementedError | RuntimeError) and "plugin" in msg.lower():
            raise UnsupportedMedia(f"no decoder for {info.transfer_syntax_uid}: {msg}") from exc
        raise DicomError(f"(7FE0,0010) Pixel Data cannot be decoded: {type(exc).__name__}: {msg}") from exc
    arr = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    if photometric_raw == "PALETTE COLOR":
        try:
            arr = _apply_palette(arr, ds, big_endian=info.transfer_syntax_uid == "1.2.840.10008.1.2.2")
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise DicomError(f"(0028,1201..1203) Palette Color LUT unusable: {exc}") from exc
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    n = len(wanted)
    if info.is_color:
        arr = arr.reshape((n, info.rows, info.columns, 3))
    else:
        arr = arr.reshape((n, info.rows, info.columns))
    final = ImageInfo(
        **{**_asdict(info), "frames": n, "warnings": tuple(sink)}  # type: ignore[arg-type]
    )
    return Image(info=final, pixels=arr)


def _apply_palette(arr: np.ndarray, ds: Dataset, *, big_endian: bool) -> np.ndarray:
    """PALETTE COLOR lookup (PS3.3 C.7.6.3.1.5/.6), honouring the byte order of OW LUT Data.

    pydicom 3.0's ``apply_color_lut`` reads non-segmented OW LUT Data as little endian even in
    Explicit VR Big Endian files (the channels come out byte-swapped), so we unpack it here and
    leave only segmented LUTs (PS3.3 C.7.9.2) to pydicom.
    """
    if "RedPaletteColorLookupTableData" not in ds:
        return np.asarray(pdpixels.apply_color_lut(arr, ds))
    desc = _listify(ds.RedPaletteColorLookupTableDescriptor)
    if len(desc) != 3:
        raise ValueError(f"(0028,1101) descriptor must have 3 values, found {desc!r}")
    entries = int(desc[0]) or 65536
    first = int(desc[1])
    luts = []
    for kw in (
        "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData",
        "BluePaletteColorLookupTableData",
    ):
        raw = ds[kw].value
        if isinstance(raw, bytes | bytearray):
            depth = len(raw) * 8 // entries
            if depth not in (8, 16):
                raise ValueError(f"{kw}: {len(raw)} bytes for {entries} entries is not 8 or 16 bit")
            dt = np.dtype(f"{'>' if big_endian else '<'}u{depth // 8}")
            luts.append(
                np.frombuffer(raw, dtype=dt, count=entries).astype(np.uint16 if depth == 16 else np.uint8)
            )
        else:
            luts.append(np.asarray(_listify(raw), dtype=np.uint16))
    if len({len(lut) for lut in luts}) != 1:
        raise ValueError("red, green and blue LUT Data differ in length")
    dtype = np.result_type(*luts)
    index = np.clip(arr.astype(np.int64) - first, 0, len(luts[0]) - 1)
    return np.stack([lut.astype(dtype)[index] for lut in luts], axis=-1)


def _asdict(info: ImageInfo) -> dict[str, Any]:
    return {f: getattr(info, f) for f in info.__dataclass_fields__}


def read_dicom_info(src: DicomSource, *, force: bool = False) -> ImageInfo:
    """Header-only read (no pixel decoding)."""
    sink: list[str] = []
    ds = open_dataset(src, stop_before_pixels=True, force=force, warnings_sink=sink)
    return info_from_dataset(ds, warnings_sink=sink)


def read_dicom(
    src: DicomSource,
    *,
    limits: Limits = DEFAULT_LIMITS,
    frames: Sequence[int] | None = None,
    force: bool = False,
) -> Image:
    """Read and decode a DICOM image.

    The header is parsed first and the decoded size checked against ``limits``
    (Rows x Columns x Frames x Samples x bytes) before any pixel is decoded.
    """
    sink: list[str] = []
    ds = open_dataset(src, force=force, warnings_sink=sink)
    return image_from_dataset(ds, limits=limits, frames=frames, warnings_sink=sink)
