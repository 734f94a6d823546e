"""3D masks: per-slice COCO RLE and packbits+zlib, never raw arrays in JSON."""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np
import pycocotools.mask as coco
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medlabel.annotations.masks import PackedArray, VolumeMask, pack_array, unpack_array
from medlabel.errors import InvalidInput

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

volumes = st.tuples(st.integers(1, 6), st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda s: arrays(np.bool_, s, elements=st.booleans())
)


@settings(max_examples=60, deadline=None)
@given(volumes, st.sampled_from(["rle-slices", "packbits-zlib"]))
def test_volume_round_trips_through_json(vol: np.ndarray, encoding: str) -> None:
    vm = VolumeMask.from_array(vol)
    text = json.dumps(vm.to_dict(encoding=encoding))
    back = VolumeMask.from_dict(json.loads(text))
    np.testing.assert_array_equal(back.to_array(), vol)
    assert back == vm
    assert vm.voxel_count == int(vol.sum())


@settings(max_examples=40, deadline=None)
@given(volumes)
def test_each_stored_slice_is_a_pycocotools_rle(vol: np.ndarray) -> None:
    d = VolumeMask.from_array(vol).to_dict()
    for key, r in d["slices"].items():
        ref = coco.decode({"size": r["size"], "counts": r["counts"].encode()})
        np.testing.assert_array_equal(ref.astype(bool), vol[int(key)])
    empty = [i for i in range(vol.shape[0]) if not vol[i].any()]
    assert all(str(i) not in d["slices"] for i in empty)


@settings(max_examples=40, deadline=None)
@given(
    st.tuples(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)), st.sampled_from([3, 255, 300, 70000])
)
def test_label_maps_round_trip(shape: tuple[int, int, int], top: int) -> None:
    rng = np.random.default_rng(sum(shape) + top)
    arr = rng.integers(0, top + 1, size=shape).astype(np.uint32)
    packed = pack_array(arr)
    assert packed.encoding == "zlib"
    back = unpack_array(PackedArray.from_dict(json.loads(json.dumps(packed.to_dict()))))
    np.testing.assert_array_equal(back, arr)
    biggest = int(arr.max())
    assert back.dtype.itemsize == (1 if biggest < 256 else 2 if biggest < 65536 else 4)


def test_sparse_big_volume_is_small_in_json() -> None:
    vol = np.zeros((64, 256, 256), bool)
    vol[30:34, 100:140, 90:150] = True
    for enc in ("rle-slices", "packbits-zlib"):
        text = json.dumps(VolumeMask.from_array(vol).to_dict(encoding=enc))
        assert len(text) < vol.size // 100, (enc, len(text))


def test_slice_mask_of_empty_slice_is_all_zero() -> None:
    vol = np.zeros((3, 4, 5), bool)
    vol[1, 1, 1] = True
    vm = VolumeMask.from_array(vol)
    assert vm.slice_mask(0).area == 0 and vm.slice_mask(1).area == 1
    with pytest.raises(InvalidInput, match="outside"):
        vm.slice_mask(3)


def test_corrupt_payloads_are_refused() -> None:
    good = pack_array(np.ones((2, 3, 4), bool)).to_dict()
    short = dict(good, data=base64.b64encode(zlib.compress(b"\x00")).decode())
    with pytest.raises(InvalidInput, match="expected 3"):
        unpack_array(PackedArray.from_dict(short))
    with pytest.raises(InvalidInput, match="zlib"):
        unpack_array(PackedArray.from_dict(dict(good, data=base64.b64encode(b"nope").decode())))
    with pytest.raises(InvalidInput, match="encoding"):
        VolumeMask.from_dict(dict(good, encoding="raw"))
    with pytest.raises(InvalidInput, match="malformed"):
        PackedArray.from_dict({"encoding": "zlib"})


def test_volume_mask_checks_its_slices() -> None:
    with pytest.raises(InvalidInput, match="outside"):
        VolumeMask.from_dict(
            {
                "encoding": "rle-slices",
                "shape": [2, 2, 2],
                "slices": {"5": {"size": [2, 2], "counts": [0, 4]}},
            }
        )
    with pytest.raises(InvalidInput, match="expected \\[2, 2\\]"):
        VolumeMask.from_dict(
            {
                "encoding": "rle-slices",
                "shape": [2, 2, 2],
                "slices": {"1": {"size": [1, 4], "counts": [0, 4]}},
            }
        )
    with pytest.raises(InvalidInput, match="3D"):
        VolumeMask.from_array(np.zeros((2, 2)))
    with pytest.raises(InvalidInput, match="dtype"):
        pack_array(np.zeros((2, 2), np.float32))
