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

import bisect
import math
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["Families", "Metric", "Rows", "new_registry", "serve", "render", "counter",
           "gauge", "histogram", "Histogram", "BoundedLabel", "LATENCY_BUCKETS_S", "DAYS_BUCKETS",
           "REQUEST_BUCKETS_S", "LABEL_VALUES_MAX", "OTHER", "url", "CONTENT_TYPE_LATEST"]

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


#: End-to-end latency buckets (seconds): from a few milliseconds to an hour (an ERP outage
#: shows as the +Inf bucket filling, not as a new label).
LATENCY_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                        5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Revenue-cycle durations (days): time in a lifecycle state, claim to payment, ...
DAYS_BUCKETS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 21.0, 30.0, 45.0,
                                   60.0, 90.0, 120.0, 180.0, 365.0)
#: HTTP request latency buckets (seconds).
REQUEST_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Observations bucketed in plain integers, per label tuple; turned into a histogram
    family at scrape time (``histogram``). The hot path does one bisect and two adds.

    Written by one thread (the process's event loop), read by the scrape thread: a scrape a
    moment stale is fine, each read is of one int or float."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        assert list(buckets) == sorted(buckets) and buckets, "buckets must be increasing"
        self.buckets = tuple(buckets)
        #: label values -> (per-bucket counts, +Inf last; sum)
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, labels: tuple[str, ...] = ()) -> None:
        counts, total = self.series.get(labels) or self.series.setdefault(
            labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def observe_many(self, values: Sequence[float], labels: tuple[str, ...] = ()) -> None:
        """``observe`` for each value (a batch's: one lookup for all of them)."""
        if not values:
            return
        counts, total = self.series.get(labels) or self.series.setdefault(
            labels, ([0] * (len(self.buckets) + 1), [0.0]))
        where, buckets = bisect.bisect_left, self.buckets
        for value in values:
            counts[where(buckets, value)] += 1
        total[0] += sum(values)

    def count(self, labels: tuple[str, ...] = ()) -> int:
        got = self.series.get(labels)
        return sum(got[0]) if got else 0


def histogram(name: str, documentation: str, label_names: Sequence[str],
              source: Histogram) -> Metric:
    """A histogram family (``_bucket``, ``_count``, ``_sum``) of ``source``'s series."""
    family = HistogramMetricFamily(name, documentation, labels=list(label_names))
    for labels, (counts, total) in list(source.series.items()):
        assert len(labels) == len(label_names), f"{name}: label values {labels}"
        cumulative, running = [], 0
        for bound, n in zip([*source.buckets, math.inf], counts, strict=True):
            running += n
            cumulative.append(("+Inf" if bound == math.inf else _bound(bound), running))
        family.add_metric(list(labels), cumulative, total[0])
    return family


def _bound(bound: float) -> str:
    return repr(float(bound))


#: Distinct values one label keeps before the rest are folded into ``OTHER``.
LABEL_VALUES_MAX = 50
OTHER = "other"


class BoundedLabel:
    """A label whose values come from input (an event's source, a DLQ record's entity):
    the first ``values_max`` distinct values are kept as they are, every later one is
    reported as ``other``, so a flood of odd inputs cannot blow up the series count. Values
    are cut to ``chars_max`` characters as well."""

    def __init__(self, values_max: int = LABEL_VALUES_MAX, chars_max: int = 64) -> None:
        self.values_max = values_max
        self.chars_max = chars_max
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return "unknown"
        value = value[:self.chars_max]
        if value in self.seen:
            return value
        if len(self.seen) >= self.values_max:
            return OTHER
        self.seen.add(value)
        return value
