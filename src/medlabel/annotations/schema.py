"""Label schemas: which classes exist, how each may be drawn, its attributes, and item questions.

A schema is plain data parsed from YAML or a dict (see ``docs/schema.md``). Parsing is strict:
every error names the path in the document, the value found and the rule, e.g.
``classes[2].attributes[0].type: 'colour' is not one of enum, boolean, number, text``.

Identity: each class, attribute and question has an ``id`` that never changes; names and colours
may. :func:`evolve_schema` compares versions by id, keeps removed classes as *retired* (so existing
annotations stay valid) and refuses to give an id a different coded concept (a silent identity
change).

Coded concepts use DICOM's vocabulary via :mod:`pydicom.sr.codedict`: write ``code: SCT.Neoplasm``
(or ``DCM.Finding``) and it is resolved to scheme designator, code value and meaning; or give the
triple explicitly (``{scheme: SCT, value: "108369006", meaning: Neoplasm}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import yaml

from medlabel.errors import InvalidInput

__all__ = [
    "AnnotationType",
    "AttributeType",
    "QuestionKind",
    "CodedConcept",
    "AttributeSpec",
    "LabelClass",
    "Question",
    "LabelSchema",
    "SchemaChange",
    "load_schema_yaml",
    "evolve_schema",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")


class AnnotationType(StrEnum):
    BBOX = "bbox"
    POLYGON = "polygon"
    POLYLINE = "polyline"
    POINT = "point"
    MASK = "mask"
    CLASSIFICATION = "classification"


class AttributeType(StrEnum):
    ENUM = "enum"
    BOOLEAN = "boolean"
    NUMBER = "number"
    TEXT = "text"


class QuestionKind(StrEnum):
    SINGLE = "single"
    MULTI = "multi"


def _fail(path: str, msg: str) -> InvalidInput:
    return InvalidInput(f"{path}: {msg}", detail={"path": path})


def _one_of(path: str, value: Any, enum: type[StrEnum]) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise _fail(path, f"{value!r} is not one of {allowed}") from None


def _get(
    d: Mapping[str, Any], key: str, path: str, typ: type | tuple[type, ...], *, default: Any = ...
) -> Any:
    if key not in d:
        if default is ...:
            raise _fail(f"{path}.{key}" if path else key, "is required but missing")
        return default
    value = d[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and bool not in _types(typ)):
        names = "/".join(t.__name__ for t in _types(typ))
        raise _fail(
            f"{path}.{key}" if path else key, f"{value!r} is a {type(value).__name__}, expected {names}"
        )
    return value


def _types(typ: type | tuple[type, ...]) -> tuple[type, ...]:
    return typ if isinstance(typ, tuple) else (typ,)


def _check_id(path: str, value: str) -> str:
    if not _ID.match(value):
        raise _fail(
            path,
            f"{value!r} is not a valid id; expected letters, digits, '_', '.', '-' (max 64), "
            "starting with a letter or digit",
        )
    return value


def _unknown(d: Mapping[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        where = path or "schema"
        raise _fail(where, f"unknown key(s) {extra}; expected only {sorted(allowed)}")


@dataclass(frozen=True, slots=True)
class CodedConcept:
    """A DICOM coded concept (PS3.3 Table 8.8-1): scheme designator, code value, code meaning."""

    scheme: str
    value: str
    meaning: str

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}

    @classmethod
    def from_dict(cls, raw: Any, path: str = "code") -> CodedConcept:
        if isinstance(raw, str):
            return cls.from_keyword(raw, path)
        if not isinstance(raw, Mapping):
            raise _fail(path, f"{raw!r} is neither 'SCHEME.Keyword' nor a {{scheme, value, meaning}} mapping")
        _unknown(raw, {"scheme", "value", "meaning"}, path)
        scheme = _get(raw, "scheme", path, str)
        value = _get(raw, "value", path, (str, int))
        meaning = _get(raw, "meaning", path, str)
        return cls(scheme, str(value), meaning)

    @classmethod
    def from_keyword(cls, text: str, path: str = "code") -> CodedConcept:
        """Resolve ``'SCT.Neoplasm'`` through ``pydicom.sr.codedict.codes``."""
        from pydicom.sr.codedict import codes

        scheme, _, keyword = text.partition(".")
        if not keyword:
            raise _fail(path, f"{text!r} is not 'SCHEME.Keyword' (e.g. 'SCT.Neoplasm', 'DCM.Finding')")
        try:
            code = getattr(getattr(codes, scheme), keyword)
        except AttributeError:
            raise _fail(
                path,
                f"{text!r} is not a concept in pydicom.sr.codedict (scheme {scheme!r}, keyword {keyword!r}); "
                "give {scheme, value, meaning} explicitly for codes outside the dictionary",
            ) from None
        return cls(str(code.scheme_designator), str(code.value), str(code.meaning))


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """A typed attribute of a class. ``options`` for enum; ``unit``, ``minimum``, ``maximum`` for number
    (``unit`` is a UCUM string such as ``mm`` or ``HU``)."""

    id: str
    type: AttributeType
    required: bool = False
    name: str = ""
    options: tuple[str, ...] = ()
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "type": self.type.value, "required": self.required}
        if self.name:
            d["name"] = self.name
        if self.options:
            d["options"] = list(self.options)
        if self.unit is not None:
            d["unit"] = self.unit
        if self.minimum is not None:
            d["min"] = self.minimum
        if self.maximum is not None:
            d["max"] = self.maximum
        return d

    @classmethod
    def from_dict(cls, raw: Any, path: str = "attribute") -> AttributeSpec:
        if not isinstance(raw, Mapping):
            raise _fail(path, f"{raw!r} is not a mapping")
        _unknown(raw, {"id", "name", "type", "required", "options", "unit", "min", "max"}, path)
        aid = _check_id(f"{path}.id", _get(raw, "id", path, str))
        atype = _one_of(f"{path}.type", _get(raw, "type", path, str), AttributeType)
        required = _get(raw, "required", path, bool, default=False)
        name = _get(raw, "name", path, str, default="")
        options_raw = _get(raw, "options", path, list, default=[])
        unit = _get(raw, "unit", path, str, default=None)
        lo = _get(raw, "min", path, (int, float), default=None)
        hi = _get(raw, "max", path, (int, float), default=None)
        if atype is AttributeType.ENUM:
            if not options_raw:
                raise _fail(f"{path}.options", "an enum attribute needs at least one option")
            for i, o in enumerate(options_raw):
                if not isinstance(o, str):
                    raise _fail(f"{path}.options[{i}]", f"{o!r} is not a string")
            if len(set(options_raw)) != len(options_raw):
                raise _fail(f"{path}.options", f"{options_raw} has duplicates")
        elif options_raw:
            raise _fail(f"{path}.options", f"only enum attributes have options; this one is {atype.value}")
        if atype is not AttributeType.NUMBER and (unit is not None or lo is not None or hi is not None):
            raise _fail(path, f"unit/min/max apply to number attributes only; this one is {atype.value}")
        if lo is not None and hi is not None and lo > hi:
            raise _fail(f"{path}.min", f"min {lo} is greater than max {hi}")
        return cls(
            aid,
            atype,
            required,
            name,
            tuple(options_raw),
            unit,
            None if lo is None else float(lo),
            None if hi is None else float(hi),
        )

    def check(self, value: Any) -> str | None:
        """``None`` when ``value`` fits this attribute, else why not."""
        t = self.type
        if t is AttributeType.BOOLEAN:
            return None if isinstance(value, bool) else f"{value!r} is not a boolean (true/false)"
        if t is AttributeType.TEXT:
            return None if isinstance(value, str) else f"{value!r} is not text"
        if t is AttributeType.ENUM:
            if value in self.options and isinstance(value, str):
                return None
            return f"{value!r} is not one of {list(self.options)}"
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return f"{value!r} is not a number"
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and value < self.minimum:
            return f"{value}{unit} is below the minimum {self.minimum:g}{unit}"
        if self.maximum is not None and value > self.maximum:
            return f"{value}{unit} is above the maximum {self.maximum:g}{unit}"
        return None


@dataclass(frozen=True, slots=True)
class LabelClass:
    id: str
    name: str
    types: frozenset[AnnotationType]
    colour: str = "#ff0000"
    code: CodedConcept | None = None
    attributes: tuple[AttributeSpec, ...] = ()
    retired: bool = False

    def attribute(self, attr_id: str) -> AttributeSpec | None:
        return next((a for a in self.attributes if a.id == attr_id), None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "colour": self.colour,
            "types": sorted(t.value for t in self.types),
            "attributes": [a.to_dict() for a in self.attributes],
        }
        if self.code is not None:
            d["code"] = self.code.to_dict()
        if self.retired:
            d["retired"] = True
        return d

    @classmethod
    def from_dict(cls, raw: Any, path: str = "class") -> LabelClass:
        if not isinstance(raw, Mapping):
            raise _fail(path, f"{raw!r} is not a mapping")
        _unknown(raw, {"id", "name", "colour", "color", "code", "types", "attributes", "retired"}, path)
        cid = _check_id(f"{path}.id", _get(raw, "id", path, str))
        name = _get(raw, "name", path, str, default=cid)
        colour = raw.get("colour", raw.get("color", "#ff0000"))
        if not isinstance(colour, str) or not _COLOUR.match(colour):
            raise _fail(f"{path}.colour", f"{colour!r} is not a '#RRGGBB' hex colour")
        code = CodedConcept.from_dict(raw["code"], f"{path}.code") if raw.get("code") is not None else None
        types_raw = _get(raw, "types", path, list)
        if not types_raw:
            raise _fail(
                f"{path}.types", "needs at least one of " + ", ".join(t.value for t in AnnotationType)
            )
        types = frozenset(_one_of(f"{path}.types[{i}]", t, AnnotationType) for i, t in enumerate(types_raw))
        attrs_raw = _get(raw, "attributes", path, list, default=[])
        attrs = tuple(AttributeSpec.from_dict(a, f"{path}.attributes[{i}]") for i, a in enumerate(attrs_raw))
        _no_dupes([a.id for a in attrs], f"{path}.attributes", "attribute id")
        retired = _get(raw, "retired", path, bool, default=False)
        return cls(cid, name, types, colour.lower(), code, attrs, retired)


@dataclass(frozen=True, slots=True)
class Question:
    """An item-level classification question answered once per item."""

    id: str
    text: str
    kind: QuestionKind
    options: tuple[str, ...]
    required: bool = False
    code: CodedConcept | None = None

    def check(self, answer: Any) -> str | None:
        if self.kind is QuestionKind.SINGLE:
            if not isinstance(answer, str) or answer not in self.options:
                return f"{answer!r} is not one of {list(self.options)} (single choice)"
            return None
        if not isinstance(answer, list | tuple) or not all(isinstance(a, str) for a in answer):
            return f"{answer!r} is not a list of choices (multi choice)"
        bad = [a for a in answer if a not in self.options]
        if bad:
            return f"{bad} not among {list(self.options)} (multi choice)"
        if len(set(answer)) != len(answer):
            return f"{list(answer)} repeats a choice"
        if self.required and not answer:
            return "no choice made; at least one is required"
        return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "kind": self.kind.value,
            "options": list(self.options),
            "required": self.required,
        }
        if self.code is not None:
            d["code"] = self.code.to_dict()
        return d

    @classmethod
    def from_dict(cls, raw: Any, path: str = "question") -> Question:
        if not isinstance(raw, Mapping):
            raise _fail(path, f"{raw!r} is not a mapping")
        _unknown(raw, {"id", "text", "kind", "options", "required", "code"}, path)
        qid = _check_id(f"{path}.id", _get(raw, "id", path, str))
        text = _get(raw, "text", path, str, default=qid)
        kind = _one_of(f"{path}.kind", _get(raw, "kind", path, str, default="single"), QuestionKind)
        opts = _get(raw, "options", path, list)
        if len(opts) < 2 and kind is QuestionKind.SINGLE:
            raise _fail(f"{path}.options", f"{opts} has fewer than 2 options for a single-choice question")
        if not opts:
            raise _fail(f"{path}.options", "needs at least one option")
        for i, o in enumerate(opts):
            if not isinstance(o, str):
                raise _fail(f"{path}.options[{i}]", f"{o!r} is not a string")
        _no_dupes(opts, f"{path}.options", "option")
        required = _get(raw, "required", path, bool, default=False)
        code = CodedConcept.from_dict(raw["code"], f"{path}.code") if raw.get("code") is not None else None
        return cls(qid, text, kind, tuple(opts), required, code)


def _no_dupes(ids: Sequence[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise _fail(path, f"{what} {i!r} appears more than once; ids must be unique")
        seen.add(i)


@dataclass(frozen=True, slots=True)
class LabelSchema:
    name: str
    version: int
    classes: tuple[LabelClass, ...]
    questions: tuple[Question, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        _no_dupes([c.id for c in self.classes], "classes", "class id")
        _no_dupes([q.id for q in self.questions], "questions", "question id")
        _no_dupes([c.name for c in self.classes if not c.retired], "classes", "active class name")

    def get_class(self, class_id: str) -> LabelClass | None:
        return next((c for c in self.classes if c.id == class_id), None)

    def get_question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)

    @property
    def active_classes(self) -> tuple[LabelClass, ...]:
        return tuple(c for c in self.classes if not c.retired)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "classes": [c.to_dict() for c in self.classes],
            "questions": [q.to_dict() for q in self.questions],
        }
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_dict(cls, raw: Any) -> LabelSchema:
        if not isinstance(raw, Mapping):
            raise _fail("schema", f"document is a {type(raw).__name__}, expected a mapping")
        _unknown(raw, {"name", "version", "description", "classes", "questions"}, "")
        name = _get(raw, "name", "", str)
        version = _get(raw, "version", "", int, default=1)
        if version < 1:
            raise _fail("version", f"{version} is below 1; versions count from 1")
        description = _get(raw, "description", "", str, default="")
        classes_raw = _get(raw, "classes", "", list, default=[])
        questions_raw = _get(raw, "questions", "", list, default=[])
        if not classes_raw and not questions_raw:
            raise _fail("classes", "a schema needs at least one class or one question")
        classes = tuple(LabelClass.from_dict(c, f"classes[{i}]") for i, c in enumerate(classes_raw))
        questions = tuple(Question.from_dict(q, f"questions[{i}]") for i, q in enumerate(questions_raw))
        return cls(name, version, classes, questions, description)


def load_schema_yaml(text: str) -> LabelSchema:
    """Parse and validate a YAML schema document (safe loader only)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"schema is not valid YAML: {exc}", detail={"path": "schema"}) from exc
    return LabelSchema.from_dict(raw)


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """What :func:`evolve_schema` did. ``schema`` is the resulting version (retired classes kept)."""

    schema: LabelSchema
    added: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    restored: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str, str], ...] = ()  # (id, old name, new name)
    modified: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    removed_questions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.schema.version,
            "added": list(self.added),
            "retired": list(self.retired),
            "restored": list(self.restored),
            "renamed": [list(r) for r in self.renamed],
            "modified": list(self.modified),
            "warnings": list(self.warnings),
            "removed_questions": list(self.removed_questions),
        }


def evolve_schema(old: LabelSchema, new: LabelSchema) -> SchemaChange:
    """Compute version ``old.version + 1`` from an edited schema ``new``.

    * classes are matched by ``id``; a class missing from ``new`` is kept with ``retired=True``;
      a retired class that reappears is restored;
    * the same id with a different coded concept raises InvalidInput (give it a new id instead);
    * a new class whose name or code equals that of an existing class with another id raises
      InvalidInput (that would be a silent identity change: rename in place instead);
    * new required attributes, removed annotation types and changed attribute types are allowed
      but produce warnings: annotations saved earlier may fail validation when next edited
      (untouched ones only get warnings, see ``validate_annotation_set``);
    * removed questions are listed in ``removed_questions``; answers already stored are kept.
    """
    old_by_id = {c.id: c for c in old.classes}
    new_ids = {c.id for c in new.classes}
    added: list[str] = []
    restored: list[str] = []
    renamed: list[tuple[str, str, str]] = []
    modified: list[str] = []
    warnings: list[str] = []
    result: list[LabelClass] = []
    for i, c in enumerate(new.classes):
        prev = old_by_id.get(c.id)
        if prev is None:
            for o in old.classes:
                if c.code is not None and o.code == c.code:
                    raise _fail(
                        f"classes[{i}].id",
                        f"new class {c.id!r} has the code {c.code.scheme}:{c.code.value} "
                        f"({c.code.meaning}) of "
                        f"existing class {o.id!r}; ids are stable: keep id {o.id!r} to edit that class",
                    )
                if o.name == c.name:
                    warnings.append(
                        f"new class {c.id!r} has the name {c.name!r} of class {o.id!r}, which is "
                        f"{'retired' if o.id not in new_ids else 'still present'}; they stay distinct classes"
                    )
            added.append(c.id)
            result.append(c)
            continue
        if prev.code is not None and c.code != prev.code:
            raise _fail(
                f"classes[{i}].code",
                f"class {c.id!r} had code {prev.code.scheme}:{prev.code.value} ({prev.code.meaning}) and now "
                f"{'none' if c.code is None else f'{c.code.scheme}:{c.code.value}'}; a class may not change "
                "meaning under the same id (add a new class and retire this one)",
            )
        if prev.retired and not c.retired:
            restored.append(c.id)
        if prev.name != c.name:
            renamed.append((c.id, prev.name, c.name))
        if replace(prev, name=c.name, retired=c.retired) != c:
            modified.append(c.id)
            lost = prev.types - c.types
            if lost:
                warnings.append(f"class {c.id!r} no longer allows {sorted(t.value for t in lost)}")
            for a in c.attributes:
                pa = prev.attribute(a.id)
                if a.required and (pa is None or not pa.required):
                    warnings.append(f"class {c.id!r} attribute {a.id!r} is newly required")
                if pa is not None and pa.type != a.type:
                    warnings.append(f"class {c.id!r} attribute {a.id!r} changed type {pa.type} -> {a.type}")
        result.append(c)
    retired: list[str] = []
    for c in old.classes:
        if c.id not in new_ids:
            if not c.retired:
                retired.append(c.id)
            result.append(replace(c, retired=True))
    new_questions = {q.id for q in new.questions}
    removed_questions = tuple(q.id for q in old.questions if q.id not in new_questions)
    for qid in removed_questions:
        warnings.append(f"question {qid!r} was removed; stored answers to it are kept but no longer asked")
    schema = LabelSchema(new.name, old.version + 1, tuple(result), new.questions, new.description)
    return SchemaChange(
        schema,
        tuple(added),
        tuple(retired),
        tuple(restored),
        tuple(renamed),
        tuple(modified),
        tuple(warnings),
        removed_questions,
    )
