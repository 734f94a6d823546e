"""Strict on write: arbitrary JSON from a client is either accepted or refused with InvalidInput,
never a crash (KeyError, AttributeError, ValueError...)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from medlabel.annotations.model import Annotation, AnnotationSet
from medlabel.annotations.rle import RLE
from medlabel.annotations.schema import LabelSchema
from medlabel.errors import InvalidInput

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)

GEOMETRY_KEYS = [
    "x",
    "y",
    "width",
    "height",
    "exterior",
    "holes",
    "points",
    "rle",
    "volume",
    "size",
    "counts",
]


@st.composite
def annotation_docs(draw: st.DrawFn) -> dict[str, Any]:
    geometry = draw(st.dictionaries(st.sampled_from(GEOMETRY_KEYS), json_values, max_size=4) | json_values)
    return {
        "id": draw(st.text(max_size=4) | json_values),
        "type": draw(
            st.sampled_from(["bbox", "polygon", "polyline", "point", "mask", "classification", "x"])
        ),
        "class_id": draw(st.text(max_size=4)),
        "geometry": geometry,
        "frame": draw(st.none() | st.integers(-2, 3) | json_values),
        "plane": draw(st.sampled_from([None, "axial", "oblique"])),
        "attributes": draw(json_values),
        "provenance": draw(
            st.fixed_dictionaries(
                {"created_at": st.sampled_from(["2026-11-29T10:00:00+00:00", "yesterday"])},
                optional={"created_by_user": st.text(max_size=3), "model_name": json_values},
            )
            | json_values
        ),
    }


@settings(max_examples=100, deadline=None)
@given(annotation_docs())
def test_annotation_from_arbitrary_json_accepts_or_refuses_cleanly(doc: dict[str, Any]) -> None:
    try:
        a = Annotation.from_dict(doc)
    except InvalidInput:
        return
    assert Annotation.from_dict(a.to_dict()) == a


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["item_id", "version", "annotations", "answers", "schema_version"]), json_values
    )
)
def test_annotation_set_from_arbitrary_json(doc: dict[str, Any]) -> None:
    try:
        AnnotationSet.from_dict(doc)
    except InvalidInput:
        pass


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 3), max_size=3),
    st.text(alphabet=st.characters(codec="ascii"), max_size=12) | json_values,
)
def test_rle_from_arbitrary_json(size: list[int], counts: Any) -> None:
    try:
        r = RLE.from_dict({"size": size, "counts": counts})
    except InvalidInput:
        return
    assert RLE.from_dict(r.to_dict()) == r


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["name", "version", "classes", "questions", "description"]), json_values)
)
def test_schema_from_arbitrary_json(doc: dict[str, Any]) -> None:
    try:
        LabelSchema.from_dict(doc)
    except InvalidInput:
        pass
