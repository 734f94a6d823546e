"""Sniff what a file is from its bytes (magic numbers), not its extension.

Checks, in order: DICOM (``DICM`` at byte 128, PS3.10 7.1; DICOMDIR when the Media Storage SOP
Class is 1.2.840.10008.1.3.10), gzip (looked into for NIfTI), NIfTI-1 (sizeof_hdr 348 and magic
``n+1``/``ni1`` at byte 344), NIfTI-2 (540 and ``n+2``/``ni2`` at byte 4), NRRD, PNG, JPEG, TIFF
(a *wsi-tiff* when it is tiled and pyramidal, or an Aperio SVS), ZIP, MetaImage (a text header
whose first line is a MetaIO ``Key = value`` and which has ``NDims``). DICOM without the preamble
is recognised heuristically (a first group 0002 or 0008 element with a valid explicit VR).
"""

from __future__ import annotations

import io
import os
import zlib
from enum import StrEnum
from typing import BinaryIO, Literal

import tifffile

from medlabel.errors import UnsupportedMedia
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits
from medlabel.imaging.model import Image

__all__ = ["FileKind", "sniff", "sniff_bytes", "read_image"]

_HEAD = 1024
_DICOMDIR_CLASS = b"1.2.840.10008.1.3.10"
_VRS = {
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FL",
    b"FD",
    b"IS",
    b"LO",
    b"LT",
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"PN",
    b"SH",
    b"SL",
    b"SQ",
    b"SS",
    b"ST",
    b"SV",
    b"TM",
    b"UC",
    b"UI",
    b"UL",
    b"UN",
    b"UR",
    b"US",
    b"UT",
    b"UV",
}


_ORDERS: tuple[Literal["little", "big"], ...] = ("little", "big")


class FileKind(StrEnum):
    DICOM = "dicom"
    DICOMDIR = "dicomdir"
    NIFTI = "nifti"
    NRRD = "nrrd"
    PNG = "png"
    JPEG = "jpeg"
    TIFF = "tiff"
    WSI_TIFF = "wsi-tiff"
    ZIP = "zip"
    GZIP = "gzip"
    METAIMAGE = "metaimage"
    UNKNOWN = "unknown"


def _is_nifti(head: bytes) -> bool:
    if len(head) >= 348:
        for order in _ORDERS:
            if int.from_bytes(head[:4], order) == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
                return True
    if len(head) >= 12:
        for order in _ORDERS:
            if int.from_bytes(head[:4], order) == 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
                return True
    return False


_METAIO_FIRST = (b"ObjectType", b"NDims", b"ObjectSubType", b"Comment", b"Name", b"TransformType")


def _is_metaimage(head: bytes) -> bool:
    """A MetaIO header (``.mha``/``.mhd``): ``Key = value`` text lines, ``NDims`` among them."""
    first = head.lstrip(b"\r\n").split(b"\n", 1)[0]
    key, sep, _ = first.partition(b"=")
    return bool(sep) and key.strip() in _METAIO_FIRST and b"NDims" in head


def _media_sop_class(meta: bytes) -> bytes:
    """Value of (0002,0002) Media Storage SOP Class UID from explicit VR LE File Meta bytes."""
    i = meta.find(b"\x02\x00\x02\x00UI")
    if i < 0 or i + 8 > len(meta):
        return b""
    n = int.from_bytes(meta[i + 6 : i + 8], "little")
    return meta[i + 8 : i + 8 + n].rstrip(b"\x00 ")


def _dicom_without_preamble(head: bytes) -> bool:
    if len(head) < 8:
        return False
    group = int.from_bytes(head[:2], "little")
    if group not in (0x0002, 0x0008):
        return False
    return head[4:6] in _VRS or int.from_bytes(head[4:8], "little") < 0x10000


def sniff_bytes(head: bytes, *, tiff_reader: BinaryIO | str | None = None) -> FileKind:
    """Kind of a file from its first bytes (1 KiB is plenty; TIFF pyramids need ``tiff_reader``)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return FileKind.DICOMDIR if _media_sop_class(head[132:]) == _DICOMDIR_CLASS else FileKind.DICOM
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 600)
        except zlib.error:
            inner = b""
        return FileKind.NIFTI if _is_nifti(inner) else FileKind.GZIP
    if _is_nifti(head):
        return FileKind.NIFTI
    if head[:4] == b"NRRD":
        return FileKind.NRRD
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return FileKind.PNG
    if head[:3] == b"\xff\xd8\xff":
        return FileKind.JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        if tiff_reader is not None and _is_pyramid(tiff_reader):
            return FileKind.WSI_TIFF
        return FileKind.TIFF
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return FileKind.ZIP
    if _dicom_without_preamble(head):
        return FileKind.DICOM
    if _is_metaimage(head):
        return FileKind.METAIMAGE
    return FileKind.UNKNOWN


def _is_pyramid(src: BinaryIO | str) -> bool:
    try:
        with tifffile.TiffFile(src) as tif:
            if tif.is_svs:
                return True
            if not tif.series:
                return False
            base = tif.series[0].levels[0].keyframe
            return bool(getattr(base, "is_tiled", False)) and len(tif.series[0].levels) > 1
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, KeyError):
        return False


def sniff(src: str | os.PathLike[str] | bytes) -> FileKind:
    """Kind of a file (path) or a whole payload (bytes)."""
    if isinstance(src, bytes | bytearray):
        data = bytes(src)
        return sniff_bytes(data[:_HEAD], tiff_reader=io.BytesIO(data))
    path = os.fspath(src)
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    return sniff_bytes(head, tiff_reader=path)


def read_image(src: str | os.PathLike[str] | bytes, *, limits: Limits = DEFAULT_LIMITS) -> Image:
    """Read a 2D image (DICOM, PNG, JPEG, TIFF) chosen by its bytes, not its name.

    Volumes (NIfTI, series), slides and archives have their own readers; they raise
    :class:`UnsupportedMedia` here naming the reader to use.
    """
    kind = sniff(src)
    if kind is FileKind.DICOM:
        from medlabel.imaging.dicom import read_dicom

        return read_dicom(src, limits=limits)
    if kind in (FileKind.PNG, FileKind.JPEG, FileKind.TIFF):
        from medlabel.imaging.raster import read_raster

        return read_raster(src, limits=limits)
    hint = {
        FileKind.NIFTI: "read_nifti",
        FileKind.NRRD: "read_itk",
        FileKind.METAIMAGE: "read_itk",
        FileKind.WSI_TIFF: "open_slide",
        FileKind.DICOMDIR: "read_dicomdir",
    }.get(kind, "")
    raise UnsupportedMedia(
        f"file kind {kind.value!r} is not a 2D image" + (f"; use {hint}()" if hint else ""),
        detail={"kind": kind.value},
    )
