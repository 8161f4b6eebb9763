"""`rcmflow reconcile --metrics-file PATH`: a run's result as Prometheus metrics in a file.

Reconcile is a job, not a server: run it periodically (cron, a systemd timer, a Kubernetes
CronJob) and let node_exporter's textfile collector (``--collector.textfile.directory``)
serve the file it writes. The file is replaced atomically, so a scrape never reads half of
one. Labels: the finding causes (``CAUSES``, a fixed set) and the sides compared; never an
account. The standard process metrics are left out (node_exporter has its own).
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.registry import Collector

from rcmflow.audit.reconcile import CAUSES, Report
from rcmflow.runtime.metrics import Metric, gauge

__all__ = ["reconcile_families", "write_metrics_file"]


def reconcile_families(report: Report, finished_at_s: float) -> list[Metric]:
    totals = report.totals
    sides = {"events": totals.events_cents, "postings": totals.postings_cents}
    if report.erp is not None:
        sides |= {"dlq": totals.dlq_cents, "erp": totals.erp_cents}
    return [
        gauge("rcmflow_reconcile_findings", "Differences the last reconcile found, by likely "
              "cause (every cause listed, 0 when none) and level: error or warning (suspense; "
              "not 'severity', which alerts use)",
              [({"cause": cause, "level": severity},
                report.findings_by_cause.get(cause, 0))
               for cause, (severity, _) in sorted(CAUSES.items())]),
        gauge("rcmflow_reconcile_ok", "1 when the last reconcile found no error, else 0",
              [({}, 0 if report.errors else 1)]),
        gauge("rcmflow_reconcile_total_cents", "The last reconcile's totals (debit side, "
              "cents) per side compared: events (what they imply), postings, dlq and erp "
              "(with --erp)", [({"side": side}, cents) for side, cents in sides.items()]),
        gauge("rcmflow_reconcile_last_run_timestamp_seconds", "Unix time the last reconcile "
              "finished", [({}, finished_at_s)]),
    ]


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def write_metrics_file(report: Report, path: Path, finished_at_s: float | None = None) -> None:
    """Write (atomically replace) ``path`` in the text exposition format."""
    registry = CollectorRegistry()
    registry.register(_Families(reconcile_families(
        report, time.time() if finished_at_s is None else finished_at_s)))
    write_to_textfile(str(path), registry)
