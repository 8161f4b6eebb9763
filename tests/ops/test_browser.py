"""The ops site in a real headless Chromium against a real pipeline: a broker, a worker with
RocksDB tables, `rcmflow ops` as its own process.

Screenshots go to $OPS_SCREENSHOTS when set (docs/img/ is refreshed so), else to the
test's temp dir."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rcmflow.ops.accounts import posting_history
from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.streams.topics import DLQ, EVENTS
from tests.conftest import Broker, Workers, wait_until
from tests.factories import charge, event_doc, payment
from tests.ops.browser import OpsSite, chromium, start_ops_site

pytestmark = pytest.mark.broker

PASSWORD = "a long operator password"
SHIPPED_CHART = Path(__file__).resolve().parents[2] / "streams" / "chart_of_accounts.yaml"


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
    folder = Path(os.environ.get("OPS_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / f"ops-{name}.png"))


def log_in(browser: Any, site: OpsSite, name: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/login")
    browser.find_element(By.ID, "username").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    assert present(browser, "who").text.startswith(name)


def present(browser: Any, element_id: str, timeout_s: float = 30) -> Any:
    """The element, once the page that has it loaded (a click's navigation, a form's
    redirect, may still be under way when the click returns)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout_s).until(lambda b: b.find_elements(By.ID, element_id))
    return browser.find_element(By.ID, element_id)


def balance(browser: Any, site: OpsSite, account: str, bucket: str) -> str:
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/accounts?account={account}")
    return str(browser.find_element(By.CSS_SELECTOR, f'td[data-bucket="{bucket}"]').text)


def wait_for_text(browser: Any, element_id: str, wanted: str, timeout_s: float) -> None:
    """Reload until the element says ``wanted`` (a replay's outcome comes when the worker
    has read it)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout_s
    said = "absent"
    while True:
        try:  # the page may still be loading (a form's redirect): the element goes stale
            found = browser.find_elements(By.ID, element_id)
            said = found[0].text if found else "absent"
        except StaleElementReferenceException:
            said = "stale"
        if wanted in said:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"#{element_id} never said {wanted!r}: {said}")
        time.sleep(1)
        browser.refresh()


def test_an_operator_replays_a_fixed_item_once_and_a_viewer_cannot(
        broker: Broker, workers: Workers, site: OpsSite, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # A write-off over the chart's small-balance threshold ($5) is refused: a queue item.
    kafka = broker.connection
    write_off = event_doc("write_off", "Q1", event_id="Q1-WO", amount_cents=600,
                          reason="small_balance", from_ar="insurance")
    paid = payment(2500, "Q2", event_id="Q2-PAY", channel="portal", reference="PORTAL-77")
    asyncio.run(publish(kafka, [(EVENTS, d["account"].encode(), json.dumps(d).encode())
                                for d in (charge(1000, "Q1", event_id="Q1-CH"), write_off,
                                          charge(4000, "Q2", event_id="Q2-CH"), paid)]))
    first = workers.start("w1")

    def refused() -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in asyncio.run(read_topic(kafka, DLQ))
                if r.value and b"small_balance_over_threshold" in r.value]

    wait_until(lambda: bool(refused()), 90, "the write-off refused", first.log_tail)
    dlq_id = refused()[0]["dlq_id"]
    # The fix: the threshold raised to $10 in the chart the worker runs with.
    chart = tmp_path / "chart.yaml"
    chart.write_text(SHIPPED_CHART.read_text().replace("small_balance_cents: 500",
                                                       "small_balance_cents: 1000"))
    first.stop()
    workers.start("w2", RCMFLOW_COA=str(chart))

    # A wrong password is refused on the page.
    browser.get(f"{site.url}/login")
    browser.find_element(By.ID, "username").send_keys("olive")
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.ID, "login").click()
    assert "Wrong name or password" in present(browser, "login-error").text

    log_in(browser, site, "olive")
    assert "olive (operator)" in browser.find_element(By.ID, "who").text
    assert browser.find_elements(By.ID, "no-prometheus")  # current values only, and why
    shot(browser, "health", tmp_path)
    assert balance(browser, site, "Q1", "insurance_ar") == "10.00"

    browser.get(f"{site.url}/accounts?account=Q2")
    assert "PORTAL-77" in browser.find_element(By.ID, "payments").text

    browser.find_element(By.LINK_TEXT, "Work queue").click()
    present(browser, "items")
    rows = browser.find_elements(By.CSS_SELECTOR, "#items tr")
    assert any(dlq_id in row.text and "open" in row.text for row in rows)
    shot(browser, "queue", tmp_path)
    browser.find_element(By.ID, "summary").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "summary-total"))
    assert browser.find_element(By.ID, "summary-total").text.startswith("1 item.")
    assert "small_balance_over_threshold 1" in browser.find_element(By.ID, "by-reason").text
    assert browser.find_element(By.ID, "oldest").text == dlq_id
    browser.back()
    present(browser, "items")
    browser.find_element(By.LINK_TEXT, dlq_id).click()
    assert "not under the 500 cents threshold" in present(browser, "item-reason").text
    assert "Q1-WO" in browser.find_element(By.ID, "payload").text
    browser.find_element(By.ID, "replay-note").send_keys("threshold raised to $10")
    browser.find_element(By.ID, "replay").click()
    wait_for_text(browser, "replay-outcome", "applied", 90)
    assert "replayed" in browser.find_element(By.ID, "item-state").text
    shot(browser, "item", tmp_path)
    assert balance(browser, site, "Q1", "insurance_ar") == "4.00"
    shot(browser, "account", tmp_path)

    # Replayed again: the dedup table holds, the balance moved once.
    browser.get(f"{site.url}/queue/{dlq_id}")
    browser.find_element(By.ID, "replay").click()
    wait_for_text(browser, "replay-outcome", "replay", 90)
    assert balance(browser, site, "Q1", "insurance_ar") == "4.00"
    deltas = asyncio.run(posting_history(kafka, "Q1"))
    assert [d["event_id"] for d in deltas] == ["Q1-CH", "Q1-WO"]

    # Its trace: the event, the refusal, the delta of the replay, in pipeline order.
    browser.find_element(By.LINK_TEXT, "Trace").click()
    present(browser, "trace-id").send_keys("Q1-WO")
    browser.find_element(By.ID, "trace").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "trace-summary"))
    stages = [row.find_elements(By.TAG_NAME, "td")[0].text
              for row in browser.find_elements(By.CSS_SELECTOR, "#steps tr")[1:]]
    assert "event" in stages and "posting" in stages and "dlq" in stages, stages
    assert stages.index("event") < stages.index("posting")

    browser.get(f"{site.url}/accounts?account=NOPE")
    assert "No account NOPE" in browser.find_element(By.ID, "no-account").text

    # A viewer reads the item without its payload, and the server refuses its replay
    # whatever the page shows.
    browser.find_element(By.CSS_SELECTOR, "header form button").click()  # log out
    present(browser, "username")
    log_in(browser, site, "victor")
    browser.get(f"{site.url}/queue/{dlq_id}")
    assert not browser.find_elements(By.ID, "payload")
    assert not browser.find_elements(By.ID, "replay")
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const csrf = document.querySelector('input[name=csrf]').value;
        fetch(location.pathname + '/replay', {method: 'POST',
              body: new URLSearchParams({csrf, note: 'x'})}).then(r => done(r.status));""")
    assert status == 403
    assert "victor (viewer) refused: replay" in site.log_tail(80)
    assert len(asyncio.run(posting_history(kafka, "Q1"))) == 2
