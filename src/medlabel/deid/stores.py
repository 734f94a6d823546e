"""Contracts for the state a de-identification keeps across imports, and in-memory versions.

The service ring implements these over database tables (the pseudonym map and the per-patient
date offsets must survive restarts and be shared by every import of a project); the in-memory
versions serve the tests and the ``medlabel deid IN OUT`` folder tool.

For de-identifying in several processes, the parent wraps its stores in ``Recording*`` stores
and hands what they answered to the workers as ``Mapped*`` stores: read-only maps that raise
:class:`UnknownPatient` for a patient the parent has not resolved yet (the parent then does that
file itself), so every pseudonym and offset still comes from the one real store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from medlabel.errors import ConfigurationError

__all__ = [
    "PseudonymStore",
    "DateOffsetStore",
    "InMemoryPseudonymStore",
    "InMemoryDateOffsetStore",
    "MappedPseudonymStore",
    "MappedDateOffsetStore",
    "RecordingPseudonymStore",
    "RecordingDateOffsetStore",
    "UnknownPatient",
    "derive_offset_days",
]


@runtime_checkable
class PseudonymStore(Protocol):
    """Maps an original patient identity to a stable pseudonym."""

    def get_or_create(self, original_patient_id: str, issuer: str) -> str:
        """The pseudonym for (Patient ID, Issuer of Patient ID); created on first sight.

        Must return the same pseudonym for the same pair forever, and different pseudonyms for
        different pairs. The pseudonym becomes Patient ID (0010,0020) and Patient's Name
        (0010,0010), so it must be at most 64 characters (LO) and must not contain ``\\``.
        """
        ...


@runtime_checkable
class DateOffsetStore(Protocol):
    """Holds one date offset per (pseudonymised) patient, for the Modified Dates option."""

    def get_or_create(self, pseudonym: str) -> int:
        """Offset in whole days added to every date of this patient; created on first sight.

        Must be non-zero and stable for the pseudonym.
        """
        ...


class InMemoryPseudonymStore:
    """Sequential pseudonyms ``{prefix}{n:06d}`` kept in a dict (tests, folder tool)."""

    def __init__(self, prefix: str = "ANON-") -> None:
        if "\\" in prefix or len(prefix) > 40:
            raise ConfigurationError(
                f"pseudonym prefix {prefix!r} must be at most 40 characters without '\\' "
                "(Patient ID is LO, PS3.5 6.2)"
            )
        self._prefix = prefix
        self._map: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get_or_create(self, original_patient_id: str, issuer: str) -> str:
        key = (original_patient_id, issuer)
        with self._lock:
            found = self._map.get(key)
            if found is None:
                found = f"{self._prefix}{len(self._map) + 1:06d}"
                self._map[key] = found
            return found

    def items(self) -> list[tuple[tuple[str, str], str]]:
        """((original id, issuer), pseudonym) pairs, in creation order."""
        return list(self._map.items())


def derive_offset_days(secret: bytes, pseudonym: str, *, min_days: int = 365, max_days: int = 3650) -> int:
    """A deterministic offset for ``pseudonym``: −``max_days`` … −``min_days`` days.

    HMAC-SHA256(secret, pseudonym) taken modulo the range; dates move into the past by at least a
    year so that a shifted date is never mistaken for a real recent one.
    """
    if not 0 < min_days <= max_days:
        raise ConfigurationError(f"offset range {min_days}..{max_days} days must satisfy 0 < min <= max")
    digest = hmac.new(secret, b"date-offset\x00" + pseudonym.encode("utf-8"), hashlib.sha256).digest()
    span = max_days - min_days + 1
    return -(min_days + int.from_bytes(digest[:8], "big") % span)


class InMemoryDateOffsetStore:
    """Offsets in a dict; random (``secrets``) unless a ``secret`` makes them deterministic."""

    def __init__(self, secret: bytes | None = None, *, min_days: int = 365, max_days: int = 3650) -> None:
        if not 0 < min_days <= max_days:
            raise ConfigurationError(f"offset range {min_days}..{max_days} days must satisfy 0 < min <= max")
        self._secret = secret
        self._min = min_days
        self._max = max_days
        self._map: dict[str, int] = {}
        self._lock = threading.Lock()

    def get_or_create(self, pseudonym: str) -> int:
        with self._lock:
            found = self._map.get(pseudonym)
            if found is None:
                if self._secret is not None:
                    found = derive_offset_days(
                        self._secret, pseudonym, min_days=self._min, max_days=self._max
                    )
                else:
                    found = -(self._min + secrets.randbelow(self._max - self._min + 1))
                self._map[pseudonym] = found
            return found

    def items(self) -> list[tuple[str, int]]:
        return list(self._map.items())


class UnknownPatient(LookupError):
    """A ``Mapped*`` store was asked for a patient it was not given."""


class MappedPseudonymStore:
    """Read-only pseudonyms resolved elsewhere: ``(Patient ID, Issuer) → pseudonym``."""

    def __init__(self, known: Mapping[tuple[str, str], str]) -> None:
        self._known = dict(known)

    def get_or_create(self, original_patient_id: str, issuer: str) -> str:
        try:
            return self._known[(original_patient_id, issuer)]
        except KeyError:
            raise UnknownPatient("patient not resolved by the parent store") from None


class MappedDateOffsetStore:
    """Read-only date offsets resolved elsewhere: ``pseudonym → days``."""

    def __init__(self, known: Mapping[str, int]) -> None:
        self._known = dict(known)

    def get_or_create(self, pseudonym: str) -> int:
        try:
            return self._known[pseudonym]
        except KeyError:
            raise UnknownPatient("date offset not resolved by the parent store") from None


class RecordingPseudonymStore:
    """Passes through to ``inner`` and remembers every answer in ``known``."""

    def __init__(self, inner: PseudonymStore) -> None:
        self._inner = inner
        self.known: dict[tuple[str, str], str] = {}

    def get_or_create(self, original_patient_id: str, issuer: str) -> str:
        found = self._inner.get_or_create(original_patient_id, issuer)
        self.known[(original_patient_id, issuer)] = found
        return found


class RecordingDateOffsetStore:
    """Passes through to ``inner`` and remembers every answer in ``known``."""

    def __init__(self, inner: DateOffsetStore) -> None:
        self._inner = inner
        self.known: dict[str, int] = {}

    def get_or_create(self, pseudonym: str) -> int:
        found = self._inner.get_or_create(pseudonym)
        self.known[pseudonym] = found
        return found
