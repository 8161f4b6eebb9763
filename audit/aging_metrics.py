"""`rcmflow aging --metrics-file PATH`: the aged AR as Prometheus metrics in a file.

Aging is a job, like reconcile (``reconcile_metrics.py``): run it periodically (cron, a
systemd timer, a Kubernetes CronJob) into node_exporter's textfile directory. The file is
replaced atomically. Labels: kind (insurance, patient), age (the buckets and ``credit``) and
entity; never an account or a payer (payers are many; the report groups by them).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from datetime import time as clock
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.registry import Collector

from rcmflow.audit.aging import AGE_BUCKETS, CREDIT, AgingReport
from rcmflow.runtime.metrics import Metric, gauge

__all__ = ["aging_families", "write_aging_metrics"]


def aging_families(report: AgingReport, finished_at_s: float) -> list[Metric]:
    cents: dict[tuple[str, str, str], int] = {}
    for entity in sorted({i.entity for i in report.items}):
        for kind in ("insurance", "patient"):
            for age in (*AGE_BUCKETS, CREDIT):  # every series, 0 when none: no gaps
                cents[(kind, age, entity)] = 0
    for item in report.items:
        cents[(item.kind, item.bucket, item.entity)] += item.cents
    return [
        gauge("rcmflow_ar_aging_cents", "Open AR at the last `rcmflow aging`, in cents, by "
              "kind (insurance, patient), age bucket in days (credit: more credited than "
              "open) and entity",
              [({"kind": k, "age": a, "entity": e}, v) for (k, a, e), v in cents.items()]),
        gauge("rcmflow_ar_aging_as_of_timestamp_seconds", "The day the last aging aged the AR "
              "at (Unix time of its midnight, UTC)",
              [({}, _midnight_s(report))]),
        gauge("rcmflow_ar_aging_last_run_timestamp_seconds", "Unix time the last `rcmflow "
              "aging --metrics-file` finished", [({}, finished_at_s)]),
    ]


def _midnight_s(report: AgingReport) -> float:
    return datetime.combine(report.as_of, clock(), tzinfo=UTC).timestamp()


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def write_aging_metrics(report: AgingReport, path: Path,
                        finished_at_s: float | None = None) -> None:
    """Write (atomically replace) ``path`` in the text exposition format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    registry.register(_Families(aging_families(
        report, time.time() if finished_at_s is None else finished_at_s)))
    write_to_textfile(str(path), registry)
