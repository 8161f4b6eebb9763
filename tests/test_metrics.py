"""rcmflow/runtime/metrics.py and the --metrics-port option of the long-running commands."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from rcmflow.cli import app
from rcmflow.runtime.metrics import (
    OTHER,
    BoundedLabel,
    Histogram,
    counter,
    gauge,
    histogram,
    new_registry,
    render,
    serve,
)
from tests.scrape import scrape


def test_families_are_read_at_scrape_time_and_served_over_http() -> None:
    seen = {"n": 0}
    registry = new_registry(lambda: [
        counter("rcmflow_test_things", "things", [({"adapter": "csv"}, seen["n"])]),
        gauge("rcmflow_test_lag_records", "lag", [({}, None)]),
    ])
    port = serve(registry, "127.0.0.1", 0)
    assert scrape(port)["rcmflow_test_things_total"] == 0
    seen["n"] = 7
    sample = scrape(port)
    assert sample["rcmflow_test_things_total"] == 7
    assert sample["rcmflow_test_lag_records"] != sample["rcmflow_test_lag_records"]  # NaN
    families = {f.name for f in text_string_to_metric_families(render(registry).decode())}
    assert {"rcmflow_test_things", "process_cpu_seconds", "python_gc_objects_collected"} \
        <= families


def test_a_taken_port_is_refused_with_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"metrics endpoint 127.0.0.1:{port}"):
            serve(new_registry(list), "127.0.0.1", port)


@pytest.mark.parametrize(("command", "setting", "metric"), [
    ("erp", "RCMFLOW_ERP_METRICS_PORT", "rcmflow_erp_lag_records"),
    ("worker", "RCMFLOW_WORKER_METRICS_PORT", "rcmflow_worker_events_total"),
    ("mllp", "RCMFLOW_MLLP_METRICS_PORT", "rcmflow_mllp_messages_total"),
    ("consume", "RCMFLOW_CONSUME_METRICS_PORT", "rcmflow_consume_records_total"),
    ("audit", "RCMFLOW_AUDIT_METRICS_PORT", "rcmflow_audit_dlq_items"),
])
def test_help_names_the_metrics_option(command: str, setting: str, metric: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--metrics-port" in text and setting in text and metric in text, text


def test_a_histogram_is_cumulative_with_its_count_and_sum() -> None:
    latency = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        latency.observe(seconds, ("csv",))
    text = render(new_registry(lambda: [
        histogram("rcmflow_test_seconds", "t", ["adapter"], latency),
        histogram("rcmflow_test_empty_seconds", "t", [], Histogram())])).decode()
    samples = {(s.name, s.labels.get("le")): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    # Prometheus' buckets hold everything up to and including their bound.
    assert samples[("rcmflow_test_seconds_bucket", "0.1")] == 2
    assert samples[("rcmflow_test_seconds_bucket", "1.0")] == 3
    assert samples[("rcmflow_test_seconds_bucket", "+Inf")] == 4
    assert samples[("rcmflow_test_seconds_count", None)] == 4
    assert samples[("rcmflow_test_seconds_sum", None)] == 3.65
    # An empty one is still announced (its name is exported before the first observation).
    assert "# TYPE rcmflow_test_empty_seconds histogram" in text


def test_a_bounded_label_folds_the_rest_into_other() -> None:
    label = BoundedLabel(values_max=2, chars_max=5)
    assert [label(v) for v in ("hl7", "x12", "lockbox", "hl7", None, "")] == \
        ["hl7", "x12", OTHER, "hl7", "unknown", "unknown"]
    assert BoundedLabel()("a" * 100) == "a" * 64


@given(st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), max_size=200),
       st.integers(min_value=1, max_value=7))
def test_histogram_buckets_count_what_is_at_most_their_bound(values: list[float],
                                                             split: int) -> None:
    latency = Histogram()
    # One at a time or a batch at a time: the same histogram.
    for start in range(0, len(values), split):
        latency.observe_many(values[start:start + split])
    counts, _ = latency.series.get((), ([0] * (len(latency.buckets) + 1), [0.0]))
    cumulative = 0
    for bound, n in zip(latency.buckets, counts, strict=False):
        cumulative += n
        assert cumulative == sum(1 for v in values if v <= bound)
    assert sum(counts) == len(values) == latency.count()
