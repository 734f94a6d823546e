"""The one place medlabel asks for the time, so tests can move it (idle logoff, lockout, leases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["now", "set_offset", "reset"]

_offset = timedelta(0)


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC) + _offset


def set_offset(offset: timedelta) -> None:
    """Shift the clock (tests only)."""
    global _offset
    _offset = offset


def reset() -> None:
    set_offset(timedelta(0))
