"""A real headless browser for the ops site's tests: Debian's chromium, driven through its
chromium-driver by Selenium (no browser download: .ci/run installs both packages).

Without them the test skips locally and fails under ``CI=true``, as the Kafka tests do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rcmflow.runtime.broker import free_port

__all__ = ["chromium", "OpsSite", "start_ops_site"]


def chromium() -> Iterator[object]:
    """A headless Chromium WebDriver, quit at the end."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        message = ("no chromium / chromedriver (Debian: apt-get install chromium "
                   "chromium-driver)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: the browser test must run in CI)")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


@dataclass
class Server:
    """A server process the test started: where it answers, its log."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class OpsSite(Server):
    """`rcmflow ops`."""


def start_ops_site(env: dict[str, str], log: Path) -> OpsSite:
    """`rcmflow ops` as a real process on a free port, once it answers."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "ops"],
                                   env={**env, "RCMFLOW_OPS_PORT": str(port)},
                                   stdout=out, stderr=subprocess.STDOUT)
    site = OpsSite(f"http://127.0.0.1:{port}", process, log)
    _wait_answering(f"{site.url}/login", process, log, "rcmflow ops", site.stop)
    return site


def _wait_answering(url: str, process: subprocess.Popen[bytes], log: Path, what: str,
                    stop: Callable[[], None]) -> None:
    """Until ``url`` answers 200; the test fails (with the log's end) if the process exits
    or 60 s pass."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited {process.returncode}\n"
                        f"{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop()
    pytest.fail(f"{what} did not answer in 60 s\n{log.read_text(errors='replace')[-2000:]}")


class Prometheus(Server):
    """Debian's Prometheus."""

    def query(self, expression: str) -> float | None:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression},
                           timeout=5).json()
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None


def start_prometheus(targets: list[str], folder: Path) -> Prometheus:
    """Debian's Prometheus scraping ``targets`` (host:port) every second, on a free port."""
    binary = shutil.which("prometheus")
    if binary is None:
        message = "no prometheus (Debian: apt-get install prometheus)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: the Health charts test must run in CI)")
        pytest.skip(message)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                      "scrape_configs:\n  - job_name: rcmflow\n    static_configs:\n"
                      f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
    port = free_port()
    log = folder / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    _wait_answering(f"{server.url}/-/ready", process, log, "prometheus", server.stop)
    return server
