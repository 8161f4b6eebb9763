"""The ops site's Health view without Prometheus: each process's /metrics read now (up or
not, and the few numbers an operator looks at first). History — throughput and latency over
hours, exceptions over time — needs Prometheus (deploy/prometheus/); the page says so."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from rcmflow.ops.lag import LagReport, lag_report
from rcmflow.runtime.kafka_connection import KafkaConnection

__all__ = ["ProcessHealth", "HealthView", "health_view", "HEADLINE"]

#: Series summed per process for the page (name -> label): what moved, what failed.
HEADLINE = {
    "rcmflow_worker_events_total": "events read",
    "rcmflow_worker_applied_events_total": "events applied",
    "rcmflow_erp_postings_total": "postings to the ERP",
    "rcmflow_mllp_messages_total": "HL7 messages",
    "rcmflow_audit_dlq_items": "DLQ items",
    "rcmflow_facade_request_seconds_count": "portal requests",
}
_SCRAPE_TIMEOUT_S = 2.0
_SCRAPE_BYTES_MAX = 4 * 1024 * 1024
_LAG_TIMEOUT_S = 10.0


@dataclass
class ProcessHealth:
    name: str
    url: str
    up: bool
    error: str = ""
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass
class HealthView:
    processes: list[ProcessHealth]
    broker: str
    #: Each consumer group's lag (`rcmflow lag`'s report); None: the broker did not answer.
    lag: LagReport | None
    lag_error: str = ""


async def health_view(kafka: KafkaConnection, metrics: dict[str, str], *,
                      app_id: str) -> HealthView:
    async with httpx.AsyncClient(timeout=_SCRAPE_TIMEOUT_S) as client:
        processes, lag = await asyncio.gather(
            asyncio.gather(*(_scrape(client, name, url) for name, url in sorted(metrics.items()))),
            _lag(kafka, app_id), return_exceptions=False)
    report, error = lag
    return HealthView(list(processes), kafka.describe(), report, error)


async def _lag(kafka: KafkaConnection, app_id: str) -> tuple[LagReport | None, str]:
    try:
        return await asyncio.wait_for(lag_report(kafka, app_id=app_id), _LAG_TIMEOUT_S), ""
    except (KafkaError, OSError, TimeoutError) as exc:
        return None, f"the broker did not answer ({type(exc).__name__})"


async def _scrape(client: httpx.AsyncClient, name: str, url: str) -> ProcessHealth:
    try:
        response = await client.get(url)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return ProcessHealth(name, url, up=False, error=type(exc).__name__)
    text = response.text[:_SCRAPE_BYTES_MAX]
    numbers: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = HEADLINE.get(sample.name)
            if label is not None:
                numbers[label] = numbers.get(label, 0.0) + sample.value
    return ProcessHealth(name, url, up=True, numbers=numbers)
