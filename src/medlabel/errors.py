"""One exception hierarchy for the whole of medlabel.

Every error carries a stable machine-readable ``code`` and the HTTP ``status`` it maps to;
the API turns them into ``{"error": {"code", "message", "detail"}}`` in exactly one place
(``medlabel.api.errors``). The pure core raises these too, so they must not import anything
outside the standard library.

Messages explain: the value found, what was expected and, for DICOM, the tag or PS3 section.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MedlabelError",
    "InvalidInput",
    "NotFound",
    "Conflict",
    "PreconditionFailed",
    "Forbidden",
    "Unauthorized",
    "TooLarge",
    "RateLimited",
    "Locked",
    "UnsupportedMedia",
    "DicomError",
    "Quarantined",
    "ConfigurationError",
]


class MedlabelError(Exception):
    """Base of every error medlabel raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, detail: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}


class InvalidInput(MedlabelError):
    """The caller sent something that breaks a rule (422)."""

    status = 422
    code = "invalid_input"


class NotFound(MedlabelError):
    """No such object, or one the caller may not know exists (404)."""

    status = 404
    code = "not_found"


class Conflict(MedlabelError):
    """The request conflicts with the current state (409)."""

    status = 409
    code = "conflict"


class PreconditionFailed(MedlabelError):
    """An ``If-Match`` version was stale (412); ``detail`` carries the current version."""

    status = 412
    code = "precondition_failed"


class Forbidden(MedlabelError):
    """Authenticated, but the role does not allow this (403)."""

    status = 403
    code = "forbidden"


class Unauthorized(MedlabelError):
    """No valid session or token (401)."""

    status = 401
    code = "unauthorized"


class TooLarge(MedlabelError):
    """A body, an archive or an image exceeds a configured limit (413)."""

    status = 413
    code = "too_large"


class RateLimited(MedlabelError):
    """Too many attempts in a window (429)."""

    status = 429
    code = "rate_limited"


class Locked(MedlabelError):
    """The account is locked after repeated failures (423)."""

    status = 423
    code = "locked"


class UnsupportedMedia(MedlabelError):
    """A file type or transfer syntax we cannot read (415)."""

    status = 415
    code = "unsupported_media"


class DicomError(InvalidInput):
    """A DICOM file breaks the standard in a way we cannot tolerate; name the tag or PS3 section."""

    code = "dicom_error"


class Quarantined(MedlabelError):
    """An image was held back for a human to clear (e.g. burned-in annotation)."""

    status = 409
    code = "quarantined"


class ConfigurationError(MedlabelError):
    """The deployment is misconfigured (500)."""

    status = 500
    code = "configuration_error"
