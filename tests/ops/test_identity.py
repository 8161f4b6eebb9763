"""Who acts on refunds: the command line's login token, checked against the users file."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import jwt
import pytest

from rcmflow.ops.exceptions import NotSignedIn
from rcmflow.ops.identity import CLI_AUDIENCE, issue_token, save_token, signed_in, signing_key
from rcmflow.ops.users import User, Users
from rcmflow.runtime.settings import Settings

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith("RCMFLOW_")]:
        monkeypatch.delenv(name)
    return Settings(data_dir=tmp_path / "data", ops_token_file=tmp_path / "token")


@pytest.fixture
def users(settings: Settings) -> Users:
    users = Users(settings.data_dir / "ops-users.json")
    users.set("bob", "viewer", PASSWORD, ("refund_manager",))
    return users


def test_the_key_is_made_once_private_and_kept(settings: Settings) -> None:
    key = signing_key(settings)
    path = settings.data_dir / "ops-session.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 32
    assert signing_key(settings) == key, "a restart signs with the same key"


def test_a_saved_login_names_the_user_with_the_roles_the_file_gives_now(
        settings: Settings, users: Users) -> None:
    user = users.login("bob", PASSWORD)
    assert user is not None and user.roles == ("viewer", "refund_manager")
    save_token(settings.ops_token_file, issue_token(user, signing_key(settings), 1))  # type: ignore[arg-type]
    assert signed_in(settings, users) == user
    users.set("bob", "viewer", PASSWORD, ())  # the grant revoked: it holds at once
    assert signed_in(settings, users).roles == ("viewer",)
    users.remove("bob")
    with pytest.raises(NotSignedIn, match="no longer in"):
        signed_in(settings, users)


@pytest.mark.parametrize(("claims", "key", "message"), [
    ({"sub": "bob", "aud": CLI_AUDIENCE, "exp": 1}, None, "has expired"),
    ({"sub": "bob", "aud": CLI_AUDIENCE, "exp": 2**40}, b"x" * 32, "not valid here"),
    ({"sub": "bob", "exp": 2**40, "role": "viewer", "csrf": "c"}, None, "not valid here"),
])
def test_an_expired_forged_or_site_token_is_no_login(settings: Settings, users: Users,
                                                    claims: dict[str, object],
                                                    key: bytes | None, message: str) -> None:
    token = jwt.encode(claims, key or signing_key(settings), algorithm="HS256")
    save_token(settings.ops_token_file, token)  # type: ignore[arg-type]
    with pytest.raises(NotSignedIn, match=message):
        signed_in(settings, users)


def test_no_token_says_how_to_sign_in(settings: Settings, users: Users) -> None:
    with pytest.raises(NotSignedIn, match="rcmflow ops-login NAME"):
        signed_in(settings, users)


def test_a_token_lasts_the_session_hours(settings: Settings) -> None:
    token = issue_token(User("bob", "viewer"), signing_key(settings), 8)
    claims = jwt.decode(token, signing_key(settings), algorithms=["HS256"],
                        audience=CLI_AUDIENCE)
    assert 8 * 3600 - 5 <= claims["exp"] - time.time() <= 8 * 3600
