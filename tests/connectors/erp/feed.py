"""Posting deltas made by the real core, published to rcm.postings, and connector processes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rcmflow.connectors.erp.base import ErpAdapter
from rcmflow.connectors.erp.runner import Connector, Progress, RunnerOptions
from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.postings import PostingDelta, posting_id
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS, POSTINGS, POSTINGS_DLQ
from tests.conftest import Broker, WorkerProcess, wait_until
from tests.workload import account_stream

__all__ = ["real_deltas", "approved_refund_delta", "publish_deltas", "unmapped_copy",
           "ConnectorProcess",
           "dlq_records", "feed_slowly", "already_there_in_logs", "start_connector",
           "run_in_process"]


def real_deltas(accounts: int, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """(account key, PostingDelta JSON) as the worker emits them for a random stream."""
    rng = random.Random(seed)
    docs = [doc for n in range(accounts) for doc in account_stream(rng, f"E{seed}-{n:05d}")]
    messages = [Message(EVENTS, 0, i, d["account"].encode(), json.dumps(d).encode())
                for i, d in enumerate(docs)]
    result = Processor(load_chart()).process(messages, MemoryTables())
    return [(key, value) for _, key, value in result.postings]


def unmapped_copy(value: bytes, gl_account: str = "9999-NOPE") -> tuple[bytes, bytes]:
    """A balanced delta naming a GL account no chart maps (a new posting id)."""
    doc = json.loads(value)
    doc["event_id"] += "-unmapped"
    doc["posting_id"] = posting_id(doc["account"], doc["event_id"], doc["coa_version"])
    doc["lines"][0]["gl_account"] = gl_account
    PostingDelta.model_validate(doc)
    return doc["account"].encode(), json.dumps(doc).encode()


def publish_deltas(broker: Broker, items: list[tuple[bytes, bytes]]) -> None:
    asyncio.run(publish(broker.connection, [(POSTINGS, k, v) for k, v in items]))


def feed_slowly(broker: Broker, items: list[tuple[bytes, bytes]], chunks: int,
                pause_s: float) -> threading.Thread:
    """Publish in chunks from a thread, so connectors die while deltas flow."""
    size = len(items) // chunks + 1

    def feed() -> None:
        for start in range(0, len(items), size):
            publish_deltas(broker, items[start:start + size])
            time.sleep(pause_s)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def dlq_records(broker: Broker) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection,
                                                                 POSTINGS_DLQ))]


def run_in_process(adapter: ErpAdapter, broker: Broker, group: str = "erp-test",
                   **options: Any) -> Progress:
    """Run the real consumer loop in this process until idle with zero lag."""
    return run_connector(adapter, broker, group, **options).progress


def run_connector(adapter: ErpAdapter, broker: Broker, group: str = "erp-test",
                  **options: Any) -> Connector:
    """``run_in_process``, returning the connector (its progress and metrics' flow)."""
    opts = RunnerOptions(kafka=broker.connection, group_id=group, idle_exit_s=1.5,
                         session_timeout_s=1.5, progress_s=0.5, backoff_base_s=0.05,
                         backoff_max_s=0.5, breaker_cooldown_s=0.5, **options)
    connector = Connector(adapter, opts)
    assert asyncio.run(connector.run()) == 0
    return connector


class ConnectorProcess(WorkerProcess):
    pass


def connector_env(broker: Broker, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(RCMFLOW_BROKER=broker.url, RCMFLOW_DATA_DIR=str(data_dir),
               RCMFLOW_LOG_LEVEL="info", RCMFLOW_SESSION_TIMEOUT_S="1.5",
               RCMFLOW_ERP_PROGRESS_S="0.5", RCMFLOW_ERP_BACKOFF_BASE_S="0.1",
               RCMFLOW_ERP_BACKOFF_MAX_S="1", RCMFLOW_ERP_BREAKER_COOLDOWN_S="1",
               RCMFLOW_ERP_RETRY_MAX="5")
    env.update(extra)
    return env


def start_connector(adapter: str, broker: Broker, data_dir: Path, n: int,
                    *args: str, **extra: str) -> ConnectorProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"erp-{adapter}-{n}.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "rcmflow.cli", "erp", adapter, *args],
            env=connector_env(broker, data_dir, **extra), stdout=handle,
            stderr=subprocess.STDOUT)
    return ConnectorProcess(f"erp-{adapter}", log, process)


def already_there_in_logs(data_dir: Path) -> int:
    """How many re-sent deltas the ERP answered "already there" to, over all runs' logs."""
    return sum(int(n) for log in data_dir.glob("erp-*.log") for n in re.findall(
        r"(\d+) of \d+ deltas were already in the ERP", log.read_text(errors="replace")))


def status(data_dir: Path, adapter: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((data_dir / f"erp-{adapter}.status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc


def wait_done(proc: ConnectorProcess, check: Callable[[], bool], timeout_s: float,
              what: str) -> None:
    wait_until(lambda: check() or not proc.alive(), timeout_s, what, proc.log_tail)
    assert proc.alive() or proc.process.returncode == 0, proc.log_tail()


def approved_refund_delta() -> PostingDelta:
    """A 1 500.00 refund the policy's two_managers rule approved: ann asked, bob and dee
    approved (what the worker emits, through its own processor)."""
    from tests.factories import event_doc, messages, payment

    docs = [payment(200_000, account="RF1", event_id="PAY-RF1"),
            event_doc("refund", "RF1", event_id="RQ-RF1", amount_cents=150_000,
                      requested_by="ann", reason="overpaid"),
            *(event_doc("refund_approved", "RF1", event_id=f"ok:{by}", request_id="RQ-RF1",
                        by=by, role="refund_manager") for by in ("bob", "dee"))]
    result = Processor(load_chart()).process(messages(docs), MemoryTables())
    refund, = [d for d in (PostingDelta.model_validate_json(v) for _, _, v in result.postings)
               if d.approval]
    return refund
