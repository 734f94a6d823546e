"""Error records that reviewers, validators and auditors attach to a rejection.

A project starts from the default taxonomy (``mislabel``, ``omission``, ``false_positive``,
``boundary``, ``attribute``, ``inconsistency``, ``other``) and may add its own categories; it may
not remove the defaults, so error statistics stay comparable across projects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from medlabel.errors import InvalidInput

__all__ = [
    "DEFAULT_CATEGORIES",
    "Severity",
    "ErrorTaxonomy",
    "ErrorLocation",
    "ErrorRecord",
    "check_records",
]

DEFAULT_CATEGORIES: tuple[str, ...] = (
    "mislabel",
    "omission",
    "false_positive",
    "boundary",
    "attribute",
    "inconsistency",
    "other",
)
_CATEGORY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class Severity(StrEnum):
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class ErrorTaxonomy:
    """The error categories a project accepts: the defaults plus ``extra``."""

    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen = set(DEFAULT_CATEGORIES)
        for c in self.extra:
            if not _CATEGORY.match(c):
                raise InvalidInput(
                    f"error category {c!r} is not a lower-case identifier (a-z, 0-9, '_', max 40)"
                )
            if c in seen:
                raise InvalidInput(f"error category {c!r} is already in the taxonomy; categories are unique")
            seen.add(c)

    @property
    def categories(self) -> tuple[str, ...]:
        return DEFAULT_CATEGORIES + self.extra

    def extend(self, *names: str) -> ErrorTaxonomy:
        return ErrorTaxonomy(self.extra + tuple(names))

    def __contains__(self, name: object) -> bool:
        return name in self.categories


@dataclass(frozen=True, slots=True)
class ErrorLocation:
    """Where on the image the error is: pixel ``(x, y)`` and, for stacks/volumes, the frame/slice."""

    x: float
    y: float
    frame: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "frame": self.frame}


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    category: str
    severity: Severity
    comment: str = ""
    annotation_id: str | None = None
    location: ErrorLocation | None = None

    def check(self, taxonomy: ErrorTaxonomy) -> None:
        """Raise InvalidInput when the category is not in ``taxonomy``."""
        if self.category not in taxonomy:
            raise InvalidInput(
                f"error category {self.category!r} is not in the project's taxonomy; expected one of "
                f"{list(taxonomy.categories)}",
                detail={"category": self.category, "allowed": list(taxonomy.categories)},
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "severity": self.severity.value,
            "comment": self.comment,
            "annotation_id": self.annotation_id,
            "location": None if self.location is None else self.location.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorRecord:
        try:
            sev = Severity(str(d.get("severity")))
        except ValueError:
            raise InvalidInput(
                f"error severity {d.get('severity')!r} is not one of minor, major, critical"
            ) from None
        loc = d.get("location")
        location = None
        if loc is not None:
            try:
                location = ErrorLocation(float(loc["x"]), float(loc["y"]), loc.get("frame"))
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidInput(f"error location {loc!r} is not {{x, y, frame?}}") from exc
        return cls(
            category=str(d.get("category", "")),
            severity=sev,
            comment=str(d.get("comment") or ""),
            annotation_id=d.get("annotation_id"),
            location=location,
        )


def check_records(records: Iterable[ErrorRecord], taxonomy: ErrorTaxonomy) -> None:
    for r in records:
        r.check(taxonomy)
