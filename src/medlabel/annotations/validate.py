"""Validation of an annotation set on save, against the label schema and the image extent.

:func:`validate_annotation_set` returns every issue found (it never stops at the first);
:func:`check_annotation_set` raises InvalidInput (422) when any issue is an error, with
``detail={"issues": [...]}`` naming each annotation's index and id and the rule broken.

Rules (the ``rule`` field, stable for clients):

=====================  ===================================================================
``class_unknown``      the class id is not in the schema
``class_retired``      a *new* annotation (id not in the previous set, or class changed) uses a
                       retired class; existing annotations of retired classes stay valid
``type_not_allowed``   the class does not allow this annotation type
``frame_missing``      a multi-frame image or volume needs a frame/slice index for 2D geometry
``frame_out_of_range`` the frame or slice index is outside the image
``plane_not_volume``   a plane was given for an image that is not a volume
``outside_image``      a coordinate lies outside ``[0, width] × [0, height]`` of its plane
``mask_size``          an RLE or volume mask does not have the image's size
``polygon_invalid``    a polygon is not valid (self-intersection…) and could not be repaired
``polygon_repaired``   (warning) an invalid polygon was repaired: largest piece kept
``attribute_missing``  a required attribute has no value
``attribute_invalid``  a value has the wrong type, is not an allowed option, or is out of range
``attribute_unknown``  an attribute not declared for the class
``answer_unknown``     an answer to a question not in the schema
``answer_invalid``     an answer that is not among the question's options
``answer_missing``     a required question without an answer
=====================  ===================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from medlabel.annotations.geometry import BBox, Point, Polygon, Polyline, polygon_validity, repair_polygon
from medlabel.annotations.masks import VolumeMask
from medlabel.annotations.model import Annotation, AnnotationSet, ImageExtent
from medlabel.annotations.rle import RLE
from medlabel.annotations.schema import AnnotationType, LabelSchema
from medlabel.errors import InvalidInput

__all__ = [
    "IssueSeverity",
    "SCHEMA_RULES",
    "ValidationIssue",
    "ValidationResult",
    "validate_annotation",
    "validate_annotation_set",
    "check_annotation_set",
]

_EPS = 1e-6


class IssueSeverity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    rule: str
    message: str
    index: int | None = None  # position in the set's annotations; None for answers
    annotation_id: str | None = None
    severity: IssueSeverity = IssueSeverity.ERROR

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "message": self.message,
            "index": self.index,
            "annotation_id": self.annotation_id,
            "severity": self.severity.value,
        }


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The set to store (invalid polygons replaced by their repair) and the issues found."""

    annotation_set: AnnotationSet
    issues: tuple[ValidationIssue, ...]

    @property
    def errors(self) -> tuple[ValidationIssue, ...]:
        return tuple(i for i in self.issues if i.severity is IssueSeverity.ERROR)

    @property
    def warnings(self) -> tuple[ValidationIssue, ...]:
        return tuple(i for i in self.issues if i.severity is IssueSeverity.WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors


def _points(g: Any) -> Iterable[tuple[float, float]]:
    if isinstance(g, Point):
        yield (g.x, g.y)
    elif isinstance(g, BBox):
        x0, y0, x1, y1 = g.bounds()
        yield (x0, y0)
        yield (x1, y1)
    elif isinstance(g, Polygon):
        yield from g.exterior
        for h in g.holes:
            yield from h
    elif isinstance(g, Polyline):
        yield from g.points


def validate_annotation(
    ann: Annotation,
    schema: LabelSchema,
    extent: ImageExtent,
    *,
    index: int | None = None,
    is_new: bool = True,
    require_complete: bool = True,
    repair: bool = True,
) -> tuple[Annotation, list[ValidationIssue]]:
    """Check one annotation; returns it (possibly with a repaired polygon) and its issues."""
    issues: list[ValidationIssue] = []
    where = f"annotation #{index} ({ann.id!r})" if index is not None else f"annotation {ann.id!r}"

    def err(rule: str, msg: str, sev: IssueSeverity = IssueSeverity.ERROR) -> None:
        issues.append(ValidationIssue(rule, f"{where}: {msg}", index, ann.id, sev))

    cls = schema.get_class(ann.class_id)
    if cls is None:
        known = [c.id for c in schema.active_classes]
        err(
            "class_unknown",
            f"class {ann.class_id!r} is not in schema {schema.name!r} v{schema.version}; "
            f"expected one of {known}",
        )
    else:
        if cls.retired and is_new:
            err(
                "class_retired",
                f"class {cls.id!r} is retired in schema v{schema.version}; new annotations "
                "must use an active class",
            )
        if ann.type not in cls.types:
            err(
                "type_not_allowed",
                f"class {cls.id!r} does not allow {ann.type.value}; allowed: "
                f"{sorted(t.value for t in cls.types)}",
            )

    # location: frame / slice / plane
    g = ann.geometry
    two_d = ann.type is not AnnotationType.CLASSIFICATION and not isinstance(g, VolumeMask)
    if ann.plane is not None and not extent.is_volume:
        err("plane_not_volume", f"plane {ann.plane.value!r} given, but the image is not a volume")
    width, height, n = extent.plane_extent(ann.plane if extent.is_volume else None)
    if two_d and ann.frame is None and n > 1:
        err(
            "frame_missing",
            f"the image has {n} {'slices' if extent.is_volume else 'frames'}; "
            "expected a frame/slice index for 2D geometry",
        )
    elif ann.frame is not None and not 0 <= ann.frame < n:
        # a classification may name a frame (a frame-level label); without one it labels the item
        err("frame_out_of_range", f"frame/slice {ann.frame} is outside 0..{n - 1}")

    # geometry inside the image
    outside = [
        p for p in _points(g) if not (-_EPS <= p[0] <= width + _EPS and -_EPS <= p[1] <= height + _EPS)
    ]
    if outside:
        x, y = outside[0]
        err(
            "outside_image",
            f"point ({x:g}, {y:g}) lies outside the image [0, {width}] x [0, {height}] "
            f"({len(outside)} such point(s))",
        )
    if isinstance(g, RLE) and g.size != (height, width):
        err(
            "mask_size", f"mask size {list(g.size)} differs from the image's [{height}, {width}] (rows, cols)"
        )
    if isinstance(g, VolumeMask):
        expected = (extent.frames, extent.height, extent.width)
        if not extent.is_volume or g.shape != expected:
            err(
                "mask_size",
                f"volume mask shape {list(g.shape)} differs from the image's {list(expected)} "
                f"(slices, rows, cols){'' if extent.is_volume else '; the image is not a volume'}",
            )

    out = ann
    if isinstance(g, Polygon):
        reason = polygon_validity(g)
        if reason is not None and not repair:
            err(
                "polygon_invalid",
                f"polygon is not valid ({reason}); expected a simple ring enclosing an area",
            )
        elif reason is not None:
            try:
                fixed, warning = repair_polygon(g)
            except InvalidInput as exc:
                err("polygon_invalid", exc.message)
            else:
                err("polygon_repaired", str(warning), IssueSeverity.WARNING)
                out = replace(ann, geometry=fixed)

    # attributes
    if cls is not None:
        for spec in cls.attributes:
            if spec.id not in ann.attributes or ann.attributes[spec.id] is None:
                if spec.required and require_complete:
                    err(
                        "attribute_missing",
                        f"required attribute {spec.id!r} ({spec.type.value}) has no value",
                    )
                continue
            why = spec.check(ann.attributes[spec.id])
            if why is not None:
                err("attribute_invalid", f"attribute {spec.id!r}: {why}")
        declared = {a.id for a in cls.attributes}
        for key in ann.attributes:
            if key not in declared:
                err(
                    "attribute_unknown",
                    f"attribute {key!r} is not declared for class {cls.id!r}; declared: {sorted(declared)}",
                )
    return out, issues


#: Rules an annotation can come to break only because the schema changed after it was saved.
SCHEMA_RULES: frozenset[str] = frozenset(
    {"class_unknown", "type_not_allowed", "attribute_missing", "attribute_invalid", "attribute_unknown"}
)


def _soften(issue: ValidationIssue) -> ValidationIssue:
    return replace(
        issue,
        severity=IssueSeverity.WARNING,
        message=issue.message + " (unchanged since it was saved under an earlier schema version)",
    )


def validate_annotation_set(
    aset: AnnotationSet,
    schema: LabelSchema,
    extent: ImageExtent,
    *,
    previous: AnnotationSet | None = None,
    require_complete: bool = True,
    repair: bool = True,
) -> ValidationResult:
    """Validate every annotation and answer of ``aset``.

    ``previous`` is the set currently stored. A save is judged on what it changes: annotations whose
    id and class are unchanged from ``previous`` may keep a retired class, and annotations (and
    answers) left exactly as they were only get *warnings* for schema rules they broke since the
    schema evolved (``SCHEMA_RULES``), so old work never blocks a new save.
    ``require_complete=False`` (a draft) skips the required-attribute and required-answer checks.
    ``repair=False`` turns invalid polygons into errors instead of repairing them.
    """
    issues: list[ValidationIssue] = []
    anns: list[Annotation] = []
    for i, ann in enumerate(aset.annotations):
        prev = previous.get(ann.id) if previous is not None else None
        is_new = prev is None or prev.class_id != ann.class_id
        fixed, found = validate_annotation(
            ann, schema, extent, index=i, is_new=is_new, require_complete=require_complete, repair=repair
        )
        if prev is not None and prev == ann:
            found = [_soften(x) if x.rule in SCHEMA_RULES else x for x in found]
        anns.append(fixed)
        issues.extend(found)
    old_answers = previous.answers if previous is not None else {}
    for qid, answer in aset.answers.items():
        q = schema.get_question(qid)
        if q is None:
            untouched = qid in old_answers and old_answers[qid] == answer
            issues.append(
                ValidationIssue(
                    "answer_unknown",
                    f"answer to {qid!r}: no such question in schema {schema.name!r}; expected one "
                    f"of {[x.id for x in schema.questions]}",
                    severity=IssueSeverity.WARNING if untouched else IssueSeverity.ERROR,
                )
            )
            continue
        if answer is None:  # null means "not answered yet"
            continue
        why = q.check(list(answer) if isinstance(answer, tuple) else answer)
        if why is not None:
            issues.append(ValidationIssue("answer_invalid", f"answer to {qid!r}: {why}"))
    if require_complete:
        for q in schema.questions:
            if q.required and aset.answers.get(q.id) is None:
                issues.append(ValidationIssue("answer_missing", f"required question {q.id!r} has no answer"))
    return ValidationResult(replace(aset, annotations=tuple(anns)), tuple(issues))


def check_annotation_set(
    aset: AnnotationSet,
    schema: LabelSchema,
    extent: ImageExtent,
    *,
    previous: AnnotationSet | None = None,
    require_complete: bool = True,
    repair: bool = True,
) -> ValidationResult:
    """Like :func:`validate_annotation_set` but raises InvalidInput (422) when any error is found.

    Warnings (repaired polygons) are returned in the result for the caller to show or log.
    """
    result = validate_annotation_set(
        aset, schema, extent, previous=previous, require_complete=require_complete, repair=repair
    )
    errors = result.errors
    if errors:
        first = errors[0].message
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidInput(
            f"item {aset.item_id!r}: {len(errors)} annotation error(s): {first}{more}",
            detail={"item_id": aset.item_id, "issues": [e.to_dict() for e in result.issues]},
        )
    return result
