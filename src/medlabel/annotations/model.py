"""Annotations, their provenance, annotation sets per item, optimistic concurrency and lineage.

An :class:`Annotation` is one drawn object (or one item-level class label) with a class id from the
label schema, its geometry in pixel space, where it sits (frame or slice and plane), its attribute
values and its :class:`Provenance`. An :class:`AnnotationSet` is everything saved for one item at
one ``version``; the item-level classification answers live on the set.

Edits never rewrite history: an edited annotation gets a new id and ``derived_from`` pointing at
the one it replaces (:func:`derive`), so a pre-label → annotator → reviewer chain can be walked with
:func:`lineage`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from medlabel.annotations.geometry import BBox, Point, Polygon, Polyline
from medlabel.annotations.masks import VolumeMask
from medlabel.annotations.rle import RLE
from medlabel.annotations.schema import AnnotationType
from medlabel.errors import InvalidInput, PreconditionFailed

__all__ = [
    "Plane",
    "Geometry",
    "ImageExtent",
    "Provenance",
    "Annotation",
    "AnnotationSet",
    "apply_save",
    "parse_if_match",
    "derive",
    "lineage",
]

Geometry = BBox | Polygon | Polyline | Point | RLE | VolumeMask | None


class Plane(StrEnum):
    """Viewing plane of a 2D annotation drawn on a volume."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


@dataclass(frozen=True, slots=True)
class ImageExtent:
    """Size of the annotated image: ``width`` columns, ``height`` rows, ``frames`` frames or slices.

    For a volume (``is_volume=True``) stored as ``(frames, height, width)`` = (slices, rows, columns),
    a 2D annotation on a plane lives in that plane's pixel space (see :meth:`plane_extent`).
    """

    width: int
    height: int
    frames: int = 1
    is_volume: bool = False

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or self.frames < 1:
            raise InvalidInput(
                f"image extent {self.width}x{self.height}x{self.frames} has a dimension below 1"
            )

    def plane_extent(self, plane: Plane | None) -> tuple[int, int, int]:
        """``(in-plane width, in-plane height, number of slices)`` for annotations on ``plane``.

        axial: x=column, y=row, slice index along frames; coronal: x=column, y=slice, index = row;
        sagittal: x=row, y=slice, index = column.
        """
        if plane is None or plane is Plane.AXIAL:
            return (self.width, self.height, self.frames)
        if plane is Plane.CORONAL:
            return (self.width, self.frames, self.height)
        return (self.height, self.frames, self.width)

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "is_volume": self.is_volume,
        }


def _obj(d: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise InvalidInput(f"{what} is {d!r:.80}; expected a JSON object")
    return d


def _opt_str(d: Mapping[str, Any], key: str, what: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise InvalidInput(f"{what}.{key} is {v!r:.80}; expected a string or null")
    return v


def _int(d: Mapping[str, Any], key: str, what: str, default: int | None) -> int | None:
    v = d.get(key, default)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise InvalidInput(f"{what}.{key} is {v!r:.80}; expected an integer")
    return v


def _dt(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidInput(f"provenance.{name} {value!r} is not an ISO 8601 date-time") from exc


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who or what made an annotation. Exactly one of ``created_by_user`` or ``model_name`` is set;
    ``model_version`` goes with ``model_name``. ``derived_from`` is the id of the annotation this one
    was edited from."""

    created_at: datetime
    created_by_user: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    derived_from: str | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        if (self.created_by_user is None) == (self.model_name is None):
            raise InvalidInput(
                f"provenance has created_by_user={self.created_by_user!r} "
                f"and model_name={self.model_name!r}; "
                "expected exactly one of them (a person or a model made it)"
            )
        if self.model_name is not None and not self.model_version:
            raise InvalidInput(f"provenance names model {self.model_name!r} without a model_version")
        if self.updated_at is not None and self.updated_at < self.created_at:
            raise InvalidInput(
                f"provenance updated_at {self.updated_at.isoformat()} is before created_at "
                f"{self.created_at.isoformat()}"
            )

    @property
    def is_model(self) -> bool:
        return self.model_name is not None

    @property
    def author(self) -> str:
        """``user:<id>`` or ``model:<name>@<version>``."""
        if self.created_by_user is not None:
            return f"user:{self.created_by_user}"
        return f"model:{self.model_name}@{self.model_version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "created_at": self.created_at.isoformat(),
            "created_by_user": self.created_by_user,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "derived_from": self.derived_from,
            "updated_at": None if self.updated_at is None else self.updated_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        d = _obj(d, "provenance")
        return cls(
            created_at=_dt(d.get("created_at"), "created_at"),
            created_by_user=_opt_str(d, "created_by_user", "provenance"),
            model_name=_opt_str(d, "model_name", "provenance"),
            model_version=_opt_str(d, "model_version", "provenance"),
            derived_from=_opt_str(d, "derived_from", "provenance"),
            updated_at=None if d.get("updated_at") is None else _dt(d["updated_at"], "updated_at"),
        )


_GEOMETRY_KIND: dict[AnnotationType, tuple[type, ...]] = {
    AnnotationType.BBOX: (BBox,),
    AnnotationType.POLYGON: (Polygon,),
    AnnotationType.POLYLINE: (Polyline,),
    AnnotationType.POINT: (Point,),
    AnnotationType.MASK: (RLE, VolumeMask),
    AnnotationType.CLASSIFICATION: (type(None),),
}


@dataclass(frozen=True, slots=True)
class Annotation:
    """One annotation. ``frame`` is the frame index (multi-frame image) or the slice index on
    ``plane`` (volume); both are ``None`` for single-frame images, item classifications and 3D masks
    (a :class:`VolumeMask` covers the whole volume)."""

    id: str
    type: AnnotationType
    class_id: str
    geometry: Geometry
    provenance: Provenance
    frame: int | None = None
    plane: Plane | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidInput("annotation id is empty; expected a stable non-empty id")
        expected = _GEOMETRY_KIND[self.type]
        if not isinstance(self.geometry, expected):
            names = " or ".join("no geometry" if t is type(None) else t.__name__ for t in expected)
            raise InvalidInput(
                f"annotation {self.id!r} of type {self.type.value} has geometry "
                f"{type(self.geometry).__name__}; expected {names}"
            )
        if self.frame is not None and (isinstance(self.frame, bool) or not isinstance(self.frame, int)):
            raise InvalidInput(
                f"annotation {self.id!r} has frame {self.frame!r}; expected an integer or null"
            )
        if self.frame is not None and self.frame < 0:
            raise InvalidInput(f"annotation {self.id!r} has frame {self.frame}; frames count from 0")
        if isinstance(self.geometry, VolumeMask) and (self.frame is not None or self.plane is not None):
            raise InvalidInput(f"annotation {self.id!r} is a 3D mask; it takes no frame or plane")

    def to_dict(self) -> dict[str, Any]:
        g = self.geometry
        if g is None:
            geo: dict[str, Any] | None = None
        elif isinstance(g, RLE):
            geo = {"rle": g.to_dict()}
        elif isinstance(g, VolumeMask):
            geo = {"volume": g.to_dict()}
        else:
            geo = g.to_dict()
        return {
            "id": self.id,
            "type": self.type.value,
            "class_id": self.class_id,
            "geometry": geo,
            "frame": self.frame,
            "plane": None if self.plane is None else self.plane.value,
            "attributes": dict(self.attributes),
            "provenance": self.provenance.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Annotation:
        d = _obj(d, "annotation")
        aid = d.get("id")
        if not isinstance(aid, str):
            raise InvalidInput(f"annotation id {aid!r:.80} is not a string")
        try:
            atype = AnnotationType(str(d.get("type")))
        except ValueError:
            allowed = ", ".join(t.value for t in AnnotationType)
            raise InvalidInput(f"annotation {aid!r} type {d.get('type')!r} is not one of {allowed}") from None
        class_id = d.get("class_id")
        if not isinstance(class_id, str):
            raise InvalidInput(f"annotation {aid!r} class_id {class_id!r:.80} is not a string")
        raw = d.get("geometry")
        geometry: Geometry
        if atype is AnnotationType.CLASSIFICATION or raw is None:
            geometry = None
        elif atype is AnnotationType.MASK:
            m = _obj(raw, f"annotation {aid!r} mask geometry")
            if "volume" in m:
                geometry = VolumeMask.from_dict(m["volume"])
            elif "rle" in m:
                geometry = RLE.from_dict(m["rle"])
            else:
                raise InvalidInput(
                    f"annotation {aid!r} mask geometry has neither 'rle' (2D) nor 'volume' (3D)"
                )
        else:
            kind = {
                AnnotationType.BBOX: BBox,
                AnnotationType.POLYGON: Polygon,
                AnnotationType.POLYLINE: Polyline,
                AnnotationType.POINT: Point,
            }[atype]
            geometry = kind.from_dict(raw)  # type: ignore[attr-defined]
        plane = d.get("plane")
        try:
            plane_v = None if plane is None else Plane(plane)
        except ValueError:
            raise InvalidInput(
                f"annotation {aid!r} plane {plane!r} is not one of axial, coronal, sagittal"
            ) from None
        attrs = d.get("attributes") or {}
        if not isinstance(attrs, Mapping):
            raise InvalidInput(f"annotation {aid!r} attributes {attrs!r:.80} are not a mapping")
        return cls(
            id=aid,
            type=atype,
            class_id=class_id,
            geometry=geometry,
            provenance=Provenance.from_dict(d.get("provenance")),  # type: ignore[arg-type]
            frame=_int(d, "frame", f"annotation {aid!r}", None),
            plane=plane_v,
            attributes=dict(attrs),
        )


@dataclass(frozen=True, slots=True)
class AnnotationSet:
    """All annotations and item-level answers saved for one item at one version.

    ``version`` starts at 1 with the first save (0 means nothing saved yet); ``schema_version`` is
    the label-schema version the set was validated against.
    """

    item_id: str
    version: int
    annotations: tuple[Annotation, ...]
    schema_version: int
    answers: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, a in enumerate(self.annotations):
            if a.id in seen:
                raise InvalidInput(f"annotations[{i}] repeats id {a.id!r}; ids must be unique within an item")
            seen.add(a.id)

    def get(self, annotation_id: str) -> Annotation | None:
        return next((a for a in self.annotations if a.id == annotation_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "version": self.version,
            "schema_version": self.schema_version,
            "annotations": [a.to_dict() for a in self.annotations],
            "answers": {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in self.answers.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AnnotationSet:
        d = _obj(d, "annotation set")
        anns = d.get("annotations") or []
        if not isinstance(anns, list | tuple):
            raise InvalidInput(f"annotations {anns!r:.80} are not a list")
        answers = d.get("answers") or {}
        if not isinstance(answers, Mapping):
            raise InvalidInput(f"answers {answers!r:.80} are not a mapping of question id to choice(s)")
        item_id = d.get("item_id", "")
        if not isinstance(item_id, str):
            raise InvalidInput(f"item_id {item_id!r:.80} is not a string")
        return cls(
            item_id=item_id,
            version=_int(d, "version", "annotation set", 0) or 0,
            annotations=tuple(Annotation.from_dict(a) for a in anns),
            schema_version=_int(d, "schema_version", "annotation set", 1) or 1,
            answers={str(k): (tuple(v) if isinstance(v, list | tuple) else v) for k, v in answers.items()},
        )


_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_if_match(value: int | str | None) -> int | None:
    """Read an ``If-Match`` value: ``3``, ``"3"``, ``'"3"'`` or ``'W/"3"'`` → 3; None stays None."""
    if value is None or isinstance(value, int):
        return value
    m = _ETAG.match(value)
    if not m:
        raise InvalidInput(f"If-Match {value!r} is not a version number or an ETag like '\"3\"'")
    return int(m.group(1))


def apply_save(current_version: int, if_match: int | str | None, new: AnnotationSet) -> AnnotationSet:
    """Optimistic concurrency for a save: returns ``new`` stamped ``current_version + 1``.

    ``if_match`` is the version the client edited. It may be omitted only for the first save
    (``current_version == 0``); otherwise a missing or stale value raises PreconditionFailed (412)
    with ``detail={"current_version": current_version, "if_match": ...}`` so the client can reload.
    """
    expected = parse_if_match(if_match)
    if expected is None and current_version == 0:
        return replace(new, version=1)
    if expected != current_version:
        raise PreconditionFailed(
            f"item {new.item_id!r} is at version {current_version}, but the save was based on "
            f"{'no version' if expected is None else f'version {expected}'}; reload and reapply the edits",
            detail={"current_version": current_version, "if_match": expected, "item_id": new.item_id},
        )
    return replace(new, version=current_version + 1)


def derive(
    source: Annotation,
    new_id: str,
    *,
    at: datetime,
    user: str | None = None,
    model: tuple[str, str] | None = None,
    **changes: Any,
) -> Annotation:
    """An edited copy of ``source`` with id ``new_id`` whose provenance records who edited it
    (``user`` or ``model=(name, version)``), when, and ``derived_from=source.id``. ``changes`` may
    set geometry, class_id, attributes, frame or plane."""
    allowed = {"geometry", "class_id", "attributes", "frame", "plane", "type"}
    bad = set(changes) - allowed
    if bad:
        raise InvalidInput(f"derive() cannot change {sorted(bad)}; allowed: {sorted(allowed)}")
    prov = Provenance(
        created_at=at,
        created_by_user=user,
        model_name=None if model is None else model[0],
        model_version=None if model is None else model[1],
        derived_from=source.id,
    )
    return replace(source, id=new_id, provenance=prov, **changes)


def lineage(
    annotation_id: str, known: Mapping[str, Annotation] | Sequence[Annotation]
) -> tuple[Annotation, ...]:
    """The chain ending at ``annotation_id``, oldest first, following ``derived_from``.

    Stops at an annotation without a parent or whose parent is not in ``known`` (pruned history).
    Raises InvalidInput on an unknown start id or a cycle.
    """
    index = known if isinstance(known, Mapping) else {a.id: a for a in known}
    if annotation_id not in index:
        raise InvalidInput(f"annotation {annotation_id!r} is not among the {len(index)} known annotations")
    chain: list[Annotation] = []
    seen: set[str] = set()
    current: str | None = annotation_id
    while current is not None and current in index:
        if current in seen:
            raise InvalidInput(
                f"annotation lineage has a cycle through {current!r}; derived_from must point back in time"
            )
        seen.add(current)
        a = index[current]
        chain.append(a)
        current = a.provenance.derived_from
    chain.reverse()
    return tuple(chain)
