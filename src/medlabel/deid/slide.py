"""De-identification of whole-slide TIFF/SVS files, in place on a working copy.

What a slide file can carry about the patient, and what is done to it:

* **Associated images** — the *label* (often the printed patient name, accession number or a
  barcode), the *macro* (a photo of the whole glass slide, label included) and the thumbnail:
  every page that is not a level of the main pyramid has its pixel data overwritten with zeros.
  The pages stay in the file (so offsets stay valid) but carry nothing.
* **Free-text tags** — ImageDescription (270), DocumentName (269), PageName (285), DateTime (306),
  Artist (315), HostComputer (316), Copyright (33432): blanked, except that an Aperio
  ImageDescription keeps its technical header line and a small safe list of ``key = value``
  fields (magnification, microns per pixel, …); ``Filename``, ``Date``, ``Time``, ``User``,
  ``ScanScope ID`` and everything else are dropped.
* **Embedded metadata blocks** — XMP (700), IPTC (33723), Photoshop (34377): zeroed.

Tags are rewritten with ``tifffile``'s in-place ``overwrite``; the new value is never longer than
the old one, so the file layout does not change. This follows the spirit of DICOM PS3.15 Annex E
(remove identifying attributes, keep what is needed to use the image); burned-in text inside the
tissue image itself is not looked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import tifffile

from medlabel.errors import UnsupportedMedia

__all__ = ["SlideScrubReport", "scrub_slide_tiff", "SAFE_APERIO_KEYS", "TEXT_TAGS", "BLOCK_TAGS"]

TEXT_TAGS: dict[int, str] = {
    269: "DocumentName",
    270: "ImageDescription",
    285: "PageName",
    306: "DateTime",
    315: "Artist",
    316: "HostComputer",
    33432: "Copyright",
}
BLOCK_TAGS: dict[int, str] = {700: "XMP", 33723: "IPTC", 34377: "Photoshop"}
SAFE_APERIO_KEYS = frozenset(
    {
        "AppMag",
        "MPP",
        "StripeWidth",
        "OriginalWidth",
        "OriginalHeight",
        "Exposure Time",
        "Exposure Scale",
        "Gamma",
        "Focus Offset",
        "Filtered",
        "Left",
        "Top",
    }
)
_CHUNK = 1 << 20


@dataclass
class SlideScrubReport:
    removed_images: list[str] = field(default_factory=list)
    cleaned_tags: list[str] = field(default_factory=list)
    dropped_fields: list[str] = field(default_factory=list)


def _clean_aperio(text: str, dropped: list[str]) -> str:
    """Keep the header and the safe ``key = value`` fields of an Aperio description."""
    parts = text.split("|")
    kept = [parts[0]]
    for part in parts[1:]:
        key, sep, _value = part.partition("=")
        if sep and key.strip() in SAFE_APERIO_KEYS:
            kept.append(part)
        else:
            dropped.append(key.strip() or part.strip()[:40])
    return "|".join(kept)


def _zero(fh: tifffile.FileHandle, offset: int, count: int) -> None:
    fh.seek(offset)
    while count > 0:
        n = min(count, _CHUNK)
        fh.write(bytes(n))
        count -= n


def scrub_slide_tiff(path: str | os.PathLike[str]) -> SlideScrubReport:
    """Remove identifying content from the TIFF/SVS at ``path`` (modified in place)."""
    report = SlideScrubReport()
    try:
        tif = tifffile.TiffFile(Path(path), mode="r+")
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise UnsupportedMedia(f"not a readable TIFF slide: {exc}") from exc
    with tif:
        if not tif.series:
            raise UnsupportedMedia("TIFF has no image series")
        base = tif.series[0]
        pyramid = {id(p) for level in base.levels for p in level.pages if p is not None}
        names = {
            id(p): (s.name or f"series {i}")
            for i, s in enumerate(tif.series)
            for p in s.pages
            if p is not None
        }
        fh = tif.filehandle
        for index, page in enumerate(tif.pages):
            if not isinstance(page, tifffile.TiffPage):
                continue
            if id(page) not in pyramid:
                for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                    if offset and count:
                        _zero(fh, int(offset), int(count))
                report.removed_images.append(f"page {index} ({names.get(id(page), 'associated image')})")
            for code, name in TEXT_TAGS.items():
                tag = page.tags.get(code)
                if tag is None or not isinstance(tag.value, str) or not tag.value:
                    continue
                new = ""
                if code == 270 and id(page) in pyramid and tag.value.startswith("Aperio"):
                    new = _clean_aperio(tag.value, report.dropped_fields)
                if new != tag.value:
                    tag.overwrite(new)
                    report.cleaned_tags.append(f"page {index} {name}")
            for code, name in BLOCK_TAGS.items():
                tag = page.tags.get(code)
                if tag is None:
                    continue
                value = tag.value
                if isinstance(value, bytes | bytearray) and any(value):
                    tag.overwrite(bytes(len(value)))
                elif isinstance(value, tuple) and any(value):
                    tag.overwrite(tuple(0 for _ in value))
                else:
                    continue
                report.cleaned_tags.append(f"page {index} {name}")
        fh.flush()
    report.dropped_fields = sorted(set(report.dropped_fields))
    return report
