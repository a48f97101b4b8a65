"""Who may act through the web view: user names and scrypt hashes of their passwords, in the
home's `web-users.json` (owner-only, replaced atomically).

Only the hash is kept (scrypt from hashlib, a random salt per user, its cost stored with it so
it can be raised later); a password is never written anywhere. Checking an unknown name costs
as much as checking a known one, so timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronflow.errors import InvalidInputError, NotFoundError, StoreError

USERS_FILE = "web-users.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
# scrypt cost: 2**15 x 8 x 1 takes about 0.1 s and 32 MiB, what OWASP advises for logins.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_DUMMY = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def users_path(home: Path) -> Path:
    return home / USERS_FILE


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """'scrypt$N$r$p$salt$hash' (base64), all a later check needs."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    encoded = [base64.b64encode(x).decode() for x in (salt, digest)]
    return f"scrypt${n}${r}${p}${encoded[0]}${encoded[1]}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
    )


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def load_users(home: Path) -> dict[str, dict[str, Any]]:
    """name -> {hash, created_at}; empty when the file does not exist."""
    path = users_path(home)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the web users file {path}: {exc}") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise StoreError(f"{path} is not a cronflow web users file (no 'users' object)")
    return users


def _save(home: Path, users: dict[str, dict[str, Any]]) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = users_path(home)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"users": users}, handle, indent=2, sort_keys=True)
    os.replace(partial, path)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidInputError(
            f"bad user name '{name}': letters, digits and . _ @ - (at most 64, not first)"
        )
    return name


def set_user(home: Path, name: str, password: str) -> bool:
    """Add a user or change their password; True if the user is new."""
    check_name(name)
    if len(password) < MIN_PASSWORD:
        raise InvalidInputError(f"the password must have at least {MIN_PASSWORD} characters")
    users = load_users(home)
    new = name not in users
    users[name] = {
        "hash": hash_password(password),
        "created_at": users.get(name, {}).get("created_at")
        or datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _save(home, users)
    return new


def delete_user(home: Path, name: str) -> None:
    users = load_users(home)
    if name not in users:
        known = ", ".join(sorted(users)) or "none"
        raise NotFoundError(f"no web user '{name}' in {users_path(home)} (known: {known})")
    del users[name]
    _save(home, users)


def verify(home: Path, name: str, password: str) -> bool:
    """Whether the name exists and the password is theirs (same cost either way)."""
    user = load_users(home).get(name)
    stored = user.get("hash", _DUMMY) if isinstance(user, dict) else _DUMMY
    return password_matches(password, stored) and user is not None
