"""Date shifting (PS3.5 6.2 DA/DT) and UID replacement (PS3.5 B.2)."""

from __future__ import annotations

import re

import pytest

from medlabel.deid import derive_offset_days, remap_uid
from medlabel.deid.dates import shift_da, shift_dt
from medlabel.errors import DicomError

UID_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20200301", -1, "20200229"),  # leap day
        ("20210301", -1, "20210228"),
        ("20201231", 1, "20210101"),
        ("2020", -400, "2018"),  # partial: first day of the year, same precision
        ("202003", -1, "202002"),
        ("2020.03.01", -1, "20200229"),  # ACR-NEMA form
        ("20200101-20200110", -10, "20191222-20191231"),  # range
        ("", -10, ""),
    ],
)
def test_shift_da(value: str, days: int, expected: str) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20200301120000", -1, "20200229120000"),
        ("20200301120000.123456+0100", -1, "20200229120000.123456+0100"),
        ("20200301235959-0500", 1, "20200302235959-0500"),  # UTC offset kept, not a range
        ("2020", -400, "2018"),
        ("20200301", 30, "20200331"),
        ("2020030112", -1, "2020022912"),
        ("20200101-20200201", -1, "20191231-20200131"),
    ],
)
def test_shift_dt(value: str, days: int, expected: str) -> None:
    assert shift_dt(value, days) == expected


@pytest.mark.parametrize("value", ["2020-03-01", "yesterday", "20201341"])
def test_shift_rejects_invalid(value: str) -> None:
    with pytest.raises(DicomError, match="DA"):
        shift_da(value, 1)


def test_remap_uid_deterministic_and_valid() -> None:
    a = remap_uid(b"k" * 16, "1.2.3.4")
    assert a == remap_uid(b"k" * 16, "1.2.3.4")
    assert a != remap_uid(b"j" * 16, "1.2.3.4")
    assert a != remap_uid(b"k" * 16, "1.2.3.5")
    assert a.startswith("2.25.") and len(a) <= 64 and UID_RE.match(a)
    n = int(a[5:])
    assert (n >> 76) & 0xF == 8  # UUID version 8
    assert (n >> 62) & 0x3 == 0b10  # RFC 9562 variant
    assert remap_uid(b"k" * 16, "") == ""


def test_derive_offset_days() -> None:
    a = derive_offset_days(b"s" * 16, "ANON-000001")
    assert a == derive_offset_days(b"s" * 16, "ANON-000001")
    assert -3650 <= a <= -365
    values = {derive_offset_days(b"s" * 16, f"ANON-{i:06d}") for i in range(50)}
    assert len(values) > 40
