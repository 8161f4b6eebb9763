"""The ops site's access rules, in process (no broker: pages that read topics are covered by
tests/ops/test_browser.py on a real pipeline)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from rcmflow.ops.site import COOKIE, SiteConfig, create_site
from rcmflow.ops.users import Users, check_password, hash_password
from rcmflow.runtime.kafka_connection import KafkaConnection

PASSWORD = "correct horse battery"
KEY = b"k" * 32


@pytest.fixture
def users(tmp_path: Path) -> Users:
    users = Users(tmp_path / "ops-users.json")
    users.set("olive", "operator", PASSWORD)
    users.set("victor", "viewer", PASSWORD)
    return users


@pytest.fixture
def client(users: Users) -> TestClient:
    config = SiteConfig(kafka=KafkaConnection(servers=("127.0.0.1:1",)), users=users,
                        session_key=KEY, session_s=3600, app_id="rcmflow", metrics={})
    return TestClient(create_site(config), base_url="http://127.0.0.1:8081")


def login(client: TestClient, name: str, password: str = PASSWORD) -> int:
    response = client.post("/login", data={"username": name, "password": password},
                           follow_redirects=False)
    return response.status_code


def test_pages_need_a_login(client: TestClient) -> None:
    for path in ("/", "/accounts?account=A1"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")


def test_a_wrong_password_or_an_unknown_name_gets_no_session(client: TestClient) -> None:
    assert login(client, "olive", "wrong password!!") == 401
    assert login(client, "nobody") == 401
    assert COOKIE not in client.cookies
    assert client.get("/accounts", follow_redirects=False).status_code == 303


def test_a_login_is_a_strict_http_only_cookie_that_names_the_user(client: TestClient) -> None:
    response = client.post("/login", data={"username": "olive", "password": PASSWORD},
                           follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/accounts")
    assert page.status_code == 200
    assert "olive (operator)" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"


def test_a_forged_or_expired_cookie_is_no_session(client: TestClient) -> None:
    forged = jwt.encode({"sub": "olive", "role": "operator", "csrf": "x", "exp": 2**40},
                        b"another key that is long enough!", algorithm="HS256")
    client.cookies.set(COOKIE, forged)
    assert client.get("/accounts", follow_redirects=False).status_code == 303
    expired = jwt.encode({"sub": "olive", "role": "operator", "csrf": "x", "exp": 1},
                         KEY, algorithm="HS256")
    client.cookies.set(COOKIE, expired)
    assert client.get("/accounts", follow_redirects=False).status_code == 303


def test_a_removed_login_loses_its_session_at_once(client: TestClient, users: Users) -> None:
    assert login(client, "victor") == 303
    assert client.get("/accounts").status_code == 200
    users.remove("victor")
    assert client.get("/accounts", follow_redirects=False).status_code == 303


def test_a_role_comes_from_the_users_file_not_the_cookie(client: TestClient,
                                                          users: Users) -> None:
    assert login(client, "olive") == 303
    users.set("olive", "viewer", PASSWORD)
    assert "olive (viewer)" in client.get("/accounts").text


def test_a_post_without_the_forms_token_is_refused(client: TestClient) -> None:
    assert login(client, "olive") == 303
    assert client.post("/logout", data={"csrf": "guess"}).status_code == 403
    assert client.get("/accounts").status_code == 200  # still logged in
    assert client.post("/logout", data={"csrf": "x" * 20_000}).status_code == 413


def test_the_login_page_loads_nothing_from_another_host(client: TestClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")
    assert "default-src 'self'" in page.headers["content-security-policy"]


@settings(max_examples=8, deadline=None)  # scrypt takes ~50 ms a hash, by design
@given(st.text(min_size=12, max_size=40), st.text(min_size=1, max_size=40))
def test_a_password_matches_its_hash_and_nothing_else(password: str, other: str) -> None:
    stored = hash_password(password)
    assert check_password(password, stored)
    assert not check_password(password + other, stored)
    assert not check_password(password, "scrypt$1$2$3$not$base64!")


def test_ops_user_writes_a_private_file_and_refuses_weak_input(tmp_path: Path) -> None:
    env = {**os.environ, "RCMFLOW_DATA_DIR": str(tmp_path)}

    def ops_user(*args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rcmflow.cli", "ops-user", *args],
                              input=password + "\n", env=env, capture_output=True, text=True,
                              timeout=60)

    done = ops_user("olive", "--role", "operator")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "ops-users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD not in path.read_text()
    assert Users(path).login("olive", PASSWORD) is not None
    assert ops_user("olive", "--role", "operator", password="short").returncode == 2
    assert ops_user("olive", "--role", "admin").returncode == 2
    assert ops_user("bad name", "--role", "viewer").returncode == 2
    assert ops_user("olive", "--remove").returncode == 0
    assert Users(path).login("olive", PASSWORD) is None
    assert ops_user("olive", "--remove").returncode == 1


def test_health_says_the_broker_did_not_answer_instead_of_failing(client: TestClient) -> None:
    assert login(client, "victor") == 303
    page = client.get("/")
    assert page.status_code == 200
    assert "the broker did not answer" in page.text
    assert "facade" not in page.text  # no process metrics configured in this site


def test_health_shows_the_last_reconcile_from_the_file_it_wrote(users: Users,
                                                                 tmp_path: Path) -> None:
    from rcmflow.audit.reconcile import Report
    from rcmflow.audit.reconcile_metrics import write_metrics_file

    path = tmp_path / "reconcile.prom"
    config = SiteConfig(kafka=KafkaConnection(servers=("127.0.0.1:1",)), users=users,
                        session_key=KEY, session_s=3600, app_id="rcmflow", metrics={},
                        reconcile_file=path)
    client = TestClient(create_site(config), base_url="http://127.0.0.1:8081")
    assert login(client, "victor") == 303
    assert "No reconcile has run here yet" in client.get("/").text
    report = Report(erp=None, day_from=None, day_to=None)
    report.findings_by_cause.update({"missing_posting": 2})
    write_metrics_file(report, path, finished_at_s=1_780_000_000)
    page = client.get("/").text
    assert "2026-05-28 20:26 UTC" in page and "2 difference(s)" in page
    assert "missing_posting 2" in page
