"""The safe private attribute list for the Retain Safe Private Option (PS3.15 E.3.10).

Private attributes are removed (Table E.1-1 row "Private Attributes": X) unless the Retain Safe
Private Option is on *and* the attribute is listed here. The list is deliberately small: only
numeric acquisition parameters that diffusion MR analysis needs and that cannot carry identity.
Each entry is identified by its Private Creator (the block reservation, PS3.5 7.8.1), its group
and the element offset inside the block (the low byte of the element number); names and VRs
are pydicom's private dictionary's. A listed attribute is still dropped if its VR is not one of
``vrs`` (a vendor that reuses the slot for text does not smuggle text through).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SafePrivate", "SAFE_PRIVATE"]


@dataclass(frozen=True, slots=True)
class SafePrivate:
    """One private attribute known not to identify."""

    creator: str  #: Private Creator value, compared after stripping spaces
    group: int  #: odd group number
    offset: int  #: element number's low byte (0x00–0xFF) inside the reserved block
    name: str
    vrs: frozenset[str]  #: VRs accepted for the value


_NUM = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "DS", "IS"})

SAFE_PRIVATE: tuple[SafePrivate, ...] = (
    SafePrivate("SIEMENS MR HEADER", 0x0019, 0x0A, "NumberOfImagesInMosaic", _NUM),
    SafePrivate("SIEMENS MR HEADER", 0x0019, 0x0B, "SliceMeasurementDuration", _NUM),
    SafePrivate("SIEMENS MR HEADER", 0x0019, 0x0C, "B_value", _NUM),
    SafePrivate("SIEMENS MR HEADER", 0x0019, 0x0D, "DiffusionDirectionality", frozenset({"CS"})),
    SafePrivate("SIEMENS MR HEADER", 0x0019, 0x0E, "DiffusionGradientDirection", _NUM),
    SafePrivate("SIEMENS MR HEADER", 0x0019, 0x27, "B_matrix", _NUM),
    SafePrivate("GEMS_PARM_01", 0x0043, 0x39, "Slop_int_6... slop_int_9 (b-value)", _NUM),
)
