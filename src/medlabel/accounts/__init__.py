"""User accounts, login sessions, lockout and rate limiting."""
