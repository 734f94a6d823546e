"""Property tests of schema round-trips and versioning over generated valid schemas."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from medlabel.annotations.schema import LabelSchema, evolve_schema, load_schema_yaml

IDS = ["nodule", "mass", "lesion", "cyst", "liver", "vessel", "nucleus"]
TYPES = ["bbox", "polygon", "polyline", "point", "mask", "classification"]


@st.composite
def attribute(draw: st.DrawFn, aid: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["enum", "boolean", "number", "text"]))
    d: dict[str, Any] = {"id": aid, "type": kind, "required": draw(st.booleans())}
    if kind == "enum":
        d["options"] = draw(
            st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True)
        )
    if kind == "number":
        lo = draw(st.integers(-100, 100))
        d.update(unit=draw(st.sampled_from(["mm", "HU", "%"])), min=lo, max=lo + draw(st.integers(0, 50)))
    return d


@st.composite
def schema_docs(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=5, unique=True))
    classes = []
    for cid in ids:
        attr_ids = draw(st.lists(st.sampled_from(["size", "grade", "note", "flag"]), max_size=3, unique=True))
        classes.append(
            {
                "id": cid,
                "name": cid.title(),
                "colour": draw(st.sampled_from(["#ff0000", "#00aa00", "#123abc"])),
                "types": draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True)),
                "attributes": [draw(attribute(a)) for a in attr_ids],
            }
        )
    return {"name": "generated", "version": draw(st.integers(1, 5)), "classes": classes}


@settings(max_examples=60, deadline=None)
@given(schema_docs())
def test_round_trip_through_yaml(doc: dict[str, Any]) -> None:
    schema = LabelSchema.from_dict(doc)
    assert load_schema_yaml(yaml.safe_dump(schema.to_dict())) == schema


@settings(max_examples=60, deadline=None)
@given(schema_docs(), schema_docs())
def test_evolution_never_deletes_a_class(old_doc: dict[str, Any], new_doc: dict[str, Any]) -> None:
    old, new = LabelSchema.from_dict(old_doc), LabelSchema.from_dict(new_doc)
    change = evolve_schema(old, new)  # no codes in these schemas, so no identity conflicts
    result = change.schema
    assert result.version == old.version + 1
    old_ids = {c.id for c in old.classes}
    new_ids = {c.id for c in new.classes}
    assert {c.id for c in result.classes} == old_ids | new_ids
    assert {c.id for c in result.active_classes} == new_ids
    assert set(change.retired) == old_ids - new_ids
    assert set(change.added) == new_ids - old_ids
    for c in new.classes:  # the new definitions win for classes that are kept
        assert result.get_class(c.id) == c
    # evolving again with the same document changes nothing but the version
    again = evolve_schema(result, new)
    assert again.added == again.retired == again.renamed == again.modified == ()
