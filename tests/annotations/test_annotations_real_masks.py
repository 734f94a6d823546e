"""Real segmentations made by others: DICOM-SEG liver masks shipped with pydicom / pydicom-data."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as coco
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medlabel.annotations import rle
from medlabel.annotations.masks import VolumeMask

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def _seg(name: str) -> np.ndarray:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed (pydicom-data)")
    return np.asarray(pydicom.dcmread(path).pixel_array)


def test_single_frame_seg_rle_matches_pycocotools() -> None:
    mask = _seg("liver_1frame.dcm")
    assert mask.shape == (512, 512) and mask.any()
    ours = rle.encode(mask)
    ref = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours.to_dict()["counts"] == ref["counts"].decode()
    assert ours.area == int(coco.area(ref)) == int(np.count_nonzero(mask))
    np.testing.assert_array_equal(rle.decode(ours), mask != 0)


def test_multi_frame_seg_round_trips_compactly() -> None:
    vol = _seg("liver.dcm") != 0
    assert vol.ndim == 3
    vm = VolumeMask.from_array(vol)
    for enc in ("rle-slices", "packbits-zlib"):
        text = json.dumps(vm.to_dict(encoding=enc))
        assert len(text) < vol.size // 20
        np.testing.assert_array_equal(VolumeMask.from_dict(json.loads(text)).to_array(), vol)
    assert vm.voxel_count == int(vol.sum())
