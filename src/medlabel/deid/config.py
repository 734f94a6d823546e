"""The frozen configuration of a de-identification run."""

from __future__ import annotations

from dataclasses import dataclass

from medlabel.deid.profile import CompoundPolicy, Option
from medlabel.deid.safe_private import SAFE_PRIVATE, SafePrivate
from medlabel.errors import ConfigurationError

__all__ = ["DeidConfig", "IMPLEMENTED_OPTIONS"]

#: Options of Table E.1-1 this engine implements. Clean Structured Content and Clean Graphics
#: are not implemented (their attributes are handled by the Basic Profile action instead).
IMPLEMENTED_OPTIONS: frozenset[Option] = frozenset(
    {
        Option.RETAIN_SAFE_PRIVATE,
        Option.RETAIN_UIDS,
        Option.RETAIN_DEVICE_IDENTITY,
        Option.RETAIN_INSTITUTION_IDENTITY,
        Option.RETAIN_PATIENT_CHARACTERISTICS,
        Option.RETAIN_LONGITUDINAL_FULL_DATES,
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        Option.CLEAN_DESCRIPTORS,
    }
)

_MIN_SECRET = 16


@dataclass(frozen=True, slots=True)
class DeidConfig:
    """What a de-identification run does; one per project.

    ``project_secret`` keys every derived value (UIDs, dummy AE titles, file names): the same
    secret gives the same output for the same input, so keep it per project and secret.
    """

    #: HMAC key, at least 16 bytes; never stored in the output.
    project_secret: bytes
    #: PS3.15 E.3 options on top of the Basic Profile.
    options: frozenset[Option] = frozenset()
    #: Private attributes kept when ``Option.RETAIN_SAFE_PRIVATE`` is on.
    safe_private: tuple[SafePrivate, ...] = SAFE_PRIVATE
    #: How compound action codes (``X/Z``, ``X/D`` …) are resolved.
    compound_policy: CompoundPolicy = CompoundPolicy.CONFORMANT
    #: Replace UIDs that Table E.1-1 does not name unless they are well-known (PS3.6 Annex A)
    #: or name a class (``…ClassUID``); defends against UIDs that embed identifiers.
    remap_unlisted_uids: bool = True
    #: Quarantine images whose Burned In Annotation is absent and whose modality or SOP class
    #: usually carries burned-in text (``medlabel.deid.quarantine``).
    quarantine_risky_modalities: bool = True
    #: Text for De-identification Method (0012,0063); the option names are appended.
    method_prefix: str = "medlabel PS3.15 Annex E"

    def __post_init__(self) -> None:
        if not isinstance(self.project_secret, bytes) or len(self.project_secret) < _MIN_SECRET:
            n = len(self.project_secret) if isinstance(self.project_secret, bytes) else "non-bytes"
            raise ConfigurationError(
                f"project_secret must be at least {_MIN_SECRET} bytes, got {n}",
                detail={"field": "project_secret"},
            )
        opts = frozenset(Option(o) for o in self.options)
        object.__setattr__(self, "options", opts)
        missing = opts - IMPLEMENTED_OPTIONS
        if missing:
            raise ConfigurationError(
                f"option(s) {sorted(o.value for o in missing)} are not implemented; "
                f"expected a subset of {sorted(o.value for o in IMPLEMENTED_OPTIONS)} (PS3.15 E.3)",
                detail={"field": "options"},
            )
        if {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES} <= opts:
            raise ConfigurationError(
                "Retain Longitudinal Temporal Information Full Dates and Modified Dates options "
                "exclude each other (PS3.15 E.3.6); choose one",
                detail={"field": "options"},
            )

    def has(self, option: Option) -> bool:
        return option in self.options
