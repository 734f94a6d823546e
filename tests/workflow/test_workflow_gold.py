"""Gold scoring: exact answers, IoU matching (shapely), Dice for masks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import shapely

from medlabel.annotations.geometry import BBox, Point, Polygon
from medlabel.annotations.masks import VolumeMask
from medlabel.annotations.model import Annotation, AnnotationSet, Provenance
from medlabel.annotations.rle import encode
from medlabel.annotations.schema import AnnotationType as T
from medlabel.workflow.gold import score_answers, score_gold, score_masks, score_objects

P = Provenance(created_at=datetime(2026, 11, 29, tzinfo=UTC), created_by_user="u")


def a(i: str, t: T, cls: str, g: Any, **kw: Any) -> Annotation:
    return Annotation(i, t, cls, g, P, **kw)


def s(*anns: Annotation, answers: dict[str, Any] | None = None) -> AnnotationSet:
    return AnnotationSet("gold-1", 1, anns, 1, answers or {})


def test_answers_exact_and_multi_as_sets() -> None:
    ref = {"view": "PA", "findings": ("effusion", "nodule")}
    assert score_answers({"view": "PA", "findings": ["nodule", "effusion"]}, ref).passed
    wrong = score_answers({"view": "AP", "findings": ("nodule",)}, ref)
    assert not wrong.passed and wrong.score == 0.0 and wrong.detail["wrong"] == ["findings", "view"]


def test_box_matching_uses_iou_threshold() -> None:
    ref = [a("r1", T.BBOX, "nodule", BBox(0, 0, 10, 10)), a("r2", T.BBOX, "nodule", BBox(50, 50, 10, 10))]
    near = BBox(1, 0, 10, 10)  # IoU 90/110
    far = BBox(55, 55, 10, 10)  # IoU 25/175
    expected = shapely.box(1, 0, 11, 10).intersection(shapely.box(0, 0, 10, 10)).area / 110
    assert expected == pytest.approx(90 / 110)
    sc = score_objects(
        [a("x1", T.BBOX, "nodule", near), a("x2", T.BBOX, "nodule", far)], ref, iou_threshold=0.5
    )
    assert sc.detail["matched"] == 1 and sc.detail["missed"] == ["r2"] and sc.detail["extra"] == ["x2"]
    assert sc.score == pytest.approx(0.5) and not sc.passed
    lax = score_objects(
        [a("x1", T.BBOX, "nodule", near), a("x2", T.BBOX, "nodule", far)], ref, iou_threshold=0.1
    )
    assert lax.score == 1.0 and lax.passed


def test_matching_is_per_class_and_one_to_one() -> None:
    ref = [a("r", T.POLYGON, "tumour", Polygon(((0, 0), (10, 0), (10, 10), (0, 10))))]
    same_shape_other_class = [a("x", T.POLYGON, "stroma", Polygon(((0, 0), (10, 0), (10, 10), (0, 10))))]
    assert score_objects(same_shape_other_class, ref).detail["matched"] == 0
    twice = [a("x1", T.BBOX, "tumour", BBox(0, 0, 10, 10)), a("x2", T.BBOX, "tumour", BBox(0, 0, 10, 10))]
    sc = score_objects(twice, ref)
    assert sc.detail["matched"] == 1 and sc.score == pytest.approx(2 / 3)


def test_mask_dice() -> None:
    ref = np.zeros((10, 10), bool)
    ref[2:6, 2:6] = True  # 16 px
    ans = np.zeros((10, 10), bool)
    ans[2:6, 3:7] = True  # 16 px, 12 overlap -> Dice 24/32
    sc = score_masks(
        [a("x", T.MASK, "liver", encode(ans), frame=0)], [a("r", T.MASK, "liver", encode(ref), frame=0)]
    )
    assert sc.score == pytest.approx(0.75) and not sc.passed
    assert score_masks(
        [a("x", T.MASK, "liver", encode(ans), frame=0)],
        [a("r", T.MASK, "liver", encode(ref), frame=0)],
        dice_threshold=0.7,
    ).passed
    missing = score_masks([], [a("r", T.MASK, "liver", encode(ref), frame=0)])
    assert missing.score == 0.0 and not missing.passed


def test_volume_masks_score_in_3d() -> None:
    vol = np.zeros((4, 6, 6), bool)
    vol[1:3, 1:5, 1:5] = True
    half = vol.copy()
    half[2] = False
    sc = score_masks(
        [a("x", T.MASK, "lesion", VolumeMask.from_array(half))],
        [a("r", T.MASK, "lesion", VolumeMask.from_array(vol))],
    )
    assert sc.score == pytest.approx(2 * 16 / (16 + 32))


def test_whole_set_combines_components() -> None:
    ref = s(
        a("c", T.CLASSIFICATION, "cardiomegaly", None),
        a("b", T.BBOX, "nodule", BBox(0, 0, 10, 10)),
        a("p", T.POINT, "nodule", Point(3, 3)),
        answers={"view": "PA"},
    )
    good = s(
        a("c2", T.CLASSIFICATION, "cardiomegaly", None),
        a("b2", T.BBOX, "nodule", BBox(0, 0, 10, 9)),
        answers={"view": "PA"},
    )
    sc = score_gold(good, ref)
    assert sc.passed and set(sc.detail) == {"answers", "classification", "objects"}  # points are not scored
    bad = s(a("b2", T.BBOX, "nodule", BBox(0, 0, 10, 9)), answers={"view": "AP"})
    sc2 = score_gold(bad, ref)
    assert not sc2.passed and sc2.detail["classification"]["detail"]["missed"] == ["cardiomegaly"]
    assert sc2.score == pytest.approx((0 + 0 + 1) / 3)
