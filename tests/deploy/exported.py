"""The metric names rcmflow's processes export, read from their own registries.

Each process kind's families function is called on a fresh state (the same function its
/metrics endpoint calls at scrape time), rendered as Prometheus text and parsed back; each
family then gives the sample names Prometheus stores: ``_total`` (and ``_created``) for a
counter, ``_bucket``/``_count``/``_sum`` for a histogram. Families are emitted even with no
series, so a fresh state shows every name. Not a hand list: a metric renamed in the code
changes this set, and the dashboard and rule checks fail.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import cast

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rcmflow.audit.aging import AgingReport
from rcmflow.audit.aging_metrics import aging_families
from rcmflow.audit.ledger import Follower
from rcmflow.audit.reconcile import Report
from rcmflow.audit.reconcile_metrics import reconcile_families
from rcmflow.connectors.erp.runner import CircuitBreaker, Flow, erp_families
from rcmflow.connectors.erp.runner import Progress as ErpProgress
from rcmflow.connectors.inbound.consume import Progress as ConsumeProgress
from rcmflow.connectors.inbound.consume import consume_families
from rcmflow.connectors.inbound.hl7.intake import Intake
from rcmflow.connectors.inbound.hl7.listener import ListenerLimits, MllpListener
from rcmflow.facade.app import FacadeConfig, create_app
from rcmflow.facade.auth import Authenticator
from rcmflow.facade.store import Store
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.metrics import new_registry, render
from rcmflow.streams.shell.worker import Progress as WorkerProgress
from rcmflow.streams.shell.worker import worker_families

__all__ = ["exported_names", "sample_names"]

#: What Prometheus adds to every target's series itself.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                           "scrape_samples_post_metric_relabeling", "scrape_series_added"})

#: The sample names a family of each type gives (prometheus_client's custom families emit no
#: ``_created``).
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
             "summary": ("", "_count", "_sum"), "gauge": ("",), "info": ("_info",),
             "unknown": ("",), "stateset": ("",),
             "gaugehistogram": ("_bucket", "_gcount", "_gsum")}


def sample_names(text: str) -> set[str]:
    """Every sample name an exposition text's families give Prometheus."""
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in _SUFFIXES[family.type]}


def exported_names(scratch: Path) -> dict[str, set[str]]:
    """Process kind -> the sample names it exports (``scratch``: a temp dir for the
    facade's read model and the audit follower's stores)."""
    out: dict[str, set[str]] = {}
    out["worker"] = sample_names(render(new_registry(
        lambda: worker_families(WorkerProgress()))).decode())
    progress = ErpProgress("csv")
    out["erp"] = sample_names(render(new_registry(lambda: erp_families(
        progress, CircuitBreaker(3, 1.0), Flow("csv")))).decode())
    out["consume"] = sample_names(render(new_registry(lambda: consume_families(
        ConsumeProgress(format="events", topic="t", group="g")))).decode())
    # The listener's families read only its own counters: no intake is needed for them.
    listener = MllpListener(cast(Intake, None), ListenerLimits())
    out["mllp"] = sample_names(render(new_registry(listener.families)).decode())
    follower = Follower(KafkaConnection(("127.0.0.1:9",)), scratch / "audit")
    try:
        out["audit"] = sample_names(render(new_registry(follower.families)).decode())
    finally:
        follower.close()
    # `rcmflow reconcile --metrics-file`: served by node_exporter's textfile collector.
    out["reconcile"] = sample_names(render(new_registry(lambda: reconcile_families(
        Report(erp="csv", day_from=None, day_to=None), 0.0))).decode())
    # `rcmflow aging --metrics-file`: the same.
    out["aging"] = sample_names(render(new_registry(lambda: aging_families(
        AgingReport(date(2026, 1, 1), "entity", []), 0.0))).decode())
    store = Store(scratch / "facade" / "read.sqlite")
    app = create_app(store, Authenticator(enabled=False, key=None, algorithm="HS256"),
                     FacadeConfig(public_url="http://127.0.0.1/fhir"))

    async def get() -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://facade.test") as client:
            return (await client.get("/metrics")).text

    out["facade"] = sample_names(asyncio.run(get()))
    store.close()
    return out
