"""MetaImage headers are sniffed by content: SimpleITK's .mha/.mhd, not any ``key = value`` text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medlabel.imaging import FileKind, read_itk, sniff


def test_simpleitk_metaimage_is_sniffed(tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    for name in ("a.mha", "b.mhd"):
        sitk.WriteImage(img, str(tmp_path / name))
        assert sniff(tmp_path / name) is FileKind.METAIMAGE
    assert sniff(tmp_path / "b.raw") is FileKind.UNKNOWN
    (tmp_path / "renamed.bin").write_bytes((tmp_path / "a.mha").read_bytes())
    assert sniff(tmp_path / "renamed.bin") is FileKind.METAIMAGE  # content, not the name
    assert read_itk(tmp_path / "a.mha").array.shape == (3, 4, 5)


def test_other_key_value_text_is_not_metaimage() -> None:
    assert sniff(b"Name = shopping list\nmilk = 2\n") is FileKind.UNKNOWN  # no NDims
    assert sniff(b"[section]\nNDims = 3\n") is FileKind.UNKNOWN  # first line is no MetaIO key
    assert sniff(b"NDims = 3\nDimSize = 2 2 2\nElementDataFile = LOCAL\n") is FileKind.METAIMAGE
