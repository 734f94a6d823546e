"""Argon2id password hashing (argon2-cffi defaults follow RFC 9106's recommendations)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from medlabel.errors import InvalidInput

__all__ = ["hash_password", "verify_password", "needs_rehash", "check_password_policy", "DUMMY_HASH"]

_hasher = PasswordHasher()
MIN_LENGTH = 10


def check_password_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(
            f"password must have at least {MIN_LENGTH} characters, found {len(password)}",
            detail={"field": "password"},
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


# Verified against when the username is unknown, so both paths cost the same time.
DUMMY_HASH = _hasher.hash("medlabel-dummy-password-for-timing")
