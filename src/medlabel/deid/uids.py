"""Deterministic UID replacement (action ``U``, PS3.15 E.1.1).

``new = "2.25." + str(int(u))`` where ``u`` is the first 128 bits of
HMAC-SHA256(project secret, original UID as ASCII) with the version nibble set to 8 and the
variant bits to ``10`` (an RFC 9562 version-8, "custom", UUID). PS3.5 B.2 allows ``2.25.``
followed by the decimal value of a UUID; the result is at most 44 characters, within the 64 of UI.

The same original UID gives the same new UID in every file of the project (same secret), so
Study/Series/Frame of Reference groupings and references (Referenced SOP Instance UID …) keep
resolving; without the secret the mapping cannot be reversed or recomputed.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["remap_uid", "UID_ROOT"]

UID_ROOT = "2.25."


def remap_uid(secret: bytes, uid: str) -> str:
    """The replacement for ``uid`` under ``secret``; empty stays empty."""
    uid = uid.strip().rstrip("\x00")
    if not uid:
        return ""
    digest = hmac.new(secret, uid.encode("ascii", "replace"), hashlib.sha256).digest()
    b = bytearray(digest[:16])
    b[6] = (b[6] & 0x0F) | 0x80  # version 8
    b[8] = (b[8] & 0x3F) | 0x80  # variant 10xx
    return UID_ROOT + str(int.from_bytes(bytes(b), "big"))
