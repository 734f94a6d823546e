"""Pure imaging core: readers (DICOM, series, NIfTI, raster, whole-slide), rendering, MPR, DZI.

numpy + frozen dataclasses only; no database, no HTTP. See ``docs/imaging.md``.
"""

from medlabel.imaging.detect import FileKind, read_image, sniff, sniff_bytes
from medlabel.imaging.dicom import SUPPORTED_TRANSFER_SYNTAXES, read_dicom, read_dicom_info
from medlabel.imaging.dicom_wsi import DicomSlide, open_dicom_slide
from medlabel.imaging.dzi import ArrayRegionSource, DeepZoom, render_tile, tile_pixels
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits
from medlabel.imaging.model import Image, ImageInfo, LookupTable, Photometric, SourceUIDs, Volume, Window
from medlabel.imaging.mpr import Plane, PlaneName, extract_plane
from medlabel.imaging.multiframe import read_multiframe_volumes
from medlabel.imaging.nifti import read_itk, read_nifti
from medlabel.imaging.raster import read_raster
from medlabel.imaging.render import (
    PRESETS,
    apply_lut,
    apply_window,
    auto_window,
    encode,
    raw_export,
    render_frame,
)
from medlabel.imaging.series import (
    Dicomdir,
    DicomdirEntry,
    SeriesStack,
    group_series,
    load_volume,
    read_dicomdir,
    read_series,
    scan_headers,
)
from medlabel.imaging.wsi import Slide, SlideInfo, SlideLevel, open_slide

__all__ = [
    "SeriesStack",
    "DicomdirEntry",
    "Dicomdir",
    "apply_lut",
    "read_multiframe_volumes",
    "LookupTable",
    "ArrayRegionSource",
    "DEFAULT_LIMITS",
    "DeepZoom",
    "DicomSlide",
    "FileKind",
    "Image",
    "ImageInfo",
    "Limits",
    "PRESETS",
    "Photometric",
    "Plane",
    "PlaneName",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "Slide",
    "SlideInfo",
    "SlideLevel",
    "SourceUIDs",
    "Volume",
    "Window",
    "apply_window",
    "auto_window",
    "encode",
    "extract_plane",
    "group_series",
    "load_volume",
    "open_dicom_slide",
    "open_slide",
    "raw_export",
    "read_dicom",
    "read_dicom_info",
    "read_dicomdir",
    "read_image",
    "read_itk",
    "read_nifti",
    "read_raster",
    "read_series",
    "render_frame",
    "render_tile",
    "scan_headers",
    "sniff",
    "sniff_bytes",
    "tile_pixels",
]
