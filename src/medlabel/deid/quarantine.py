"""Burned-in annotation rules: which images are held for a human to clear.

Header de-identification cannot remove text burned into the pixels (PS3.15 E.3.1, Clean Pixel
Data Option, is not implemented: nothing is OCR'd). An image is quarantined when:

1. Burned In Annotation (0028,0301) is ``YES``; or
2. it is absent (or neither ``YES`` nor ``NO``) and the Modality (0008,0060) is in
   ``RISKY_MODALITIES`` or the SOP Class UID (0008,0016) is in ``RISKY_SOP_CLASSES``
   (kinds of image that usually carry burned-in patient text).

An explicit ``NO`` admits the image. Objects without Pixel Data (7FE0,0010) or Float/Double
Float Pixel Data are never quarantined (SR, SEG with only bit-packed frames still has Pixel
Data and is judged by the rules above; SEG's Modality ``SEG`` is not risky).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

__all__ = ["RISKY_MODALITIES", "RISKY_SOP_CLASSES", "burned_in_reasons"]

#: Modality (0008,0060) → why images of it usually carry burned-in text.
RISKY_MODALITIES: Mapping[str, str] = {
    "US": "ultrasound scanners print patient name, ID and date into the image",
    "XA": "angiography systems often burn patient and procedure text into frames",
    "RF": "fluoroscopy systems often burn patient and procedure text into frames",
    "ES": "endoscopy captures are screen grabs with patient text",
    "XC": "external-camera photographs may show labels or faces",
    "OT": "'other' images are mostly screen captures",
    "DOC": "scanned documents are pictures of text",
    "SC": "secondary capture (non-standard Modality value seen in the field)",
}

#: SOP Class UID (0008,0016) → why.
RISKY_SOP_CLASSES: Mapping[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage: screen captures",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture: screen captures",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture: screen captures",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture: screen captures",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture: screen captures",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage: burned-in patient text",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage: burned-in patient text",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage: burned-in text",
    "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage: burned-in text",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image Storage: screen captures",
}

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def burned_in_reasons(ds: Dataset, *, use_risk_tables: bool = True) -> list[str]:
    """Why ``ds`` must be quarantined; an empty list admits it. Reads the original header."""
    if not any(t in ds for t in _PIXEL_TAGS):
        return []
    raw = ds.get("BurnedInAnnotation", None)
    value = str(raw).strip().upper() if raw not in (None, "") else ""
    if value == "YES":
        return ["Burned In Annotation (0028,0301) is YES: pixel data carries text (PS3.3 C.7.6.1.1.4)"]
    if value == "NO" or not use_risk_tables:
        return []
    reasons = []
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in RISKY_MODALITIES:
        reasons.append(
            f"Modality (0008,0060) is {modality} and Burned In Annotation (0028,0301) is "
            f"{value or 'absent'}, expected NO: {RISKY_MODALITIES[modality]}"
        )
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if sop_class in RISKY_SOP_CLASSES:
        reasons.append(
            f"SOP Class UID (0008,0016) is {sop_class} and Burned In Annotation (0028,0301) is "
            f"{value or 'absent'}, expected NO: {RISKY_SOP_CLASSES[sop_class]}"
        )
    return reasons
