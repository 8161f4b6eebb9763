"""The ops site's Health charts from a real Prometheus (Debian's) scraping a real worker:
the charts show the events the test fed. One broker: what is checked is the page and
Prometheus, not the broker (the pipeline's own tests run on both)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rcmflow.runtime.broker import free_port
from rcmflow.runtime.kafka_io import publish
from rcmflow.streams.topics import EVENTS
from tests.conftest import Broker, Workers, wait_until
from tests.factories import charge
from tests.ops.browser import chromium, start_ops_site, start_prometheus
from tests.ops.test_browser import PASSWORD, log_in, shot

pytestmark = pytest.mark.broker

FED = 12  # charges, each applied once


@pytest.fixture
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.mark.brokers("tansu")
def test_the_health_charts_show_the_events_fed(broker: Broker, workers: Workers,
                                               browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    metrics_port = free_port()
    prometheus = start_prometheus([f"127.0.0.1:{metrics_port}"], tmp_path / "prometheus")
    site = None
    try:
        worker = workers.start("w1", RCMFLOW_WORKER_METRICS_PORT=str(metrics_port))
        events = [charge(1000 + n, f"H{n % 4}", event_id=f"H-{n}") for n in range(FED)]
        # In two halves: a counter series is born at its first value, and a rate needs it
        # to grow between two scrapes.
        for start, end in ((0, FED // 2), (FED // 2, FED)):
            asyncio.run(publish(broker.connection, [(EVENTS, d["account"].encode(),
                                                     json.dumps(d).encode())
                                                    for d in events[start:end]]))
            wait_until(lambda n=end: prometheus.query(  # type: ignore[misc]
                "sum(rcmflow_worker_applied_events_total)") == n, 90,
                "Prometheus to scrape the applied events", worker.log_tail)
        wait_until(lambda: (prometheus.query(
            "sum(rate(rcmflow_worker_applied_events_total[1m]))") or 0) > 0, 30,
            "a rate from two scrapes")
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "ops-user", "victor",
                               "--role", "viewer"], input=PASSWORD + "\n", env=workers.env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        site = start_ops_site(workers.env(RCMFLOW_OPS_PROMETHEUS_URL=prometheus.url,
                                          RCMFLOW_WORKER_METRICS_PORT=str(metrics_port)),
                              tmp_path / "ops.log")
        log_in(browser, site, "victor")
        browser.get(f"{site.url}/?window=5m")
        assert browser.find_element(By.ID, "applied").text == str(FED)
        throughput = browser.find_element(By.CSS_SELECTOR,
                                          'figure[data-title="Throughput"] '
                                          'polyline[data-label="applied"]')
        assert int(throughput.get_attribute("data-points")) > 0
        assert float(throughput.get_attribute("data-last")) > 0
        latency = browser.find_elements(By.CSS_SELECTOR, 'figure[data-title^="End-to-end"] '
                                                         'polyline')
        assert {line.get_attribute("data-label") for line in latency} == {"p50", "p95", "p99"}
        assert not browser.find_elements(By.ID, "no-prometheus")
        rows = browser.find_element(By.ID, "processes").text
        assert "worker up" in rows and f"events applied {FED}" in rows, rows
        shot(browser, "health-charts", tmp_path)
    finally:
        if site is not None:
            site.stop()
        prometheus.stop()
