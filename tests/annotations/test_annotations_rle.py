"""COCO RLE checked against pycocotools, the reference implementation we did not write."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as coco
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medlabel.annotations import rle
from medlabel.errors import InvalidInput

SETTINGS = settings(max_examples=80, deadline=None)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    style = draw(st.sampled_from(["noise", "blocks", "empty", "full"]))
    if style == "empty":
        return np.zeros((h, w), np.uint8)
    if style == "full":
        return np.ones((h, w), np.uint8)
    if style == "noise":
        return draw(arrays(np.uint8, (h, w), elements=st.integers(0, 1)))
    m = np.zeros((h, w), np.uint8)
    for _ in range(draw(st.integers(1, 4))):
        r0, r1 = sorted(draw(st.tuples(st.integers(0, h), st.integers(0, h))))
        c0, c1 = sorted(draw(st.tuples(st.integers(0, w), st.integers(0, w))))
        m[r0:r1, c0:c1] = 1
    return m


@st.composite
def long_runs(draw: st.DrawFn) -> list[int]:
    """Counts with large and uneven runs, so the delta coding hits multi-group and negative values."""
    first = draw(st.integers(0, 5000))
    rest = draw(st.lists(st.integers(1, 70000), min_size=0, max_size=12))
    return [first, *rest]


def _ref(m: np.ndarray) -> dict:
    return coco.encode(np.asfortranarray(m.astype(np.uint8)))


@SETTINGS
@given(masks())
def test_encode_matches_pycocotools_string(m: np.ndarray) -> None:
    ours = rle.encode(m).to_dict()
    ref = _ref(m)
    assert ours["size"] == list(ref["size"])
    assert ours["counts"] == ref["counts"].decode("ascii")


@SETTINGS
@given(masks())
def test_decode_of_pycocotools_rle_matches_pycocotools_decode(m: np.ndarray) -> None:
    ref = _ref(m)
    ours = rle.decode(rle.RLE.from_dict(ref))  # bytes counts, as pycocotools returns them
    np.testing.assert_array_equal(ours, coco.decode(ref))
    np.testing.assert_array_equal(ours, m)


@SETTINGS
@given(masks())
def test_uncompressed_counts_agree_with_pycocotools(m: np.ndarray) -> None:
    ours = rle.encode(m)
    # pycocotools turns uncompressed counts into its compressed form via frPyObjects
    ref = coco.frPyObjects({"size": list(m.shape), "counts": list(ours.counts)}, *m.shape)
    assert rle.counts_to_string(ours.counts) == ref["counts"].decode("ascii")
    assert rle.string_to_counts(ref["counts"]) == list(ours.counts)
    assert ours.to_dict(compressed=False)["counts"] == list(ours.counts)


@SETTINGS
@given(long_runs(), st.booleans())
def test_large_runs_round_trip_through_pycocotools(counts: list[int], column: bool) -> None:
    n = sum(counts)
    if n == 0:
        counts = [1]
        n = 1
    h, w = (n, 1) if column else (1, n)
    ours = rle.RLE(h, w, tuple(counts))
    ref = coco.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    text = rle.counts_to_string(counts)
    assert text == ref["counts"].decode("ascii")
    assert rle.string_to_counts(text) == counts
    assert ours.area == int(coco.area(ref))


@SETTINGS
@given(masks())
def test_area_and_bbox_match_pycocotools(m: np.ndarray) -> None:
    ref = _ref(m)
    ours = rle.encode(m)
    assert rle.area(ours) == int(coco.area(ref))
    box = rle.bbox(ours)
    if m.any():
        assert box is not None
        np.testing.assert_allclose(box, coco.toBbox(ref))
    else:
        assert box is None


@SETTINGS
@given(st.data())
def test_merge_matches_pycocotools(data: st.DataObject) -> None:
    first = data.draw(masks())
    others = [data.draw(arrays(np.uint8, first.shape, elements=st.integers(0, 1))) for _ in range(2)]
    all_masks = [first, *others]
    intersect = data.draw(st.booleans())
    ours = rle.merge([rle.encode(x) for x in all_masks], intersect=intersect)
    ref = coco.merge([_ref(x) for x in all_masks], intersect=intersect)
    assert ours.to_dict()["counts"] == ref["counts"].decode("ascii")


def test_counts_start_with_zero_run_when_first_pixel_set() -> None:
    m = np.array([[1, 0], [1, 1]], np.uint8)
    assert rle.encode(m).counts == (0, 2, 1, 1)  # column-major: 1,1 then 0,1


def test_json_form_is_plain_strings_and_ints() -> None:
    d = rle.encode(np.eye(5, dtype=np.uint8)).to_dict()
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"size": [2, 2], "counts": [1, 2]}, "sum to 3"),
        ({"size": [2, 2], "counts": [5, -1]}, "negative"),
        ({"size": [2, 2]}, "lacks"),
        ({"size": [2], "counts": [4]}, "size"),
        ({"size": [2, 2], "counts": 4}, "neither"),
        ({"size": [2, 2], "counts": "4\x7f"}, "alphabet"),
        ({"size": [2, 2], "counts": "0P"}, "truncated"),
    ],
)
def test_malformed_rle_is_refused_with_the_rule(bad: dict, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        rle.RLE.from_dict(bad)


def test_merge_refuses_mixed_sizes() -> None:
    with pytest.raises(InvalidInput, match="equal sizes"):
        rle.merge([rle.encode(np.zeros((2, 2))), rle.encode(np.zeros((3, 2)))])
    with pytest.raises(InvalidInput):
        rle.merge([])


def test_encode_refuses_3d() -> None:
    with pytest.raises(InvalidInput, match="2D"):
        rle.encode(np.zeros((2, 2, 2)))
