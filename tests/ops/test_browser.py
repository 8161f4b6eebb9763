"""The ops site in a real headless Chromium against a real pipeline: a broker, a worker with
RocksDB tables, `rcmflow ops` as its own process.

Screenshots go to $RCMFLOW_SCREENSHOTS when set (docs/img/ is refreshed so), else to the
test's temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rcmflow.streams.money import cents_for_people
from tests.conftest import Broker, Workers, wait_until
from tests.ops.browser import OpsSite, chromium, start_ops_site
from tests.workload import Observed, Workload

pytestmark = pytest.mark.broker

PASSWORD = "a long operator password"


@pytest.fixture
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture
def site(broker: Broker, workers: Workers, tmp_path: Path) -> Iterator[OpsSite]:
    for name, role in (("olive", "operator"), ("victor", "viewer")):
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "ops-user", name,
                               "--role", role], input=PASSWORD + "\n", env=workers.env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    site = start_ops_site(workers.env(), tmp_path / "ops.log")
    try:
        yield site
    finally:
        site.stop()


def shot(browser: Any, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("RCMFLOW_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / f"ops-{name}.png"))


def log_in(browser: Any, site: OpsSite, name: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/login")
    browser.find_element(By.ID, "username").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    assert browser.find_element(By.ID, "who").text.startswith(name)


def test_an_operator_sees_an_account_and_a_viewer_cannot_act(
        broker: Broker, workers: Workers, site: OpsSite, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    workload = Workload.build(accounts=3, replay_ratio=0, conflicts=1, invalid=1)
    workload.publish(broker.connection)
    worker = workers.start("w1")
    expected = workload.expected()
    wait_until(lambda: Observed.read(broker.connection).states == expected.states, 60,
               "the worker to apply the workload", worker.log_tail)

    # A wrong password is refused on the page.
    browser.get(f"{site.url}/login")
    browser.find_element(By.ID, "username").send_keys("olive")
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.ID, "login").click()
    assert "Wrong name or password" in browser.find_element(By.ID, "login-error").text

    log_in(browser, site, "olive")
    shot(browser, "health", tmp_path)
    browser.find_element(By.LINK_TEXT, "Accounts").click()
    browser.find_element(By.ID, "account").send_keys("T00001")
    browser.find_element(By.ID, "look-up").click()
    balances = expected.states["T00001"]["balances"]
    for bucket in ("gross_charges", "balance"):
        cell = browser.find_element(By.CSS_SELECTOR, f'td[data-bucket="{bucket}"]')
        assert cell.text == cents_for_people(balances[bucket]), bucket
    history = browser.find_elements(By.CSS_SELECTOR, "#history tr")
    assert len(history) - 1 == len([p for p in expected.postings.values()
                                    if json.loads(p)["account"] == "T00001"])
    shot(browser, "account", tmp_path)

    browser.get(f"{site.url}/accounts?account=NOPE")
    assert "No account NOPE" in browser.find_element(By.ID, "no-account").text

    # A viewer: the server refuses what only an operator may do, whatever the page shows.
    browser.find_element(By.CSS_SELECTOR, "header form button").click()  # log out
    log_in(browser, site, "victor")
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const csrf = document.querySelector('input[name=csrf]').value;
        fetch('/queue/any/resolve', {method: 'POST', body: new URLSearchParams({csrf, note: 'x'})})
          .then(r => done(r.status));""")
    assert status == 403
    assert "victor" in site.log_tail(80)
