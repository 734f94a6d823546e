"""NIfTI header scrubbing.

NIfTI has no patient module, but converters write identifying text into the free-text header
fields and extensions: ``descrip`` (80 bytes; dcm2niix writes acquisition time and protocol
there), ``aux_file``, ``intent_name``, the NIfTI-1/Analyze legacy ``db_name`` and ``data_type``,
and NIfTI extensions (DICOM headers embedded as extension code 2 "dcm", AFNI XML, comments…).
All of them are emptied; geometry, data type, scaling and units are kept. File names are
replaced by :func:`pseudonymous_name`, since names often carry the patient's name.
"""

from __future__ import annotations

import hashlib
import hmac

import nibabel as nib

from medlabel.errors import InvalidInput

__all__ = ["SCRUBBED_FIELDS", "deidentify_nifti", "pseudonymous_name"]

#: Header fields emptied, where the header has them (NIfTI-2 lacks the Analyze legacy ones).
SCRUBBED_FIELDS: tuple[str, ...] = ("descrip", "aux_file", "intent_name", "db_name", "data_type")

NiftiImage = nib.Nifti1Image | nib.Nifti2Image


def deidentify_nifti(img: NiftiImage) -> NiftiImage:
    """A copy of ``img`` (same data object, new header) with text fields and extensions removed."""
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InvalidInput(
            f"expected a nibabel Nifti1Image or Nifti2Image, got {type(img).__name__}",
            detail={"type": type(img).__name__},
        )
    header = img.header.copy()
    for name in SCRUBBED_FIELDS:
        if name in header:
            header[name] = b""
    header.extensions.clear()
    out = type(img)(img.dataobj, img.affine, header)
    out.extra.clear()
    return out


def pseudonymous_name(secret: bytes, original_name: str, *, suffix: str = ".nii.gz") -> str:
    """``nifti-`` + 20 hex digits of HMAC-SHA256(secret, original name) + ``suffix``.

    Stable for the same name and secret, so re-importing a file gives the same output name.
    """
    digest = hmac.new(secret, b"nifti-name\x00" + original_name.encode("utf-8"), hashlib.sha256)
    return f"nifti-{digest.hexdigest()[:20]}{suffix}"
