"""The Health view's charts: the pipeline's series over the last hours, read from Prometheus'
HTTP API (``/api/v1/query_range``) and drawn as inline SVG by the page (no JavaScript).

The series are the ones deploy/prometheus scrapes (docs/operations/metrics.md): throughput,
end-to-end latency percentiles, lag, and exception items by reason and by entity over time
(the "facility exception trends"). Where no Prometheus is configured the page shows the
processes' current values instead and says that history needs Prometheus.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

__all__ = ["Chart", "Series", "CHARTS", "WINDOWS", "charts", "applied_events"]

#: Window name -> length; the page offers these.
WINDOWS = {"5m": timedelta(minutes=5), "15m": timedelta(minutes=15), "1h": timedelta(hours=1),
           "3h": timedelta(hours=3),
           "12h": timedelta(hours=12), "24h": timedelta(hours=24)}
_POINTS = 120  # per series: the step is the window / 120
_SERIES_MAX = 8  # per chart (the top ones by their last value): bounded labels, a legible chart
_TIMEOUT_S = 5.0

_LATENCY = ("histogram_quantile({q}, sum by (le) "
            "(rate(rcmflow_worker_event_to_posting_seconds_bucket[5m])))")
#: (title, unit, [(legend, PromQL) or (None, PromQL by a label: one series per value)]).
CHARTS: list[tuple[str, str, list[tuple[str | None, str]]]] = [
    ("Throughput", "events/s", [
        ("applied", "sum(rate(rcmflow_worker_applied_events_total[1m]))"),
        ("sent to the ERP", "sum(rate(rcmflow_erp_posted_total[1m]))"),
    ]),
    ("End-to-end latency: event to posting delta", "s", [
        ("p50", _LATENCY.format(q="0.5")), ("p95", _LATENCY.format(q="0.95")),
        ("p99", _LATENCY.format(q="0.99")),
    ]),
    ("Posting delta to ERP posted (p95)", "s", [
        ("p95", "histogram_quantile(0.95, sum by (le) "
                "(rate(rcmflow_erp_delta_to_posted_seconds_bucket[5m])))"),
    ]),
    ("Lag", "records", [
        ("workers", "sum(rcmflow_worker_lag_records)"),
        ("ERP connectors", "sum(rcmflow_erp_lag_records)"),
        ("facade", "sum(rcmflow_facade_lag_records)"),
    ]),
    ("Exception items by reason", "items", [(None, "sum by (reason) (rcmflow_audit_dlq_items)")]),
    ("Exception items by entity", "items", [(None, "sum by (entity) (rcmflow_audit_dlq_items)")]),
]


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]  # (unix seconds, value)

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None


@dataclass
class Chart:
    title: str
    unit: str
    start: datetime
    end: datetime
    series: list[Series] = field(default_factory=list)
    error: str = ""

    @property
    def top(self) -> float:
        """The y axis' top: the largest value (1 when all are 0)."""
        values = [v for s in self.series for _, v in s.points]
        return max(values, default=0.0) or 1.0


async def charts(prometheus_url: str, window: str = "1h",
                 now: datetime | None = None) -> list[Chart]:
    """Every chart of ``CHARTS`` over ``window`` ending now."""
    end = now or datetime.now(UTC)
    start = end - WINDOWS[window]
    step = max(1.0, WINDOWS[window].total_seconds() / _POINTS)
    async with httpx.AsyncClient(base_url=prometheus_url.rstrip("/"),
                                 timeout=_TIMEOUT_S) as client:
        return list(await asyncio.gather(*(
            _chart(client, title, unit, queries, start, end, step)
            for title, unit, queries in CHARTS)))


async def applied_events(prometheus_url: str) -> int | None:
    """Events the workers applied, as Prometheus has it now (each worker since it started)."""
    async with httpx.AsyncClient(base_url=prometheus_url.rstrip("/"),
                                 timeout=_TIMEOUT_S) as client:
        try:
            answer = await client.get("/api/v1/query", params={
                "query": "sum(rcmflow_worker_applied_events_total)"})
            answer.raise_for_status()
            result = answer.json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
    return int(float(result[0]["value"][1])) if result else 0


async def _chart(client: httpx.AsyncClient, title: str, unit: str,
                 queries: list[tuple[str | None, str]], start: datetime, end: datetime,
                 step: float) -> Chart:
    chart = Chart(title, unit, start, end)
    for legend, query in queries:
        try:
            answer = await client.get("/api/v1/query_range", params={
                "query": query, "start": start.timestamp(), "end": end.timestamp(),
                "step": step})
            answer.raise_for_status()
            results = answer.json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            chart.error = f"Prometheus did not answer ({type(exc).__name__})"
            return chart
        for result in results:
            label = legend or ",".join(str(v) for v in result["metric"].values()) or "-"
            points = [(float(t), float(v)) for t, v in result["values"]
                      if math.isfinite(float(v))]
            chart.series.append(Series(label, points))
    chart.series.sort(key=lambda s: -(s.last or 0.0))
    del chart.series[_SERIES_MAX:]
    return chart
