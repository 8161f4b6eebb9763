"""First-page time of `rcmflow dlq list` and `rcmflow accounts list` over a large topic.

    python -m bench.listings --records 1000000

Starts an embedded broker (Tansu, memory), writes N DLQ records and N rcm.accounts records
(heads and items, each head written twice so compaction has work left) with a plain
producer, then times the first page and the tenth page of each listing as `rcmflow` runs
them (a new process each: interpreter start included) and the first page in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from rcmflow.cli.ops import dlq_page, heads_page
from rcmflow.runtime.broker import EmbeddedBroker, ensure_topics
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.topics import ACCOUNTS, DLQ, topic_specs

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
    template = dlq_record(stage="validate", reason_code="invalid_event",
                          reason="amount_cents: must be an integer", payload=b'{"x": 1}',
                          origin=Origin(topic="rcm.events", partition=0, offset=0, key="A"),
                          context={"account": "A"}).model_dump()
    out: list[tuple[str, bytes | None, bytes]] = []
    for i in range(n):
        doc = template | {"dlq_id": f"dlq_{i:024x}", "context": {"account": f"A{i % 100_000}"}}
        out.append((DLQ, None, json.dumps(doc, default=str).encode()))
    return out


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
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return took


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
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(log_file=Path(tmp) / "broker.log").start()
        try:
            kafka = broker.connection
            asyncio.run(ensure_topics(kafka, topic_specs("rcmflow"), args.partitions, 1))
            started = time.perf_counter()
            asyncio.run(_produce(kafka, _dlq(args.records)))
            asyncio.run(_produce(kafka, _accounts(args.records)))
            print(f"wrote {args.records:,} DLQ and {args.records:,} rcm.accounts records "
                  f"in {time.perf_counter() - started:.0f}s")
            env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
            env.update(RCMFLOW_BROKER=broker.url, COLUMNS="200")
            for name, command in (("dlq list", ("dlq", "list")),
                                  ("accounts list", ("accounts", "list"))):
                first = min(_cli(env, *command) for _ in range(3))
                _, tenth = _after(env, *command, pages=10)
                print(f"{name}: first page {first:.2f}s (process, best of 3); "
                      f"10th page {tenth:.2f}s")
            for name, page in (("dlq_page", dlq_page), ("heads_page", heads_page)):
                started = time.perf_counter()
                rows, _ = asyncio.run(page(kafka, limit=50, after=None))
                print(f"{name}: first page of {len(rows)} in-process "
                      f"{time.perf_counter() - started:.2f}s")
            print(f"interpreter + import of rcmflow.cli: {_cli(env, '--help'):.2f}s")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
