"""Named registry of job kinds. Built-ins and plug-ins register the same way.

A handler receives a ``JobContext`` (the job's id, parameters, a progress callback and the
runtime) and returns a JSON-able result dict. It should be a thin wrapper over a service:
load by id in one transaction, compute with pure code, save in another.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medlabel.errors import InvalidInput

if TYPE_CHECKING:
    from medlabel.runtime import Runtime

__all__ = ["JobContext", "JobHandler", "job_kind", "get_handler", "registered_kinds", "load_plugins"]


@dataclass
class JobContext:
    job_id: str
    params: dict[str, Any]
    attempt: int
    runtime: Runtime
    _progress: Callable[[int, str], None] = field(repr=False, default=lambda p, m: None)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def progress(self, percent: float, message: str = "") -> None:
        self._progress(max(0, min(100, int(percent))), message)


JobHandler = Callable[[JobContext], dict[str, Any] | None]

_REGISTRY: dict[str, JobHandler] = {}


def job_kind(name: str) -> Callable[[JobHandler], JobHandler]:
    def deco(fn: JobHandler) -> JobHandler:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"job kind {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = fn
        return fn

    return deco


def get_handler(name: str) -> JobHandler:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidInput(
            f"unknown job kind {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}"
        ) from None


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


def load_plugins(spec: str | None) -> None:
    """Import the comma-separated modules in ``MEDLABEL_PLUGINS`` so they can register kinds."""
    for name in (spec or "").split(","):
        name = name.strip()
        if name:
            importlib.import_module(name)
