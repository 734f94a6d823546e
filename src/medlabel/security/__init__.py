"""Security core: the role → permission table and password hashing (no DB, no HTTP)."""
