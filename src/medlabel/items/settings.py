"""A project's de-identification settings, kept in ``Project.settings["deid"]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from medlabel.deid import IMPLEMENTED_OPTIONS
from medlabel.storage.cache import RowCache
from medlabel.storage.models import Project

__all__ = ["DeidSettings", "DEFAULT_DEID_OPTIONS", "deid_settings", "cached_deid_settings", "remember_deid_settings"]

#: Options on by default: dates shifted per patient, characteristics kept, descriptors cleaned.
DEFAULT_DEID_OPTIONS: tuple[str, ...] = (
    "retain_longitudinal_modified_dates",
    "retain_patient_characteristics",
    "clean_descriptors",
)


@dataclass(frozen=True, slots=True)
class DeidSettings:
    enabled: bool = True
    options: tuple[str, ...] = DEFAULT_DEID_OPTIONS
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"enabled": self.enabled, "options": list(self.options), "reason": self.reason}


def deid_settings(project: Project) -> DeidSettings:
    """The project's settings; de-identification is on unless an administrator turned it off."""
    raw = (project.settings or {}).get("deid") or {}
    options = raw.get("options")
    valid = {o.value for o in IMPLEMENTED_OPTIONS}
    return DeidSettings(
        enabled=bool(raw.get("enabled", True)),
        options=tuple(o for o in options if o in valid)
        if isinstance(options, list)
        else DEFAULT_DEID_OPTIONS,
        reason=str(raw.get("reason", "")),
    )


_cache = RowCache("project_deid", {Project: lambda p: [p.id]})
"""project id -> DeidSettings, for a couple of seconds (``medlabel.storage.cache``): a change of
the project in this process drops the entry at once, other processes see it within the TTL."""


def cached_deid_settings(engine: Any, project_id: int) -> DeidSettings | None:
    """The project's settings from the in-process cache (no database), or None."""
    found: DeidSettings | None = _cache.get(engine, project_id)
    return found


def remember_deid_settings(session: Session, project: Project) -> DeidSettings:
    """:func:`deid_settings` of a project read through ``session``, cached for the next requests."""
    found = deid_settings(project)
    _cache.put(session, project.id, found)
    return found
