"""What `rcmflow erp ADAPTER` runs: build the adapter from settings, run the consumer loop."""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError

from rcmflow.connectors.erp import ADAPTERS
from rcmflow.connectors.erp.base import ErpAdapter
from rcmflow.connectors.erp.runner import RunnerOptions, run_connector
from rcmflow.runtime.broker import ensure_topics
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.faults import NO_FAULTS, Faults
from rcmflow.runtime.kafka_access import erp_group
from rcmflow.streams.chart import load_chart
from rcmflow.streams.topics import ERP_OUTCOMES, topic_specs

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["build_adapter", "run_erp", "group_id"]


def group_id(settings: Settings, adapter: str) -> str:
    """The connector's own consumer group: one per adapter, apart from the workers'."""
    return erp_group(settings.app_id, adapter)


def build_adapter(name: str, settings: Settings) -> ErpAdapter:
    if name not in ADAPTERS:
        raise ValueError(f"unknown ERP adapter {name!r}; known: {', '.join(sorted(ADAPTERS))}")
    module = importlib.import_module(f"{__package__}.{ADAPTERS[name]}")
    adapter: ErpAdapter = module.build(settings, load_chart(settings.coa))
    return adapter


def run_erp(settings: Settings, name: str, *, idle_exit_s: float | None = None,
            metrics_port: int | None = None, faults: Faults = NO_FAULTS) -> ExitCode:
    """``metrics_port`` (the --metrics-port option) overrides RCMFLOW_ERP_METRICS_PORT;
    ``faults``: test-only kills (``rcmflow/runtime/faults.py``)."""
    logging.getLogger("rcmflow.erp").setLevel(settings.log_level.upper().replace("WARN",
                                                                                  "WARNING"))
    adapter = build_adapter(name, settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    options = RunnerOptions(
        kafka=settings.kafka(), group_id=group_id(settings, name),
        batch_max=settings.erp_batch_max, timeout_s=settings.erp_timeout_s,
        retry_max=settings.erp_retry_max, backoff_base_s=settings.erp_backoff_base_s,
        backoff_max_s=settings.erp_backoff_max_s,
        breaker_cooldown_s=settings.erp_breaker_cooldown_s,
        progress_s=settings.erp_progress_s,
        status_file=settings.data_dir / f"erp-{name}.status.json",
        idle_exit_s=idle_exit_s, session_timeout_s=settings.session_timeout_s,
        metrics_host=settings.metrics_host,
        metrics_port=settings.erp_metrics_port if metrics_port is None else metrics_port,
        faults=faults)
    # rcm.erp.outcomes where a worker of an older version made the other topics.
    outcomes = [s for s in topic_specs(settings.app_id) if s.name == ERP_OUTCOMES]
    try:
        asyncio.run(ensure_topics(options.kafka, outcomes, settings.partitions,
                                  settings.replication_factor, needed=[ERP_OUTCOMES]))
    except (KafkaError, OSError):
        pass  # the broker is down: the connector says so as it starts (and waits)
    return asyncio.run(run_connector(adapter, options))
