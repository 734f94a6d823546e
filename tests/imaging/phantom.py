"""Generated DICOM phantoms: a CT series with a known sphere, written slice by slice with pydicom."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


@dataclass(frozen=True)
class Phantom:
    folder: Path
    files: list[Path]
    """Written files in slice order (ascending along the normal)."""
    hu: np.ndarray
    """(z, y, x) Hounsfield units."""
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    """(slice, row, col)."""
    row_dir: tuple[float, float, float]
    col_dir: tuple[float, float, float]
    series_uid: str


def rotation_x(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def make_ct_series(
    folder: Path,
    *,
    shape: tuple[int, int, int] = (24, 48, 40),
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
    origin: tuple[float, float, float] = (-14.0, -20.0, 30.0),
    tilt_deg: float = 0.0,
    slope: float = 1.0,
    intercept: float = -1024.0,
    seed: int = 1,
    shuffle: bool = True,
) -> Phantom:
    """Write a CT series (one file per slice, random file names) containing a bright sphere."""
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = shape
    sz, sy, sx = spacing
    rot = rotation_x(tilt_deg)
    row_dir = rot @ np.array([1.0, 0.0, 0.0])
    col_dir = rot @ np.array([0.0, 1.0, 0.0])
    normal = np.cross(row_dir, col_dir)
    z, y, x = np.meshgrid(np.arange(nz) * sz, np.arange(ny) * sy, np.arange(nx) * sx, indexing="ij")
    centre = np.array([nz * sz / 2, ny * sy / 2, nx * sx / 2])
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    rng = np.random.default_rng(seed)
    hu = np.where(r < min(nz * sz, ny * sy, nx * sx) / 3, 80.0, -1000.0)
    hu = hu + np.round(rng.normal(0, 5, hu.shape)) + np.round(x)  # texture so slices differ
    stored = np.round((hu - intercept) / slope).astype(np.int16)
    hu = stored.astype(np.float64) * slope + intercept
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    names = [f"{i:04d}" for i in range(nz)]
    if shuffle:
        random.Random(seed).shuffle(names)
    files = []
    for k in range(nz):
        pos = np.asarray(origin) + k * sz * normal
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.PatientID = "PHANTOM"
        ds.Modality = "CT"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = stored[k].tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return Phantom(
        folder=folder,
        files=files,
        hu=hu,
        origin=origin,
        spacing=spacing,
        row_dir=tuple(row_dir),
        col_dir=tuple(col_dir),
        series_uid=str(series),
    )


def make_dicom_wsi(
    folder: Path, base: np.ndarray, *, levels: int = 3, tile: int = 256, jpeg_levels: tuple[int, ...] = (0,)
) -> list[np.ndarray]:
    """Write a TILED_FULL VL Whole Slide Microscopy pyramid (one instance per level).

    Levels in ``jpeg_levels`` are JPEG baseline (YBR_FULL_422, encoded by Pillow); the others are
    native Explicit VR Little Endian RGB. Returns the pyramid arrays.
    """
    import io

    from PIL import Image as PILImage
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage

    folder.mkdir(parents=True, exist_ok=True)
    pyramid = [base]
    for _ in range(levels - 1):
        prev = pyramid[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        pyramid.append(prev[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8))
    study, series, frame_uid = generate_uid(), generate_uid(), generate_uid()
    for i, arr in enumerate(pyramid):
        h, w = arr.shape[:2]
        nrows, ncols = -(-h // tile), -(-w // tile)
        tiles = []
        for r in range(nrows):
            for c in range(ncols):
                t = np.zeros((tile, tile, 3), np.uint8)
                part = arr[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
                t[: part.shape[0], : part.shape[1]] = part
                tiles.append(t)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_uid
        ds.Modality = "SM"
        ds.PatientID = "SLIDE"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
        ds.TotalPixelMatrixFocalPlanes = 1
        ds.NumberOfOpticalPaths = 1
        ds.Rows = ds.Columns = tile
        ds.NumberOfFrames = len(tiles)
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        pm = Dataset()
        pm.PixelSpacing = [0.00025 * 2**i, 0.00025 * 2**i]
        pm.SliceThickness = 0.001
        ds.ImagedVolumeWidth = w * 0.00025 * 2**i
        ds.ImagedVolumeHeight = h * 0.00025 * 2**i
        ds.ImagedVolumeDepth = 0.001
        ds.ContainerIdentifier = "SLIDE-1"
        op = Dataset()
        op.OpticalPathIdentifier = "1"
        ds.OpticalPathSequence = Sequence([op])
        shared = Dataset()
        shared.PixelMeasuresSequence = Sequence([pm])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        if i in jpeg_levels:
            ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
            ds.PhotometricInterpretation = "YBR_FULL_422"
            frames = []
            for t in tiles:
                buf = io.BytesIO()
                PILImage.fromarray(t).save(buf, "JPEG", quality=95)
                frames.append(buf.getvalue())
            ds.PixelData = encapsulate(frames)
            ds["PixelData"].VR = "OB"
            ds.LossyImageCompression = "01"
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.PhotometricInterpretation = "RGB"
            ds.PixelData = np.stack(tiles).tobytes()
        ds.save_as(folder / f"level{i}.dcm", enforce_file_format=True)
    return pyramid
