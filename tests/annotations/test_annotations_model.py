"""Provenance, annotation sets, optimistic concurrency (412) and lineage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from medlabel.annotations.geometry import BBox, Point, Polygon, Polyline
from medlabel.annotations.masks import VolumeMask
from medlabel.annotations.model import (
    Annotation,
    AnnotationSet,
    ImageExtent,
    Plane,
    Provenance,
    apply_save,
    derive,
    lineage,
    parse_if_match,
)
from medlabel.annotations.rle import encode
from medlabel.annotations.schema import AnnotationType
from medlabel.errors import InvalidInput, PreconditionFailed

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def by(user: str = "ann1", at: datetime = T0) -> Provenance:
    return Provenance(created_at=at, created_by_user=user)


def aset(version: int = 0, *anns: Annotation) -> AnnotationSet:
    return AnnotationSet("item-1", version, tuple(anns), schema_version=1)


def test_provenance_needs_exactly_one_author() -> None:
    with pytest.raises(InvalidInput, match="exactly one"):
        Provenance(created_at=T0)
    with pytest.raises(InvalidInput, match="exactly one"):
        Provenance(created_at=T0, created_by_user="u", model_name="m", model_version="1")
    with pytest.raises(InvalidInput, match="model_version"):
        Provenance(created_at=T0, model_name="totalseg")
    with pytest.raises(InvalidInput, match="before created_at"):
        Provenance(created_at=T0, created_by_user="u", updated_at=T0 - timedelta(seconds=1))
    assert Provenance(created_at=T0, model_name="m", model_version="2.1").author == "model:m@2.1"


def test_geometry_must_match_type() -> None:
    with pytest.raises(InvalidInput, match="expected BBox"):
        Annotation("a", AnnotationType.BBOX, "c", Point(1, 1), by())
    with pytest.raises(InvalidInput, match="no geometry"):
        Annotation("a", AnnotationType.CLASSIFICATION, "c", Point(1, 1), by())
    with pytest.raises(InvalidInput, match="no frame or plane"):
        Annotation("a", AnnotationType.MASK, "c", VolumeMask.from_array(np.ones((1, 2, 2))), by(), frame=0)


def test_every_annotation_kind_round_trips_through_json() -> None:
    vol = np.zeros((3, 4, 5), bool)
    vol[1, 1:3, 2:4] = True
    anns = (
        Annotation(
            "b", AnnotationType.BBOX, "nodule", BBox(1, 2, 3, 4), by(), frame=2, attributes={"size": 4.5}
        ),
        Annotation(
            "p",
            AnnotationType.POLYGON,
            "mass",
            Polygon(((0, 0), (4, 0), (4, 4))),
            by(),
            frame=1,
            plane=Plane.CORONAL,
        ),
        Annotation("l", AnnotationType.POLYLINE, "vessel", Polyline(((0, 0), (2, 2))), by()),
        Annotation("pt", AnnotationType.POINT, "nucleus", Point(3.5, 2.5), by()),
        Annotation("m2", AnnotationType.MASK, "liver", encode(np.eye(4)), by(), frame=0),
        Annotation(
            "m3",
            AnnotationType.MASK,
            "liver",
            VolumeMask.from_array(vol),
            Provenance(created_at=T0, model_name="seg", model_version="1.0", updated_at=T0),
        ),
        Annotation("c", AnnotationType.CLASSIFICATION, "cardiomegaly", None, by()),
    )
    s = AnnotationSet("item-1", 3, anns, schema_version=2, answers={"view": "PA", "findings": ("a", "b")})
    text = json.dumps(s.to_dict())
    assert "[[" in text and "counts" in text  # polygons as lists, masks as RLE strings
    assert AnnotationSet.from_dict(json.loads(text)) == s


def test_duplicate_ids_in_a_set_are_refused() -> None:
    a = Annotation("x", AnnotationType.POINT, "c", Point(1, 1), by())
    with pytest.raises(InvalidInput, match="repeats id 'x'"):
        aset(0, a, a)


def test_first_save_needs_no_if_match() -> None:
    saved = apply_save(0, None, aset())
    assert saved.version == 1


@pytest.mark.parametrize("if_match", [3, "3", '"3"', 'W/"3"'])
def test_fresh_save_bumps_version(if_match: int | str) -> None:
    assert apply_save(3, if_match, aset(3)).version == 4


@pytest.mark.parametrize("if_match", [2, '"1"', None])
def test_stale_save_is_412_with_current_version(if_match: int | str | None) -> None:
    with pytest.raises(PreconditionFailed) as exc:
        apply_save(3, if_match, aset(2))
    assert exc.value.status == 412
    assert exc.value.detail["current_version"] == 3
    assert "version 3" in exc.value.message


def test_two_clients_racing_one_wins() -> None:
    current = apply_save(0, None, aset())
    alice = apply_save(current.version, current.version, aset(current.version))
    with pytest.raises(PreconditionFailed) as exc:
        apply_save(alice.version, current.version, aset(current.version))
    assert exc.value.detail["current_version"] == alice.version == 2


def test_if_match_garbage_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="If-Match"):
        parse_if_match("abc")


def test_lineage_prelabel_annotator_reviewer() -> None:
    pre = Annotation(
        "a1",
        AnnotationType.BBOX,
        "nodule",
        BBox(0, 0, 4, 4),
        Provenance(created_at=T0, model_name="detector", model_version="0.3"),
    )
    mid = derive(pre, "a2", at=T0 + timedelta(minutes=5), user="ann1", geometry=BBox(0, 0, 5, 5))
    last = derive(mid, "a3", at=T0 + timedelta(minutes=9), user="rev1", class_id="mass")
    chain = lineage("a3", [last, pre, mid])
    assert [a.id for a in chain] == ["a1", "a2", "a3"]
    assert [a.provenance.author for a in chain] == ["model:detector@0.3", "user:ann1", "user:rev1"]
    assert chain[2].provenance.derived_from == "a2" and chain[2].class_id == "mass"
    assert chain[2].geometry == BBox(0, 0, 5, 5)  # carried from the annotator's edit
    assert lineage("a3", {"a3": last}) == (last,)  # pruned history stops quietly
    with pytest.raises(InvalidInput, match="cannot change"):
        derive(pre, "x", at=T0, user="u", id="y")


def test_lineage_cycle_is_refused() -> None:
    a = Annotation(
        "a",
        AnnotationType.POINT,
        "c",
        Point(1, 1),
        Provenance(created_at=T0, created_by_user="u", derived_from="b"),
    )
    b = Annotation(
        "b",
        AnnotationType.POINT,
        "c",
        Point(1, 1),
        Provenance(created_at=T0, created_by_user="u", derived_from="a"),
    )
    with pytest.raises(InvalidInput, match="cycle"):
        lineage("a", [a, b])
    with pytest.raises(InvalidInput, match="not among"):
        lineage("zzz", [a])


def test_plane_extents_of_a_volume() -> None:
    e = ImageExtent(width=512, height=400, frames=90, is_volume=True)
    assert e.plane_extent(Plane.AXIAL) == (512, 400, 90)
    assert e.plane_extent(Plane.CORONAL) == (512, 90, 400)
    assert e.plane_extent(Plane.SAGITTAL) == (400, 90, 512)
