"""Look-ups over the generated PS3.15 Table E.1-1 (``profile_table``) and action resolution.

PS3.15 E.1.1 defines the action codes:

* ``D`` replace with a non-zero-length dummy value consistent with the VR;
* ``Z`` replace with a zero-length value (or a dummy);
* ``X`` remove;
* ``K`` keep (sequences are still cleaned recursively);
* ``C`` clean: replace with values of similar meaning known not to identify;
* ``U`` replace with a non-zero-length UID, internally consistent within a set of instances;
* compound codes (``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``) choose the least destructive
  alternative only when the IOD requires it (Type 1 or 2); ``X/Z/U*`` additionally allows
  keeping a sequence with every UID inside it replaced.

Without the IOD module tables the engine cannot know the attribute's Type in the object at hand,
so a :class:`CompoundPolicy` decides once for all compound codes (see ``resolve_action``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from pydicom.tag import BaseTag

from medlabel.deid.profile_table import EDITION, OPTION_COLUMNS, ROWS

__all__ = [
    "EDITION",
    "Option",
    "CompoundPolicy",
    "ProfileRow",
    "rows",
    "lookup",
    "resolve_action",
]


class Option(enum.StrEnum):
    """The option columns of Table E.1-1 (PS3.15 E.3); values are the generated column keys."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"


assert {o.value for o in Option} == set(OPTION_COLUMNS), "profile_table columns changed: update Option"


class CompoundPolicy(enum.StrEnum):
    """How compound action codes are resolved when the attribute's Type is unknown.

    ``CONFORMANT`` (default) keeps the object valid whatever the IOD says: ``X/Z`` → ``Z``,
    ``X/D``, ``Z/D``, ``X/Z/D`` → ``D``, ``X/Z/U*`` → keep with UIDs replaced.
    ``MINIMAL`` keeps as little as possible: the left-most code (``X`` or ``Z``); ``X/Z/U*`` → ``X``
    (references to other instances are then lost).
    """

    CONFORMANT = "conformant"
    MINIMAL = "minimal"


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One row of Table E.1-1."""

    tag: str  #: 8 hex digits, ``x`` for masked digits, or ``PRIVATE``
    name: str
    retired: bool
    in_std_comp_iod: bool
    basic: str  #: Basic Profile action code
    options: Mapping[str, str]  #: option column → action code

    def matches(self, tag: int) -> bool:
        """Whether ``tag`` (as an int) falls under this row, masks included."""
        if self.tag == "PRIVATE":
            return bool((tag >> 16) & 1)
        text = f"{tag:08X}"
        return all(p == "x" or p == c for p, c in zip(self.tag, text, strict=True))


@lru_cache(maxsize=1)
def rows() -> tuple[ProfileRow, ...]:
    """Every row of the generated table, in tag order."""
    return tuple(
        ProfileRow(tag, name, retired, iod, basic, dict(opts))
        for tag, name, retired, iod, basic, opts in ROWS
    )


@lru_cache(maxsize=1)
def _index() -> tuple[dict[int, ProfileRow], tuple[ProfileRow, ...]]:
    exact: dict[int, ProfileRow] = {}
    masked: list[ProfileRow] = []
    for row in rows():
        if row.tag == "PRIVATE":
            continue
        if "x" in row.tag:
            masked.append(row)
        else:
            exact[int(row.tag, 16)] = row
    return exact, tuple(masked)


def lookup(tag: int | BaseTag) -> ProfileRow | None:
    """The Table E.1-1 row for a public ``tag`` (exact match first, then masks), or ``None``.

    Private tags are not looked up here: the engine applies the ``PRIVATE`` row itself.
    """
    exact, masked = _index()
    t = int(tag)
    row = exact.get(t)
    if row is not None:
        return row
    for m in masked:
        if m.matches(t):
            return m
    return None


def resolve_action(
    row: ProfileRow, options: Iterable[Option], policy: CompoundPolicy = CompoundPolicy.CONFORMANT
) -> tuple[str, Option | None]:
    """The single action to apply for ``row`` under the enabled ``options``.

    Returns ``(code, option)`` where ``code`` is one of ``D Z X K C U`` or ``U*`` (keep a
    sequence, replacing every UID inside it) and ``option`` is the option column that decided it
    (``None`` for the Basic Profile). When several enabled options name the row, keeping (``K``)
    wins over cleaning (``C``), which wins over the Basic Profile: each option exists to retain
    information the Basic Profile would remove (PS3.15 E.3).
    """
    enabled = [o for o in Option if o in set(options)]
    chosen: tuple[str, Option | None] | None = None
    for opt in enabled:
        code = row.options.get(opt.value)
        if code == "K":
            return "K", opt
        if code == "C" and chosen is None:
            chosen = ("C", opt)
    if chosen is not None:
        return chosen
    return _compound(row.basic, policy), None


def _compound(code: str, policy: CompoundPolicy) -> str:
    if "/" not in code:
        return code
    parts = code.split("/")
    if policy is CompoundPolicy.MINIMAL:
        return parts[0]
    if code == "X/Z/U*":
        return "U*"
    return parts[-1]
