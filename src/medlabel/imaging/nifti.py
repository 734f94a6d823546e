"""NIfTI-1/NIfTI-2 (nibabel) and NRRD/MetaImage (SimpleITK) readers -> :class:`Volume`.

NIfTI stores a RAS+ affine (x Right, y Anterior, z Superior). We store **LPS** like DICOM and
ITK: ``affine_lps = diag(-1, -1, 1, 1) @ affine_ras``, so a volume read from NIfTI and the same
volume read from DICOM have the same origin and direction. The array is transposed from
nibabel's ``[i, j, k]`` to our ``(z, y, x)``. Scaling (scl_slope/scl_inter) is applied.

The affine is nibabel's ``img.affine`` (sform when sform_code > 0, else qform); a warning is
recorded when both are set and disagree, and when the affine has shear (the direction is then
orthonormalised by polar decomposition, as ITK requires).
"""

from __future__ import annotations

import gzip
import io
import os
import zlib

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medlabel.errors import InvalidInput, TooLarge, UnsupportedMedia
from medlabel.imaging.limits import DEFAULT_LIMITS, Limits, check_budget
from medlabel.imaging.model import Volume

__all__ = ["RAS_TO_LPS", "read_nifti", "read_itk", "volume_from_affine"]

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def volume_from_affine(
    data_ijk: np.ndarray,
    affine_lps: np.ndarray,
    *,
    source: str,
    warnings: list[str],
) -> Volume:
    """Build a :class:`Volume` from an ``[i, j, k]`` array and a 4x4 index->LPS affine."""
    m = np.asarray(affine_lps, dtype=float)[:3, :3]
    spacing_ijk = np.linalg.norm(m, axis=0)
    if np.any(spacing_ijk <= 0) or not np.all(np.isfinite(m)):
        raise InvalidInput(f"affine has a zero or non-finite column: {m.tolist()}")
    direction = m / spacing_ijk
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        u, _, vt = np.linalg.svd(direction)
        direction = u @ vt
        warnings.append("affine has shear; direction orthonormalised (polar decomposition)")
    arr = np.ascontiguousarray(np.transpose(data_ijk, (2, 1, 0)))
    return Volume(
        array=arr,
        spacing=(float(spacing_ijk[2]), float(spacing_ijk[1]), float(spacing_ijk[0])),
        origin=(float(affine_lps[0, 3]), float(affine_lps[1, 3]), float(affine_lps[2, 3])),
        direction=_rows3(direction),
        source=source,
        warnings=tuple(warnings),
    )


def _rows3(m: np.ndarray) -> tuple[tuple[float, float, float], ...]:
    return tuple((float(r[0]), float(r[1]), float(r[2])) for r in np.asarray(m, dtype=float))


def _gunzip_limited(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"corrupt gzip stream: {exc}") from exc
    if len(out) > limit:
        raise TooLarge(f"gzip expands beyond the limit of {limit} bytes")
    return out


def read_nifti(
    src: str | os.PathLike[str] | bytes,
    *,
    volume_index: int = 0,
    limits: Limits = DEFAULT_LIMITS,
) -> Volume:
    """Read one 3D volume from a NIfTI-1/2 file (``.nii`` / ``.nii.gz``) or its bytes.

    For 4D files ``volume_index`` picks the volume along the 4th axis (a warning says how many
    there are). 2D files become one slice. More than 4 dimensions is unsupported.
    """
    warnings: list[str] = []
    try:
        if isinstance(src, bytes | bytearray):
            raw = bytes(src)
            if raw[:2] == b"\x1f\x8b":
                raw = _gunzip_limited(raw, limits.max_bytes + 1024)
            img = _image_from_bytes(raw)
        else:
            loaded = nib.load(os.fspath(src))
            if not isinstance(loaded, nib.Nifti1Image | nib.Nifti2Image):
                raise UnsupportedMedia(f"expected NIfTI-1/2, nibabel found {type(loaded).__name__}")
            img = loaded
    except FileNotFoundError as exc:
        raise InvalidInput(f"file not found: {src!r}") from exc
    except (nib.filebasedimages.ImageFileError, ValueError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UnsupportedMedia(f"not a readable NIfTI file: {exc}") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise UnsupportedMedia(f"expected NIfTI-1/2, nibabel found {type(img).__name__}")
    hdr = img.header
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 4 and any(s > 1 for s in shape[4:]):
        raise UnsupportedMedia(f"NIfTI with {len(shape)} dimensions {shape} not supported (at most 4)")
    shape3 = (shape + (1, 1, 1))[:3]
    n_vol = shape[3] if len(shape) >= 4 else 1
    if not 0 <= volume_index < n_vol:
        raise InvalidInput(f"volume_index {volume_index} out of range: the file has {n_vol} volume(s)")
    itemsize = max(np.dtype(hdr.get_data_dtype()).itemsize, 4 if _is_scaled(hdr) else 1)
    check_budget(limits, pixels=int(np.prod(shape3)), bytes_per_sample=itemsize, what=f"NIfTI {shape}")
    if n_vol > 1:
        warnings.append(f"4D NIfTI with {n_vol} volumes; read volume {volume_index}")
    sform_code = int(hdr["sform_code"])
    qform_code = int(hdr["qform_code"])
    if sform_code > 0 and qform_code > 0:
        if not np.allclose(img.get_sform(), img.get_qform(), atol=1e-3):
            warnings.append("sform and qform disagree; sform used (nibabel's default)")
    if sform_code == 0 and qform_code == 0:
        warnings.append("no sform/qform (codes 0): geometry is voxel sizes only")
    try:
        proxy = img.dataobj
        if len(shape) >= 4:
            data = np.asanyarray(proxy[:, :, :, volume_index])
        else:
            data = np.asanyarray(proxy)
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise UnsupportedMedia(f"NIfTI data unreadable (truncated?): {exc}") from exc
    data = data.reshape(shape3)
    if np.iscomplexobj(data) or data.dtype.names is not None:
        raise UnsupportedMedia(f"NIfTI data type {data.dtype} not supported (complex or RGB)")
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    affine_lps = RAS_TO_LPS @ img.affine
    return volume_from_affine(data, affine_lps, source="nifti", warnings=warnings)


def _is_scaled(hdr: nib.Nifti1Header) -> bool:
    slope, inter = hdr.get_slope_inter()
    return slope is not None and (slope != 1 or (inter or 0) != 0)


def _image_from_bytes(raw: bytes) -> nib.Nifti1Image | nib.Nifti2Image:
    sizeof = int.from_bytes(raw[:4], "little")
    if sizeof not in (348, 540):
        sizeof = int.from_bytes(raw[:4], "big")
    klass = nib.Nifti2Image if sizeof == 540 else nib.Nifti1Image
    fh = nib.FileHolder(fileobj=io.BytesIO(raw))
    return klass.from_file_map({"header": fh, "image": fh})


def read_itk(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> Volume:
    """Read NRRD / MetaImage / any 3D scalar format SimpleITK knows (ITK geometry is already LPS)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise UnsupportedMedia(
            f"SimpleITK cannot read {os.fspath(path)!r}: {str(exc).strip()[:300]}"
        ) from exc
    size = reader.GetSize()
    ncomp = reader.GetNumberOfComponents()
    if ncomp != 1 or len(size) not in (2, 3):
        raise UnsupportedMedia(f"expected a 2D/3D scalar image, found size {size} with {ncomp} components")
    check_budget(limits, pixels=int(np.prod(size)), bytes_per_sample=8, what=f"image {size}")
    img = reader.Execute()
    if img.GetDimension() == 2:
        img = sitk.JoinSeries([img])
    arr = sitk.GetArrayFromImage(img)
    sx, sy, sz = img.GetSpacing()
    d = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    return Volume(
        array=arr,
        spacing=(float(sz), float(sy), float(sx)),
        origin=tuple(float(v) for v in img.GetOrigin()),  # type: ignore[arg-type]
        direction=_rows3(d),
        source="nrrd" if os.fspath(path).lower().endswith((".nrrd", ".nhdr")) else "itk",
    )
