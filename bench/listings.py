"""First-page time of `rcmflow dlq list` and `rcmflow accounts list` over a large topic.

    python -m bench.listings --records 1000000 [--states 100000] [--broker tansu|kafka]

Starts a broker (embedded Tansu in memory, or the tests' Apache Kafka), writes N DLQ records,
the work queue's states of the oldest --states of them (resolved: rcm.dlq.state, which every
`dlq list` reads whole) and N rcm.accounts records (heads and items, each head written twice
so compaction has work left) with a plain producer, then times each listing's first page and
tenth page as `rcmflow` runs them (a new process each: interpreter start and imports
included; best and median of --runs), the first page in-process, `import rcmflow.cli` and
`rcmflow --help`.
The load average is printed with the figures: on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.brokers import BROKERS, start_broker
from rcmflow.ops.accounts import heads_page
from rcmflow.ops.items import Filters, ItemState, Step
from rcmflow.ops.workqueue import page as queue_page
from rcmflow.runtime.broker import ensure_topics
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import ACCOUNTS, DLQ, DLQ_STATE, topic_specs

ITEMS_PER_ACCOUNT = 8


async def _produce(kafka: KafkaConnection, records: list[tuple[str, bytes | None, bytes]]
                   ) -> None:
    producer = AIOKafkaProducer(**kafka.client_options(), acks=1, linger_ms=20,
                                max_batch_size=1_000_000, max_request_size=8_000_000)
    await producer.start()
    try:
        pending = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _dlq(n: int) -> list[tuple[str, bytes | None, bytes]]:
    template = dlq_record(Rejection(stage="validate", reason_code="invalid_event",
                                    detail="amount_cents: must be an integer"),
                          payload=b'{"x": 1}',
                          origin=Origin(topic="rcm.events", partition=0, offset=0, key="A"),
                          context={"account": "A"}).model_dump()
    out: list[tuple[str, bytes | None, bytes]] = []
    for i in range(n):
        doc = template | {"dlq_id": f"dlq_{i:024x}", "context": {"account": f"A{i % 100_000}"}}
        out.append((DLQ, None, json.dumps(doc, default=str).encode()))
    return out


def _states(n: int) -> list[tuple[str, bytes | None, bytes]]:
    """The oldest ``n`` items resolved (each with one step), keyed by their dlq_id."""
    step = Step(state="resolved", at=datetime.now(UTC), by="bench", note="closed in bulk")
    out: list[tuple[str, bytes | None, bytes]] = []
    for i in range(n):
        dlq_id = f"dlq_{i:024x}"
        state = ItemState(dlq_id=dlq_id, topic=DLQ, history=(step,))
        out.append((DLQ_STATE, dlq_id.encode(), state.model_dump_json().encode()))
    return out


async def _dlq_page(kafka: KafkaConnection, *, limit: int, after: None) -> tuple[list[Any], Any]:
    return await queue_page(kafka, Filters(), limit=limit, after=after)


def _accounts(n: int) -> list[tuple[str, bytes | None, bytes]]:
    head = {"layout": 2, "status": "open", "version": 1, "entity": "01",
            "last_event_at": "2026-11-02T09:00:00-05:00",
            "balances": {"insurance_ar": 0, "patient_ar": 100, "unapplied_credit": 0,
                         "balance": 100}}
    out: list[tuple[str, bytes | None, bytes]] = []
    accounts = n // (ITEMS_PER_ACCOUNT + 2)
    for a in range(accounts):
        account = f"A{a:07d}"
        out.append((ACCOUNTS, account.encode(), json.dumps(head | {"account": account}).encode()))
        for i in range(ITEMS_PER_ACCOUNT):
            out.append((ACCOUNTS, f"{account}/charge/C{i}".encode(),
                        json.dumps({"event_id": f"C{i}", "amount_cents": 100}).encode()))
    for a in range(accounts):  # each head again, newer: the older one is still in the log
        account = f"A{a:07d}"
        out.append((ACCOUNTS, account.encode(),
                    json.dumps(head | {"account": account, "version": 2}).encode()))
    return out


def _cli(env: dict[str, str], *args: str) -> float:
    return _python(env, "-m", "rcmflow.cli", *args)


def _python(env: dict[str, str], *args: str) -> float:
    """Seconds a new interpreter takes to run ``args`` (it must exit 0)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return took


def _times(runs: int, measure: Callable[[], float]) -> str:
    took = [measure() for _ in range(runs)]
    return f"best {min(took):.2f}s, median {statistics.median(took):.2f}s of {runs}"


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def _after(env: dict[str, str], *args: str, pages: int) -> tuple[str, float]:
    """The cursor of page ``pages`` + 1, and the seconds of the last page read."""
    cursor: list[str] = []
    took = 0.0
    for _ in range(pages):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", *args, "--json", *cursor],
                              env=env, capture_output=True, text=True, timeout=600)
        took = time.perf_counter() - started
        assert done.returncode == 0, done.stderr
        cursor = ["--after", done.stderr.split("--after ")[1].split()[0]]
    return cursor[1], took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--states", type=int, default=100_000,
                        help="Work-queue state records (the oldest items, resolved).")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--broker", choices=BROKERS, default="tansu")
    parser.add_argument("--runs", type=int, default=5, help="Processes timed per figure.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "logs").mkdir()
        broker = start_broker(args.broker, Path(tmp))
        try:
            kafka = broker.connection
            asyncio.run(ensure_topics(kafka, topic_specs("rcmflow"), args.partitions, 1))
            started = time.perf_counter()
            asyncio.run(_produce(kafka, _dlq(args.records)))
            asyncio.run(_produce(kafka, _states(min(args.states, args.records))))
            asyncio.run(_produce(kafka, _accounts(args.records)))
            print(f"{broker.description}: wrote {args.records:,} DLQ, {args.states:,} "
                  f"rcm.dlq.state and {args.records:,} rcm.accounts records in "
                  f"{time.perf_counter() - started:.0f}s")
            env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
            env.update(RCMFLOW_BROKER=f"kafka://{broker.bootstrap}", COLUMNS="200")
            print(f"python -c 'import rcmflow.cli': "
                  f"{_times(args.runs, lambda: _python(env, '-c', 'import rcmflow.cli'))}")
            print(f"rcmflow --help: {_times(args.runs, lambda: _cli(env, '--help'))}")
            for name, command in (("dlq list", ("dlq", "list")),
                                  ("accounts list", ("accounts", "list"))):
                first = _times(args.runs, partial(_cli, env, *command))
                _, tenth = _after(env, *command, pages=10)
                print(f"{name}: first page {first} (a process each); 10th page {tenth:.2f}s "
                      f"({_load()})")
            for page_name, page in (("dlq page", _dlq_page), ("heads_page", heads_page)):
                started = time.perf_counter()
                rows, _ = asyncio.run(page(kafka, limit=50, after=None))
                print(f"{page_name}: first page of {len(rows)} in-process "
                      f"{time.perf_counter() - started:.2f}s")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
