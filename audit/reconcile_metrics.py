"""`rcmflow reconcile --metrics-file PATH`: a run's result as Prometheus metrics in a file.

Reconcile is a job, not a server: run it periodically (cron, a systemd timer, a Kubernetes
CronJob) and let node_exporter's textfile collector (``--collector.textfile.directory``)
serve the file it writes. The file is replaced atomically, so a scrape never reads half of
one. Labels: the finding causes (``CAUSES``, a fixed set) and the sides compared; never an
account. The standard process metrics are left out (node_exporter has its own).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from rcmflow.audit.reconcile import CAUSES, Report
from rcmflow.runtime.metrics import Metric, gauge
from rcmflow.runtime.settings import Settings

_FILE_BYTES_MAX = 1024 * 1024

__all__ = ["reconcile_families", "write_metrics_file", "last_run_path", "LastRun",
           "read_last_run"]


def last_run_path(settings: Settings) -> Path:
    """The file the last reconcile's result is kept in (RCMFLOW_RECONCILE_METRICS_FILE)."""
    return settings.reconcile_metrics_file or settings.data_dir / "reconcile.prom"


@dataclass(frozen=True)
class LastRun:
    """The last reconcile as its metrics file says (the ops site's Health view)."""

    finished_at: datetime
    ok: bool
    findings: dict[str, int]  # cause -> count (the causes that found something)


def read_last_run(path: Path) -> LastRun | None:
    """None: no reconcile has written ``path`` yet (or it is not such a file)."""
    try:
        text = path.read_text()[:_FILE_BYTES_MAX]
    except OSError:
        return None
    finished: float | None = None
    ok = False
    findings: dict[str, int] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "rcmflow_reconcile_last_run_timestamp_seconds":
                    finished = sample.value
                elif sample.name == "rcmflow_reconcile_ok":
                    ok = sample.value == 1
                elif sample.name == "rcmflow_reconcile_findings" and sample.value:
                    findings[sample.labels["cause"]] = int(sample.value)
    except ValueError:
        return None
    if finished is None:
        return None
    return LastRun(datetime.fromtimestamp(finished, tz=UTC), ok, findings)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    registry.register(_Families(reconcile_families(
        report, time.time() if finished_at_s is None else finished_at_s)))
    write_to_textfile(str(path), registry)
