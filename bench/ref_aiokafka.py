"""The plain-Python ceiling: AIOKafkaConsumer + AIOKafkaProducer and in-memory dicts.

Per batch (up to 1,000 records, like rcmflow): dedup each event by (account, event_id) with a
content digest, move the account's balance, send one JSON delta per new money-moving event to
the source partition's number of the output topic, wait for the acks, then commit the batch's
offsets. Runs until SIGTERM, then prints its own counters (``BENCH_RESULT {...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench.reference import (
    MONEY_KINDS,
    balance_effect,
    delta_json,
    digest,
    emit_result,
    reference_arguments,
)

BATCH_MAX = 1000


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        args.input, bootstrap_servers=args.bootstrap, group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000, max_poll_records=BATCH_MAX)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    await producer.start()
    await consumer.start()
    seen: dict[tuple[bytes, str], str] = {}  # (account, event_id) -> content digest
    accounts: dict[bytes, list[int]] = {}  # account -> [version, balance cents]
    counts = {"consumed": 0, "new": 0, "replays": 0, "conflicts": 0, "deltas": 0}
    first_consumed: float | None = None
    last_acked: float | None = None
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=BATCH_MAX)
            if not batch:
                continue
            if first_consumed is None:
                first_consumed = time.time()
            futures = []
            offsets: dict[TopicPartition, int] = {}
            for tp, messages in batch.items():
                for m in messages:
                    counts["consumed"] += 1
                    value: bytes = m.value
                    doc = json.loads(value)
                    key = (m.key, doc["event_id"])
                    content = digest(value)
                    known = seen.get(key)
                    if known is not None:
                        counts["replays" if known == content else "conflicts"] += 1
                        continue
                    seen[key] = content
                    counts["new"] += 1
                    state = accounts.setdefault(m.key, [0, 0])
                    state[0] += 1
                    effect = balance_effect(doc)
                    state[1] += effect
                    if doc["kind"] not in MONEY_KINDS:
                        continue
                    futures.append(await producer.send(
                        args.output, delta_json(doc, state[0], effect, state[1]), key=m.key,
                        partition=tp.partition))
                offsets[tp] = messages[-1].offset + 1
            if futures:
                await asyncio.gather(*futures)
                counts["deltas"] += len(futures)
            await consumer.commit(offsets)
            last_acked = time.time()
    finally:
        await consumer.stop()
        await producer.stop()
        emit_result(system="aiokafka", first_consumed_wall=first_consumed,
                    last_acked_wall=last_acked, **counts)


def main() -> None:
    parser = reference_arguments(__doc__.splitlines()[0])
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
