"""Passwords the way Jupyter hashes them: jupyter_server's argon2, with legacy sha1 still verifying."""

from __future__ import annotations

import secrets

MIN_LENGTH = 8


def hash_password(password: str) -> str:
    from jupyter_server.auth.security import passwd

    return passwd(password)


def verify_password(hashed: str, password: str) -> bool:
    from jupyter_server.auth.security import passwd_check

    try:
        return passwd_check(hashed, password)
    except Exception:  # a malformed hash verifies nothing
        return False


def looks_like_hash(text: str) -> bool:
    algorithm, _, rest = text.partition(":")
    return algorithm in {"argon2", "sha1", "sha256", "sha512"} and bool(rest)


def generate_password() -> str:
    # 20 characters from a URL-safe alphabet: about 120 bits, easy to paste.
    return secrets.token_urlsafe(15)


def generate_secret_hex(nbytes: int = 32) -> str:
    return secrets.token_hex(nbytes)
