"""Label schema parsing, error paths, coded concepts and versioning."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom.sr.codedict import codes

from medlabel.annotations.schema import (
    AnnotationType,
    AttributeType,
    CodedConcept,
    LabelSchema,
    QuestionKind,
    evolve_schema,
    load_schema_yaml,
)
from medlabel.errors import InvalidInput

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "medlabel" / "annotations" / "examples"


def base() -> dict[str, Any]:
    return {
        "name": "demo",
        "version": 1,
        "classes": [
            {
                "id": "nodule",
                "name": "Nodule",
                "colour": "#112233",
                "code": "SCT.Nodule",
                "types": ["bbox"],
                "attributes": [{"id": "size", "type": "number", "unit": "mm", "min": 0, "max": 50}],
            },
            {"id": "mass", "name": "Mass", "types": ["polygon", "mask"]},
            {
                "id": "tumour",
                "name": "Tumour",
                "code": "SCT.Neoplasm",
                "types": ["mask"],
                "attributes": [
                    {"id": "grade", "type": "enum", "options": ["low", "high"], "required": True},
                    {"id": "colour", "type": "colour"},
                ],
            },
        ],
        "questions": [{"id": "quality", "kind": "single", "options": ["good", "poor"]}],
    }


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse_and_round_trip(path: Path) -> None:
    schema = load_schema_yaml(path.read_text())
    assert schema.classes and all(c.types for c in schema.classes)
    again = LabelSchema.from_dict(yaml.safe_load(yaml.safe_dump(schema.to_dict())))
    assert again == schema


def test_there_are_three_examples_covering_the_brief() -> None:
    schemas = {p.stem: load_schema_yaml(p.read_text()) for p in EXAMPLES.glob("*.yaml")}
    assert len(schemas) == 3
    cxr, ct, path = schemas["chest_xray"], schemas["ct_lesion"], schemas["pathology"]
    assert cxr.questions and any(AnnotationType.BBOX in c.types for c in cxr.classes)
    assert any(AnnotationType.MASK in c.types and c.code and c.code.scheme == "SCT" for c in ct.classes)
    assert {AnnotationType.POINT, AnnotationType.POLYGON} <= {t for c in path.classes for t in c.types}


def test_code_keyword_resolves_through_pydicom_codedict() -> None:
    c = CodedConcept.from_dict("SCT.Neoplasm")
    ref = codes.SCT.Neoplasm
    assert (c.scheme, c.value, c.meaning) == (ref.scheme_designator, ref.value, ref.meaning)
    d = CodedConcept.from_dict("DCM.Finding")
    assert d.scheme == "DCM" and d.value == codes.DCM.Finding.value


def test_the_brief_error_message_names_the_path() -> None:
    doc = base()
    with pytest.raises(InvalidInput) as exc:
        LabelSchema.from_dict(doc)
    assert exc.value.message == (
        "classes[2].attributes[1].type: 'colour' is not one of enum, boolean, number, text"
    )
    assert exc.value.detail == {"path": "classes[2].attributes[1].type"}


def _broken(mutate: Any) -> dict[str, Any]:
    doc = base()
    doc["classes"][2]["attributes"].pop()  # the valid base
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    "mutate, path, needle",
    [
        (lambda d: d["classes"][0].pop("id"), "classes[0].id", "required"),
        (lambda d: d["classes"][1].update(types=["box"]), "classes[1].types[0]", "'box' is not one of bbox"),
        (lambda d: d["classes"][1].update(types=[]), "classes[1].types", "at least one"),
        (lambda d: d["classes"][0].update(colour="red"), "classes[0].colour", "#RRGGBB"),
        (lambda d: d["classes"][0].update(code="SCT.NoSuchThing"), "classes[0].code", "pydicom.sr.codedict"),
        (lambda d: d["classes"][0].update(code={"scheme": "SCT"}), "classes[0].code.value", "required"),
        (lambda d: d["classes"][1].update(id="nodule"), "classes", "appears more than once"),
        (lambda d: d["classes"][1].update(id="bad id!"), "classes[1].id", "not a valid id"),
        (lambda d: d["classes"][1].update(shape="x"), "classes[1]", "unknown key"),
        (
            lambda d: d["classes"][2]["attributes"][0].update(options=[]),
            "classes[2].attributes[0].options",
            "at least one option",
        ),
        (
            lambda d: d["classes"][0]["attributes"][0].update(min=9, max=1),
            "classes[0].attributes[0].min",
            "greater than max",
        ),
        (
            lambda d: d["classes"][0]["attributes"][0].update(required="yes"),
            "classes[0].attributes[0].required",
            "expected bool",
        ),
        (
            lambda d: d["questions"][0].update(kind="either"),
            "questions[0].kind",
            "'either' is not one of single",
        ),
        (lambda d: d["questions"][0].update(options=["only"]), "questions[0].options", "fewer than 2"),
        (lambda d: d.update(version=0), "version", "below 1"),
        (lambda d: d.update(version=True), "version", "expected int"),
    ],
)
def test_errors_name_the_path_value_and_rule(mutate: Any, path: str, needle: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        LabelSchema.from_dict(_broken(mutate))
    assert exc.value.detail["path"] == path
    assert exc.value.message.startswith(f"{path}:")
    assert needle in exc.value.message


def test_bad_yaml_and_non_mapping_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_schema_yaml("classes: [")
    with pytest.raises(InvalidInput, match="expected a mapping"):
        load_schema_yaml("- a\n- b\n")


def test_attribute_checks() -> None:
    schema = LabelSchema.from_dict(_broken(lambda d: None))
    size = schema.classes[0].attributes[0]
    assert size.type is AttributeType.NUMBER and size.unit == "mm"
    assert size.check(12.5) is None
    assert "above the maximum 50 mm" in str(size.check(51))
    assert "not a number" in str(size.check(True))
    assert "not a number" in str(size.check(float("nan")))
    grade = schema.classes[2].attributes[0]
    assert grade.check("high") is None and "not one of" in str(grade.check("medium"))
    q = schema.questions[0]
    assert q.kind is QuestionKind.SINGLE and q.check("good") is None and q.check("meh") is not None


def _v2(mutate: Any) -> LabelSchema:
    doc = _broken(lambda d: None)
    new = copy.deepcopy(doc)
    mutate(new)
    return LabelSchema.from_dict(new)


def test_removed_class_is_retired_not_deleted() -> None:
    old = LabelSchema.from_dict(_broken(lambda d: None))
    new = _v2(lambda d: d["classes"].pop(1))
    change = evolve_schema(old, new)
    assert change.retired == ("mass",)
    assert change.schema.version == 2
    mass = change.schema.get_class("mass")
    assert mass is not None and mass.retired
    assert [c.id for c in change.schema.active_classes] == ["nodule", "tumour"]
    # bringing it back restores it
    back = evolve_schema(change.schema, LabelSchema.from_dict(_broken(lambda d: None)))
    assert back.restored == ("mass",) and not back.schema.get_class("mass").retired  # type: ignore[union-attr]
    assert back.schema.version == 3


def test_rename_keeps_identity_and_is_recorded() -> None:
    old = LabelSchema.from_dict(_broken(lambda d: None))
    change = evolve_schema(old, _v2(lambda d: d["classes"][0].update(name="Pulmonary nodule")))
    assert change.renamed == (("nodule", "Nodule", "Pulmonary nodule"),)
    assert change.retired == () and change.added == ()


def test_a_class_may_not_change_meaning_under_the_same_id() -> None:
    old = LabelSchema.from_dict(_broken(lambda d: None))
    with pytest.raises(InvalidInput, match="may not change meaning") as exc:
        evolve_schema(old, _v2(lambda d: d["classes"][0].update(code="SCT.Mass")))
    assert exc.value.detail["path"] == "classes[0].code"


def test_a_new_id_may_not_take_an_existing_code() -> None:
    old = LabelSchema.from_dict(_broken(lambda d: None))
    with pytest.raises(InvalidInput, match="ids are stable"):
        evolve_schema(old, _v2(lambda d: d["classes"][0].update(id="lung_nodule")))


def test_tightening_changes_warn() -> None:
    old = LabelSchema.from_dict(_broken(lambda d: None))

    def tighten(d: dict[str, Any]) -> None:
        d["classes"][0]["attributes"][0]["required"] = True
        d["classes"][1]["types"] = ["polygon"]

    change = evolve_schema(old, _v2(tighten))
    assert set(change.modified) == {"nodule", "mass"}
    assert any("newly required" in w for w in change.warnings)
    assert any("no longer allows ['mask']" in w for w in change.warnings)
    assert change.to_dict()["version"] == 2


def test_the_documented_example_parses() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    schema = load_schema_yaml(block)
    lesion = schema.get_class("lesion")
    assert lesion is not None and lesion.code == CodedConcept("SCT", "52988006", "Lesion")
    assert lesion.attribute("longest_diameter").check(320) == "320 mm is above the maximum 300 mm"  # type: ignore[union-attr]
