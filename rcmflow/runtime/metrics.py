"""How a long-running rcmflow process shows its metrics: a Prometheus registry over HTTP.

Each process (worker, ERP connector, MLLP listener, facade) builds its own registry with
``new_registry``, giving it a function that reads the process's own counters at scrape time.
So the hot path does nothing for metrics: it keeps the plain integers it keeps anyway, and a
scrape turns them into metric families. ``serve`` puts the registry on
``http://HOST:PORT/metrics`` in a daemon thread (the facade serves it on its own port instead).

Labels are bounded by design: adapter names, ACK codes, outcomes, reason codes. Never an
account number, patient or event id (unbounded, and PHI).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Families", "Metric", "Rows", "new_registry", "serve", "render", "counter",
           "gauge", "url", "CONTENT_TYPE_LATEST"]

#: What a process gives its registry: a function returning its metric families now.
Families = Callable[[], Iterable[Metric]]


class _Read(Collector):
    def __init__(self, families: Families) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()


def new_registry(families: Families) -> CollectorRegistry:
    """A registry of the process's families plus the standard process/GC/platform ones.

    Its own registry, not prometheus_client's global one: tests build several per process.
    """
    registry = CollectorRegistry()
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(standard)
    registry.register(_Read(families))
    return registry


def serve(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serve ``/metrics`` on host:port in a daemon thread; returns the bound port.

    Raises OSError naming the address when it cannot bind (port taken), so commands can
    refuse to start instead of running unobserved.
    """
    assert port >= 0
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(exc.errno, f"metrics endpoint {host}:{port}: {exc.strerror}") from exc
    return int(server.server_port)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition (for a server that has its own HTTP stack: the facade)."""
    return generate_latest(registry)


def url(host: str, port: int) -> str:
    return f"http://{host}:{port}/metrics"


#: The samples of one family: (labels, value) rows, every row with the same label names.
Rows = Iterable[tuple[dict[str, str], float | None]]


def counter(name: str, documentation: str, rows: Rows) -> Metric:
    """A counter family; ``name`` without ``_total`` (the exposition adds it)."""
    return _family(CounterMetricFamily, name, documentation, rows)


def gauge(name: str, documentation: str, rows: Rows) -> Metric:
    """A gauge family; a ``None`` value is exposed as NaN (unknown, e.g. a lag before its
    first measurement), which Prometheus keeps apart from 0."""
    return _family(GaugeMetricFamily, name, documentation, rows)


def _family(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str,
            documentation: str, rows: Rows) -> Metric:
    listed = list(rows)
    names = sorted(listed[0][0]) if listed else []
    family = kind(name, documentation, labels=names)
    for labels, value in listed:
        assert sorted(labels) == names, f"{name}: label names differ between rows"
        family.add_metric([labels[k] for k in names], math.nan if value is None else value)
    return family
