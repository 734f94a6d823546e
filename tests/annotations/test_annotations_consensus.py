"""Consensus of overlap copies: clustering, quorum, medoid, answers; IoU against pycocotools and
scikit-learn."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask
from sklearn.metrics import jaccard_score

from medlabel.annotations.consensus import build_consensus, similarity
from medlabel.annotations.geometry import BBox, Point, Polyline
from medlabel.annotations.model import Annotation, AnnotationSet, Provenance
from medlabel.annotations.rle import encode
from medlabel.annotations.schema import AnnotationType
from medlabel.errors import InvalidInput

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def box(aid: str, x: float, y: float, w: float = 40, h: float = 30, cls: str = "lesion", who: str = "a", **attrs):
    return Annotation(
        aid, AnnotationType.BBOX, cls, BBox(x, y, w, h), Provenance(T0, created_by_user=who), attributes=attrs
    )


def aset(*anns: Annotation, **answers) -> AnnotationSet:
    return AnnotationSet("1", 1, tuple(anns), 1, answers)


def test_majority_keeps_agreed_findings_and_lists_the_rest():
    copies = {
        "ann1": aset(box("b1", 10, 10, who="ann1"), box("b2", 200, 200, who="ann1"), fracture="yes"),
        "ann2": aset(box("x", 12, 11, who="ann2"), fracture="yes"),
        "ann3": aset(box("y", 11, 9, who="ann3"), box("z", 400, 50, who="ann3"), fracture="no"),
    }
    c = build_consensus(copies)
    assert c.quorum == 2
    assert [f.support for f in c.kept] == [("ann1", "ann2", "ann3")]
    assert sorted(f.support for f in c.minority) == [("ann1",), ("ann3",)]
    assert c.answers == {"fracture": "yes"} and c.disputed_questions == ()
    kept = c.kept[0].annotation
    # the medoid: the box closest on average to the other two is ann3's? compute directly
    members = [copies["ann1"].annotations[0], copies["ann2"].annotations[0], copies["ann3"].annotations[0]]
    means = [np.mean([similarity(m, o) for o in members if o is not m]) for m in members]
    assert kept.geometry == members[int(np.argmax(means))].geometry
    assert kept.provenance.derived_from == members[int(np.argmax(means))].id
    out = c.annotation_set("1", 3)
    assert out.version == 0 and len(out.annotations) == 1 and out.answers == {"fracture": "yes"}


def test_ties_leave_the_question_to_the_adjudicator():
    c = build_consensus({"a": aset(fracture="yes"), "b": aset(fracture="no")})
    assert c.answers == {} and c.disputed_questions == ("fracture",)
    multi = build_consensus({"a": aset(signs=("b", "a")), "b": aset(signs=("a", "b"))})
    assert multi.answers == {"signs": ("a", "b")}  # order of a multi-choice answer does not matter


def test_one_copy_never_fills_a_cluster_twice_and_classes_do_not_mix():
    copies = {
        "a": aset(box("1", 10, 10, who="a"), box("2", 12, 12, who="a")),
        "b": aset(box("3", 11, 11, who="b"), box("4", 11, 11, cls="nodule", who="b")),
    }
    c = build_consensus(copies)
    assert [f.support for f in c.kept] == [("a", "b")]
    assert sorted(f.annotation.class_id for f in c.minority) == ["lesion", "nodule"]


def test_attributes_follow_the_plurality():
    copies = {
        "a": aset(box("1", 10, 10, who="a", severity="mild")),
        "b": aset(box("2", 10, 10, who="b", severity="severe")),
        "c": aset(box("3", 10, 10, who="c", severity="severe")),
    }
    (f,) = build_consensus(copies).kept
    assert f.annotation.attributes == {"severity": "severe"}
    assert f.agreement == pytest.approx(1.0)


def test_points_and_polylines_match_by_distance():
    p = lambda aid, x, who: Annotation(  # noqa: E731
        aid, AnnotationType.POINT, "landmark", Point(x, 5), Provenance(T0, created_by_user=who)
    )
    c = build_consensus({"a": aset(p("1", 10, "a")), "b": aset(p("2", 13, "b"))}, distance_tolerance=5)
    assert len(c.kept) == 1
    c = build_consensus({"a": aset(p("1", 10, "a")), "b": aset(p("2", 30, "b"))}, distance_tolerance=5)
    assert len(c.kept) == 0 and len(c.minority) == 2
    line = lambda aid, dy, who: Annotation(  # noqa: E731
        aid, AnnotationType.POLYLINE, "vessel", Polyline(((0, dy), (50, dy))), Provenance(T0, created_by_user=who)
    )
    assert similarity(line("1", 0, "a"), line("2", 3, "b")) == pytest.approx(1 / 4)


def test_duplicate_ids_across_copies_are_made_unique():
    copies = {"a": aset(box("1", 10, 10, who="a")), "b": aset(box("1", 300, 300, who="b"))}
    c = build_consensus(copies, quorum=1)
    assert sorted(f.annotation.id for f in c.kept) == ["1", "1~b"]


def test_bad_settings_are_refused():
    with pytest.raises(InvalidInput, match="quorum is 3"):
        build_consensus({"a": aset(), "b": aset()}, quorum=3)
    with pytest.raises(InvalidInput, match="needs at least one"):
        build_consensus({})


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(*[st.integers(0, 60)] * 4),
    st.tuples(*[st.integers(0, 60)] * 4),
)
def test_box_iou_matches_pycocotools(a, b):
    ba = box("1", a[0], a[1], a[2] + 1, a[3] + 1)
    bb = box("2", b[0], b[1], b[2] + 1, b[3] + 1)
    ref = coco_mask.iou(
        [[float(v) for v in (b[0], b[1], b[2] + 1, b[3] + 1)]],
        [[float(v) for v in (a[0], a[1], a[2] + 1, a[3] + 1)]],
        [0],
    )[0][0]
    assert similarity(ba, bb) == pytest.approx(ref, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_mask_iou_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    m1 = rng.random((24, 20)) < 0.4
    m2 = rng.random((24, 20)) < 0.4
    m1[0, 0] = m2[0, 0] = True
    mk = lambda aid, m: Annotation(  # noqa: E731
        aid, AnnotationType.MASK, "organ", encode(m), Provenance(T0, created_by_user="u")
    )
    assert similarity(mk("1", m1), mk("2", m2)) == pytest.approx(jaccard_score(m1.ravel(), m2.ravel()))


@settings(max_examples=40, deadline=None)
@given(st.permutations(["a", "b", "c"]))
def test_the_order_of_well_separated_copies_does_not_change_the_result(order):
    base = {
        "a": aset(box("1", 10, 10, who="a"), box("2", 300, 10, who="a")),
        "b": aset(box("3", 12, 10, who="b")),
        "c": aset(box("4", 301, 12, who="c"), box("5", 10, 12, who="c")),
    }
    c = build_consensus({k: base[k] for k in order})
    assert sorted(tuple(sorted(f.support)) for f in c.kept) == [("a", "b", "c"), ("a", "c")]
