"""Validation on save: every rule, with hypothesis checks of the geometric ones against shapely."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from medlabel.annotations.geometry import BBox, Point, Polygon, Polyline
from medlabel.annotations.masks import VolumeMask
from medlabel.annotations.model import Annotation, AnnotationSet, ImageExtent, Plane, Provenance
from medlabel.annotations.rle import encode
from medlabel.annotations.schema import AnnotationType as T
from medlabel.annotations.schema import LabelSchema, evolve_schema, load_schema_yaml
from medlabel.annotations.validate import (
    IssueSeverity,
    check_annotation_set,
    validate_annotation_set,
)
from medlabel.errors import InvalidInput

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "medlabel" / "annotations" / "examples"
CT = load_schema_yaml((EXAMPLES / "ct_lesion.yaml").read_text())
CXR = load_schema_yaml((EXAMPLES / "chest_xray.yaml").read_text())
PATH = load_schema_yaml((EXAMPLES / "pathology.yaml").read_text())
PROV = Provenance(created_at=datetime(2026, 11, 29, tzinfo=UTC), created_by_user="ann1")
IMG = ImageExtent(width=100, height=80)
VOL = ImageExtent(width=16, height=12, frames=10, is_volume=True)


def ann(i: str, t: T, cls: str, g: Any, **kw: Any) -> Annotation:
    return Annotation(i, t, cls, g, PROV, **kw)


def one(a: Annotation, answers: dict[str, Any] | None = None) -> AnnotationSet:
    return AnnotationSet("it", 0, (a,), 1, answers or {})


def rules(result: Any) -> list[str]:
    return [i.rule for i in result.issues]


CXR_OK = {"view": "PA", "quality": "diagnostic"}


def test_a_clean_set_has_no_issues() -> None:
    s = AnnotationSet(
        "it",
        0,
        (
            ann("n", T.BBOX, "nodule", BBox(10, 10, 5, 5), attributes={"diameter": 4.0, "calcified": False}),
            ann("e", T.BBOX, "effusion", BBox(0, 40, 100, 40), attributes={"side": "left"}),
            ann("c", T.CLASSIFICATION, "cardiomegaly", None),
        ),
        1,
        {**CXR_OK, "findings_present": ("nodule", "effusion")},
    )
    assert validate_annotation_set(s, CXR, IMG).issues == ()
    assert check_annotation_set(s, CXR, IMG).ok


@pytest.mark.parametrize(
    "a, schema, extent, rule",
    [
        (ann("x", T.BBOX, "tumour", BBox(1, 1, 2, 2)), CXR, IMG, "class_unknown"),
        (ann("x", T.POLYGON, "nodule", Polygon(((1, 1), (5, 1), (5, 5)))), CXR, IMG, "type_not_allowed"),
        (ann("x", T.POINT, "nodule", Point(101, 5)), CXR, IMG, "outside_image"),
        (ann("x", T.POINT, "nodule", Point(5, -0.5)), CXR, IMG, "outside_image"),
        (ann("x", T.BBOX, "nodule", BBox(90, 70, 20, 5)), CXR, IMG, "outside_image"),
        (ann("x", T.POINT, "nodule", Point(5, 5), frame=3), CXR, IMG, "frame_out_of_range"),
        (ann("x", T.POINT, "nodule", Point(5, 5), plane=Plane.AXIAL), CXR, IMG, "plane_not_volume"),
        (ann("x", T.MASK, "liver", encode(np.ones((12, 16))), frame=None), CT, VOL, "frame_missing"),
        (ann("x", T.MASK, "liver", encode(np.ones((12, 16))), frame=10), CT, VOL, "frame_out_of_range"),
        (ann("x", T.MASK, "liver", encode(np.ones((16, 12))), frame=2), CT, VOL, "mask_size"),
        (ann("x", T.MASK, "liver", VolumeMask.from_array(np.ones((10, 12, 15)))), CT, VOL, "mask_size"),
        (ann("x", T.MASK, "liver", VolumeMask.from_array(np.ones((1, 80, 100)))), CT, IMG, "mask_size"),
        (ann("x", T.MASK, "lesion", encode(np.ones((12, 16))), frame=1), CT, VOL, "attribute_missing"),
        (
            ann(
                "x", T.MASK, "lesion", encode(np.ones((12, 16))), frame=1, attributes={"lesion_type": "tumor"}
            ),
            CT,
            VOL,
            "attribute_invalid",
        ),
        (
            ann(
                "x",
                T.MASK,
                "lesion",
                encode(np.ones((12, 16))),
                frame=1,
                attributes={"lesion_type": "cyst", "longest_diameter": 301},
            ),
            CT,
            VOL,
            "attribute_invalid",
        ),
        (
            ann(
                "x",
                T.MASK,
                "neoplasm",
                encode(np.ones((12, 16))),
                frame=1,
                attributes={"biopsy_proven": "yes"},
            ),
            CT,
            VOL,
            "attribute_invalid",
        ),
        (
            ann("x", T.MASK, "liver", encode(np.ones((12, 16))), frame=1, attributes={"volume": 3}),
            CT,
            VOL,
            "attribute_unknown",
        ),
    ],
)
def test_each_rule_is_reported(a: Annotation, schema: LabelSchema, extent: ImageExtent, rule: str) -> None:
    answers = CXR_OK if schema is CXR else {"phase": "arterial"}
    result = validate_annotation_set(one(a, answers), schema, extent)
    assert rules(result) == [rule]
    issue = result.issues[0]
    assert issue.index == 0 and issue.annotation_id == "x" and "annotation #0 ('x')" in issue.message


def test_coronal_and_sagittal_extents_are_used() -> None:
    # coronal plane of VOL: width 16 columns, height 10 slices, index over 12 rows
    ok = ann(
        "x",
        T.POLYGON,
        "lesion",
        Polygon(((0, 0), (16, 0), (16, 10))),
        frame=11,
        plane=Plane.CORONAL,
        attributes={"lesion_type": "cyst"},
    )
    assert validate_annotation_set(one(ok, {"phase": "arterial"}), CT, VOL).issues == ()
    bad = ann(
        "x",
        T.POLYGON,
        "lesion",
        Polygon(((0, 0), (13, 0), (13, 10))),
        frame=11,
        plane=Plane.SAGITTAL,
        attributes={"lesion_type": "cyst"},
    )
    assert rules(validate_annotation_set(one(bad, {"phase": "arterial"}), CT, VOL)) == ["outside_image"]


def test_answers_are_checked() -> None:
    s = AnnotationSet(
        "it", 0, (), 1, {"view": "oblique", "findings_present": ("nodule", "tumour"), "mood": "x"}
    )
    r = validate_annotation_set(s, CXR, IMG)
    assert sorted(rules(r)) == ["answer_invalid", "answer_invalid", "answer_missing", "answer_unknown"]
    draft = validate_annotation_set(AnnotationSet("it", 0, (), 1, {}), CXR, IMG, require_complete=False)
    assert draft.issues == ()
    unanswered = AnnotationSet("it", 0, (), 1, {"view": None, "quality": "limited"})
    assert rules(validate_annotation_set(unanswered, CXR, IMG)) == ["answer_missing"]
    assert validate_annotation_set(unanswered, CXR, IMG, require_complete=False).issues == ()


def test_retired_class_keeps_old_annotations_but_refuses_new_ones() -> None:
    v2 = evolve_schema(
        CXR,
        LabelSchema.from_dict(
            {**CXR.to_dict(), "classes": [c.to_dict() for c in CXR.classes if c.id != "pneumothorax"]}
        ),
    ).schema
    old = ann("p", T.BBOX, "pneumothorax", BBox(1, 1, 3, 3))
    previous = AnnotationSet("it", 1, (old,), 1, CXR_OK)
    kept = validate_annotation_set(previous, v2, IMG, previous=previous)
    assert kept.issues == ()
    fresh = AnnotationSet("it", 1, (old, ann("q", T.BBOX, "pneumothorax", BBox(5, 5, 3, 3))), 2, CXR_OK)
    r = validate_annotation_set(fresh, v2, IMG, previous=previous)
    assert rules(r) == ["class_retired"] and r.issues[0].annotation_id == "q"


def test_invalid_polygon_is_repaired_with_a_warning_or_refused() -> None:
    bow = ann(
        "b",
        T.POLYGON,
        "tumour_region",
        Polygon(((0, 0), (10, 10), (10, 0), (0, 8))),
        attributes={"grade": "2"},
    )
    s = one(bow, {"adequate": "yes"})
    r = check_annotation_set(s, PATH, IMG)  # repaired: no raise
    assert [(i.rule, i.severity) for i in r.issues] == [("polygon_repaired", IssueSeverity.WARNING)]
    fixed = r.annotation_set.annotations[0].geometry
    assert isinstance(fixed, Polygon) and fixed.to_shapely().is_valid
    strict = validate_annotation_set(s, PATH, IMG, repair=False)
    assert rules(strict) == ["polygon_invalid"] and "Self-intersection" in strict.issues[0].message


def test_check_raises_422_listing_every_issue() -> None:
    s = AnnotationSet(
        "item-9",
        0,
        (
            ann("ok", T.POINT, "mitosis", Point(1, 1)),
            ann("far", T.POINT, "mitosis", Point(500, 1)),
            ann("what", T.POINT, "macrophage", Point(1, 1)),
        ),
        1,
        {"adequate": "yes"},
    )
    with pytest.raises(InvalidInput) as exc:
        check_annotation_set(s, PATH, IMG)
    assert exc.value.status == 422
    issues = exc.value.detail["issues"]
    assert [(i["index"], i["annotation_id"], i["rule"]) for i in issues] == [
        (1, "far", "outside_image"),
        (2, "what", "class_unknown"),
    ]
    assert "item 'item-9': 2 annotation error(s)" in exc.value.message


coord = st.floats(-20, 120, allow_nan=False)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(coord, coord), min_size=3, max_size=8))
def test_polygon_rules_agree_with_shapely(pts: list[tuple[float, float]]) -> None:
    assume(len(set(pts)) >= 3)
    poly = Polygon(tuple(pts))
    a = ann("p", T.POLYGON, "stroma", poly)
    r = validate_annotation_set(one(a, {"adequate": "yes"}), PATH, IMG, repair=False)
    eps = 1e-6  # the documented tolerance for rounding noise at the image edge
    inside = shapely.box(-eps, -eps, IMG.width + eps, IMG.height + eps).covers(
        shapely.MultiPoint(list(poly.exterior))
    )
    assert ("outside_image" in rules(r)) == (not inside)
    assert ("polygon_invalid" in rules(r)) == (not poly.to_shapely().is_valid)


@settings(max_examples=60, deadline=None)
@given(st.floats(-10, 110), st.floats(-10, 90), st.floats(0.1, 50), st.floats(0.1, 50))
def test_bbox_inside_rule_agrees_with_shapely(x: float, y: float, w: float, h: float) -> None:
    box = BBox(x, y, w, h)
    a = ann("b", T.BBOX, "nodule", box)
    r = validate_annotation_set(one(a, CXR_OK), CXR, IMG)
    eps = 1e-6
    inside = shapely.box(-eps, -eps, IMG.width + eps, IMG.height + eps).covers(box.to_shapely())
    assert ("outside_image" in rules(r)) == (not inside)


def test_polyline_outside_is_reported() -> None:
    schema = LabelSchema.from_dict({"name": "s", "classes": [{"id": "v", "types": ["polyline"]}]})
    a = ann("l", T.POLYLINE, "v", Polyline(((1, 1), (1, 81))))
    assert rules(validate_annotation_set(one(a), schema, IMG)) == ["outside_image"]


def test_classification_may_label_the_item_or_one_frame() -> None:
    cine = ImageExtent(width=100, height=80, frames=5)
    whole = ann("c", T.CLASSIFICATION, "cardiomegaly", None)
    frame = ann("c", T.CLASSIFICATION, "cardiomegaly", None, frame=4)
    beyond = ann("c", T.CLASSIFICATION, "cardiomegaly", None, frame=5)
    assert validate_annotation_set(one(whole, CXR_OK), CXR, cine).issues == ()
    assert validate_annotation_set(one(frame, CXR_OK), CXR, cine).issues == ()
    assert rules(validate_annotation_set(one(beyond, CXR_OK), CXR, cine)) == ["frame_out_of_range"]


def test_untouched_annotations_get_warnings_for_schema_drift_edited_ones_errors() -> None:
    # v2 makes the nodule diameter required and drops the 'calcified' attribute and question 'quality'
    doc = CXR.to_dict()
    nodule = next(c for c in doc["classes"] if c["id"] == "nodule")
    nodule["attributes"] = [dict(nodule["attributes"][0], required=True)]
    doc["questions"] = [q for q in doc["questions"] if q["id"] != "quality"]
    change = evolve_schema(CXR, LabelSchema.from_dict(doc))
    assert change.removed_questions == ("quality",)
    v2 = change.schema
    old = ann("n", T.BBOX, "nodule", BBox(1, 1, 4, 4), attributes={"calcified": True})
    stored = AnnotationSet("it", 3, (old,), 1, {"view": "PA", "quality": "limited"})
    resave = AnnotationSet(
        "it",
        3,
        (old, ann("n2", T.POINT, "nodule", Point(9, 9), attributes={"diameter": 3})),
        2,
        {"view": "PA", "quality": "limited"},
    )
    r = validate_annotation_set(resave, v2, IMG, previous=stored)
    assert r.ok
    assert sorted((i.rule, i.annotation_id) for i in r.warnings) == [
        ("answer_unknown", None),
        ("attribute_missing", "n"),
        ("attribute_unknown", "n"),
    ]
    assert all("earlier schema" in i.message for i in r.warnings if i.annotation_id == "n")
    # editing the old box (moving it) makes the same rules errors; so does changing the old answer
    moved = AnnotationSet(
        "it",
        3,
        (Annotation("n", T.BBOX, "nodule", BBox(2, 2, 4, 4), PROV, attributes={"calcified": True}),),
        2,
        {"view": "PA", "quality": "diagnostic"},
    )
    r2 = validate_annotation_set(moved, v2, IMG, previous=stored)
    assert sorted(i.rule for i in r2.errors) == ["answer_unknown", "attribute_missing", "attribute_unknown"]
