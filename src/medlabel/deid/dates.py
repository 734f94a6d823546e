"""Shifting DA and DT values by a whole number of days (Modified Dates option, PS3.15 E.3.6).

The offset is whole days, so TM values and the time and UTC-offset parts of DT are unchanged;
intervals between events of one patient are preserved exactly.

Partial values (PS3.5 6.2: a DT may stop after the year, month, day, hour …; old DA values may
be ``YYYY`` or ``YYYYMM``) are shifted as the first day of the period they name and written back
with the same precision: ``2020`` shifted by −400 days → 2020-01-01 − 400 d = 2018-11-27 → ``2018``.
Range values (``A-B``, used in queries) shift both ends. The legacy ACR-NEMA ``YYYY.MM.DD`` form
of DA is accepted and written back as ``YYYYMMDD``.
"""

from __future__ import annotations

import datetime as _dt
import re

from medlabel.errors import DicomError

__all__ = ["shift_da", "shift_dt"]

_DA = re.compile(r"^(\d{4})(?:\.?(\d{2}))?(?:\.?(\d{2}))?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")


def _shift_date(year: str, month: str | None, day: str | None, days: int, original: str, vr: str) -> str:
    try:
        d = _dt.date(int(year), int(month or 1), int(day or 1))
        shifted = d + _dt.timedelta(days=days)
    except (ValueError, OverflowError) as exc:
        raise DicomError(
            f"cannot shift {vr} value {original!r} by {days} days: {exc} (PS3.5 6.2, {vr})",
            detail={"value": original, "vr": vr},
        ) from exc
    out = f"{shifted.year:04d}"
    if month is not None:
        out += f"{shifted.month:02d}"
    if day is not None:
        out += f"{shifted.day:02d}"
    return out


def _split_range(value: str) -> list[str]:
    return value.split("-") if value.count("-") == 1 and not value.startswith("-") else [value]


def shift_da(value: str, days: int) -> str:
    """Shift one DA value (``YYYYMMDD``, partial or range) by ``days``; raises ``DicomError``."""
    parts = []
    for part in _split_range(value.strip()):
        if part == "":
            parts.append("")
            continue
        m = _DA.match(part)
        if m is None:
            raise DicomError(
                f"DA value {value!r} is not YYYYMMDD (PS3.5 6.2, DA)", detail={"value": value, "vr": "DA"}
            )
        parts.append(_shift_date(m.group(1), m.group(2), m.group(3), days, value, "DA"))
    return "-".join(parts)


def shift_dt(value: str, days: int) -> str:
    """Shift one DT value (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``, any precision) by ``days``."""
    stripped = value.strip()
    if stripped.count("-") == 1 and _DT.match(stripped) is None:
        pieces = stripped.split("-")
    else:
        pieces = [stripped]
    out = []
    for part in pieces:
        if part == "":
            out.append("")
            continue
        m = _DT.match(part)
        if m is None:
            raise DicomError(
                f"DT value {value!r} is not YYYYMMDDHHMMSS.FFFFFF&ZZXX (PS3.5 6.2, DT)",
                detail={"value": value, "vr": "DT"},
            )
        year, month, day, time, tz = m.groups()
        if day is not None and month is None:  # pragma: no cover - regex makes this impossible
            raise DicomError(f"DT value {value!r} has a day without a month (PS3.5 6.2, DT)")
        date = _shift_date(year, month, day, days, value, "DT")
        out.append(date + (time or "") + (tz or ""))
    return "-".join(out)
