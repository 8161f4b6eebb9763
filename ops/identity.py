"""Who is acting: the operator tools' signed identity, for the site and the command line.

The ops site keeps a login in a session cookie; the command line keeps it in a token file
written by ``rcmflow ops-login`` (a JWT: the login, its roles, an expiry). Both are signed
with one key: RCMFLOW_OPS_SESSION_KEY, or else a random key kept in DATA_DIR/ops-session.key
(mode 0600, made on first use), so a login survives a restart of the site. The roles that
count are the users file's at the moment of use: a removed user or a revoked grant holds at
once, whatever an older token says. Refund decisions take the user from here, never from a
free-text option.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt

from rcmflow.ops.exceptions import NotSignedIn
from rcmflow.ops.users import User, Users
from rcmflow.runtime.settings import Settings

__all__ = ["signing_key", "issue_token", "signed_in", "token_path", "KEY_BYTES_MIN",
           "CLI_AUDIENCE"]

KEY_BYTES_MIN = 32
CLI_AUDIENCE = "rcmflow-ops-cli"
#: A token file is a few hundred bytes; a larger one is not ours.
TOKEN_BYTES_MAX = 8192


def signing_key(settings: Settings) -> bytes:
    """The key that signs the site's sessions and the command line's tokens. Raises
    ValueError for a configured key too short to sign with."""
    if settings.ops_session_key is not None:
        key = settings.ops_session_key.get_secret_value().encode()
        if len(key) < KEY_BYTES_MIN:
            raise ValueError(f"RCMFLOW_OPS_SESSION_KEY needs at least {KEY_BYTES_MIN} bytes "
                             f"(it has {len(key)})")
        return key
    path = settings.data_dir / "ops-session.key"
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by another process meanwhile
            return path.read_bytes()
        key = secrets.token_bytes(KEY_BYTES_MIN)
        with os.fdopen(fd, "wb") as out:
            out.write(key)
    if len(key) < KEY_BYTES_MIN:
        raise ValueError(f"{path} holds {len(key)} bytes, not a key: remove it and start again")
    return key


def token_path(settings: Settings) -> Path:
    """Where `rcmflow ops-login` keeps the token: RCMFLOW_OPS_TOKEN_FILE, else
    ~/.config/rcmflow/ops-token (per person, not in the shared data directory)."""
    if settings.ops_token_file is not None:
        return settings.ops_token_file
    return Path.home() / ".config" / "rcmflow" / "ops-token"


def issue_token(user: User, key: bytes, hours: int) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user.name, "roles": list(user.roles), "aud": CLI_AUDIENCE,
                       "iat": now, "exp": now + hours * 3600}, key, algorithm="HS256")


def save_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    os.replace(tmp, path)


def signed_in(settings: Settings, users: Users) -> User:
    """The user of the command line's token (RCMFLOW_OPS_TOKEN, else the token file), with
    the roles the users file gives them now. NotSignedIn says what to do otherwise."""
    token = settings.ops_token.get_secret_value() if settings.ops_token is not None else None
    where = "RCMFLOW_OPS_TOKEN"
    if token is None:
        path = token_path(settings)
        where = str(path)
        try:
            if path.stat().st_size > TOKEN_BYTES_MAX:
                raise NotSignedIn(f"{path} is not a token: run `rcmflow ops-login NAME`")
            token = path.read_text().strip()
        except FileNotFoundError:
            raise NotSignedIn("not signed in: run `rcmflow ops-login NAME` (the operator "
                              "tools' login; `rcmflow ops-user` makes one)") from None
    try:
        claims = jwt.decode(token, signing_key(settings), algorithms=["HS256"],
                            audience=CLI_AUDIENCE, options={"require": ["exp", "sub", "aud"]})
    except jwt.ExpiredSignatureError:
        raise NotSignedIn(f"the login in {where} has expired: run `rcmflow ops-login NAME` "
                          "again") from None
    except jwt.PyJWTError as exc:
        raise NotSignedIn(f"the login in {where} is not valid here ({exc}): run `rcmflow "
                          "ops-login NAME`") from None
    user = users.user(str(claims["sub"]))
    if user is None:
        raise NotSignedIn(f"{claims['sub']} is no longer in {users.path}")
    return user
