"""`rcmflow reconcile` at production size: its peak RSS and time over a generated history.

Fills a fresh embedded broker (Tansu) with what a long-running system holds, in the formats
the worker and the connectors write: canonical events (``bench.workload``: charges, claims,
adjudications, patient payments, with replays) on rcm.events; the processor's output for them
(``Processor.process`` in batches, as the worker runs it) on rcm.postings and rcm.accounts
(heads and items, each batch's newest); and the raw records the connectors keep with their
source totals (a payment row on rcm.raw.payments per patient payment, an HL7 message with its
status and totals headers on rcm.raw.hl7 per charge). Then runs ``rcmflow reconcile --json``
in a child process under ``/usr/bin/time -v`` and reports its maximum RSS, wall time, exit
code (0: the generated history agrees with itself) and counts.

    python -m bench.reconcile_memory --events 1300000 --accounts 100000

``--quick``: 60,000 events over 5,000 accounts (a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.procs import run_timed
from bench.workload import WorkloadSpec, generate
from rcmflow.connectors.inbound.totals import HEADER_STATUS, HEADER_TOTALS, SourceTotals
from rcmflow.runtime.broker import EmbeddedBroker, ensure_topics
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables, head_records, item_records
from rcmflow.streams.processor import BatchResult, Message, Processor
from rcmflow.streams.topics import (
    ACCOUNTS,
    EVENTS,
    POSTINGS,
    RAW_HL7,
    RAW_PAYMENTS,
    topic_specs,
)

__all__ = ["main", "fill", "measure"]

PARTITIONS = 4
#: Messages per processor batch (the worker's batches are of this order).
BATCH = 5_000
IN_FLIGHT_MAX = 20_000

Out = tuple[str, int, bytes | None, bytes, list[tuple[str, bytes]] | None]


def _partition(key: bytes) -> int:
    return zlib.crc32(key) % PARTITIONS


def _raw_records(value: bytes) -> Iterator[Out]:
    """What a connector keeps beside a new event: a payment row, or an HL7 message's headers."""
    doc = orjson.loads(value)
    kind, account, event_id = doc["kind"], doc["account"], doc["event_id"]
    day = date.fromisoformat(doc["occurred_at"][:10])
    if kind == "patient_payment":
        totals = SourceTotals(event_ids=[(account, event_id)])
        totals.add(account, day, "payments", doc["amount_cents"], event_id)
        row = {"origin": "file:bench.csv", "row": 1, "status": "applied",
               "fields": {"account": account, "type": "payment",
                          "amount": f"{doc['amount_cents'] / 100:.2f}", "date": str(day)},
               "source_totals": totals.to_json()}
        key = event_id.encode()
        yield RAW_PAYMENTS, _partition(key), key, orjson.dumps(row), None
    elif kind == "charge_posted":
        totals = SourceTotals(event_ids=[(account, event_id)])
        totals.add(account, day, "charges", doc["amount_cents"], event_id)
        message = (f"MSH|^~\\&|EHR|H|RCM|H|20260105||DFT^P03|{event_id}|P|2.5\r"
                   f"PID|1||{account}\rFT1|1|||20260105||CG|0450|||1|"
                   f"{doc['amount_cents'] / 100:.2f}\r").encode()
        key = account.encode()
        yield RAW_HL7, _partition(key), key, message, [
            (HEADER_STATUS, b"applied"), (HEADER_TOTALS, totals.header())]


def _compact(tables: MemoryTables, result: BatchResult) -> None:
    """Values copied to their size (orjson's documents each hold a 4 KB allocation)."""
    for key in result.dedup_writes:
        if (value := tables.dedup.get(key)) is not None:
            tables.dedup[key] = bytes(memoryview(value))
    for key in {**head_records(result), **item_records(result)}:
        tables.accounts[key] = bytes(memoryview(tables.accounts[key]))


async def fill(kafka: KafkaConnection, events: int, accounts: int,
               replay_ratio: float) -> dict[str, int]:
    """Produce the history; returns the records per topic."""
    await ensure_topics(kafka, topic_specs("rcmflow"), PARTITIONS, 1)
    t0 = time.monotonic()
    workload = generate(WorkloadSpec(events=events, accounts=accounts,
                                     replay_ratio=replay_ratio))
    print(f"generated {len(workload.records):,} events in {time.monotonic() - t0:.0f} s",
          flush=True)
    processor = Processor(load_chart(None))
    tables = MemoryTables()
    offsets = [0] * PARTITIONS
    counts: dict[str, int] = {}
    seen: set[bytes] = set()
    producer = AIOKafkaProducer(**kafka.client_options(), acks=1, linger_ms=20,
                                max_batch_size=1024 * 1024,
                                max_request_size=8 * 1024 * 1024)
    await producer.start()
    pending: list[asyncio.Future[Any]] = []

    async def send(out: Out) -> None:
        topic, partition, key, value, headers = out
        pending.append(await producer.send(topic, value=value, key=key, partition=partition,
                                           headers=headers))
        counts[topic] = counts.get(topic, 0) + 1
        if len(pending) >= IN_FLIGHT_MAX:
            await asyncio.gather(*pending)
            pending.clear()

    try:
        for start in range(0, len(workload.records), BATCH):
            messages = []
            for key, value in workload.records[start:start + BATCH]:
                p = _partition(key)
                messages.append(Message(EVENTS, p, offsets[p], key, value,
                                        int(time.time() * 1000)))
                offsets[p] += 1
                await send((EVENTS, p, key, value, None))
                if value not in seen:  # a replay is not a second unit
                    seen.add(value)
                    for raw in _raw_records(value):
                        await send(raw)
            result = processor.process(messages, tables)
            tables.write(result)
            _compact(tables, result)
            for p, key, value in result.postings:
                await send((POSTINGS, p, key, value, None))
            for (p, key), value in {**item_records(result), **head_records(result)}.items():
                await send((ACCOUNTS, p, key, value, None))
            if start // BATCH % 40 == 0:
                print(f"  {start + len(messages):,} events, {counts.get(POSTINGS, 0):,} "
                      f"postings, {time.monotonic() - t0:.0f} s", flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(f"filled in {time.monotonic() - t0:.0f} s: {counts}", flush=True)
    return counts


def measure(bootstrap: str, run_dir: Path, impl: Path | None = None) -> dict[str, Any]:
    """``rcmflow reconcile --json`` in a child under /usr/bin/time -v; with ``impl``, that
    file's ``reconcile`` instead (another version of audit/reconcile.py, to compare
    on one history)."""
    env = os.environ | {"RCMFLOW_BROKER": f"kafka://{bootstrap}"}
    out_file, log_file = run_dir / "reconcile.json", run_dir / "reconcile.log"
    command = [str(Path(sys.executable).with_name("rcmflow")), "reconcile", "--json"]
    if impl is not None:
        command = [sys.executable, "-m", "bench.reconcile_memory", "--child", str(impl)]
    run = run_timed(command, out_file, log_file, env)
    report = run.output or {}
    return {"exit": run.exit,
            "max_rss_mib": run.max_rss_kb / 1024 if run.max_rss_kb else None,
            "wall_s": run.wall_s, "counts": report.get("counts"),
            "findings_by_cause": report.get("findings_by_cause"),
            "progress_lines": [line for line in run.log.splitlines() if ": " in line
                               and ("records" in line or "done" in line)][-12:]}


def _child(impl: Path) -> int:
    """Run the reconcile of ``impl`` (a copy of audit/reconcile.py) as the CLI does."""
    import importlib.util

    from rcmflow.runtime.settings import Settings

    spec = importlib.util.spec_from_file_location("rcmflow.connectors.erp._bench_reconcile",
                                                  impl)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    settings = Settings()
    kafka = KafkaConnection.plaintext(os.environ["RCMFLOW_BROKER"].removeprefix("kafka://"))
    report = asyncio.run(module.reconcile(kafka, load_chart(settings.coa)))
    print(json.dumps(report.to_json()))
    return 1 if report.errors else 0


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        return _child(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_300_000)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--replay-ratio", type=float, default=0.05)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--impl", type=Path, action="append", default=[],
                        help="also measure this copy of audit/reconcile.py (say, "
                             "`git show 0d5d6d3:audit/reconcile.py`) on the history")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.accounts = 60_000, 5_000
    # stopped (SIGTERM): still stop the broker, which holds the whole history in memory
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_dir = Path(tempfile.mkdtemp(prefix="rcmflow-reconcile-bench-"))
    broker = EmbeddedBroker(log_file=run_dir / "broker.log").start()
    try:
        counts = asyncio.run(fill(broker.connection, args.events, args.accounts,
                                  args.replay_ratio))
        for impl in [*args.impl, None]:
            result = measure(broker.bootstrap, run_dir, impl)
            result |= {"impl": str(impl or "rcmflow reconcile"),
                       "events": args.events, "accounts": args.accounts,
                       "produced": counts, "python": platform.python_version(),
                       "cpus": os.cpu_count()}
            print(json.dumps(result, indent=1), flush=True)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
