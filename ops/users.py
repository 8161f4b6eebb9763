"""Operators' logins for the ops site: a name, a role and a password hash, in one JSON file.

Two roles: a **viewer** reads (queue, accounts, traces, health; no payloads, which may hold
PHI), an **operator** also sees payloads and replays and resolves work-queue items. Besides
the role, a user may hold **grants**: the roles the refund policy names (``refund_approver``,
``refund_manager``, ...), which decide the refunds they may approve (``ops/refunds.py``). The file
is written by `rcmflow ops-user` (mode 0600) and read at each login, so a change needs no
restart. Passwords are hashed with scrypt (stdlib ``hashlib``; n=2**14, r=8, p=1, a 16-byte
salt), compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rcmflow.ops.exceptions import UsersFileError

__all__ = ["Role", "ROLES", "User", "Users", "hash_password", "check_password", "NAME_PATTERN",
           "GRANT_PATTERN"]

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
#: Login names: short and plain (they appear in logs and in work-queue records).
NAME_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"
_PASSWORD_CHARS_MIN = 12
_PASSWORD_BYTES_MAX = 1024  # bounds the hashing work a login form can ask for
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    if len(password) < _PASSWORD_CHARS_MIN:
        raise ValueError(f"a password needs at least {_PASSWORD_CHARS_MIN} characters")
    if len(password.encode()) > _PASSWORD_BYTES_MAX:
        raise ValueError(f"a password is at most {_PASSWORD_BYTES_MAX} bytes")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant time; a malformed hash never does)."""
    if len(password.encode()) > _PASSWORD_BYTES_MAX:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GRANT_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    grants: tuple[str, ...] = ()

    @property
    def roles(self) -> tuple[str, ...]:
        """The role and the grants: what a refund approval may act in."""
        return (self.role, *self.grants)

    @property
    def can_act(self) -> bool:
        """Replay and resolve work-queue items, see payloads."""
        return self.role == "operator"


class Users:
    """The users file: ``{"alice": {"role": "operator", "password": "scrypt$..."}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise UsersFileError(f"{self.path}: not a users file ({exc})") from None
        if not isinstance(doc, dict):
            raise UsersFileError(f"{self.path}: not a users file (a JSON object is expected)")
        return doc

    def names(self) -> dict[str, Role]:
        return {name: entry["role"] for name, entry in self._read().items()  # type: ignore[misc]
                if entry.get("role") in ROLES}

    def user(self, name: str) -> User | None:
        """The user as the file says now (a removed user or a revoked grant counts at once)."""
        entry = self._read().get(name)
        if not isinstance(entry, dict) or entry.get("role") not in ROLES:
            return None
        return User(name, entry["role"], _grants(entry))  # type: ignore[arg-type]

    def login(self, name: str, password: str) -> User | None:
        """The user if the password is theirs; None otherwise (unknown names cost a hash
        too, so timing does not tell which names exist)."""
        entry = self._read().get(name)
        stored = entry.get("password", "") if isinstance(entry, dict) else ""
        ok = check_password(password, stored or _DUMMY_HASH)
        role = entry.get("role") if isinstance(entry, dict) else None
        if not ok or not stored or role not in ROLES:
            return None
        return User(name, role, _grants(entry))

    def set(self, name: str, role: Role, password: str,
            grants: tuple[str, ...] | None = None) -> None:
        """Add or change a login; ``grants`` None keeps the ones it has."""
        doc = self._read()
        kept = _grants(doc.get(name)) if grants is None else grants
        doc[name] = {"role": role, "password": hash_password(password)}
        if kept:
            doc[name]["grants"] = list(kept)  # type: ignore[assignment]
        self._write(doc)

    def remove(self, name: str) -> bool:
        doc = self._read()
        if doc.pop(name, None) is None:
            return False
        self._write(doc)
        return True

    def _write(self, doc: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, indent=2, sort_keys=True)
        os.replace(tmp, self.path)


def _grants(entry: object) -> tuple[str, ...]:
    found = entry.get("grants") if isinstance(entry, dict) else None
    if not isinstance(found, list):
        return ()
    return tuple(g for g in found if isinstance(g, str) and re.match(GRANT_PATTERN, g))


_DUMMY_HASH = "scrypt$16384$8$1$" + _b64(b"\0" * 16) + "$" + _b64(b"\0" * 64)
