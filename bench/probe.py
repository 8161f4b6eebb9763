"""When does a delta become visible? A reader in its own process, started before the events.

    python -m bench.probe --bootstrap HOST:PORT --topic T --start 0:12,1:40,... \\
        --marker lat-rcmflow-r1500- --isolation read_committed --out FILE

Reads ``--topic`` from the given offsets (no group, nothing committed) at ``--isolation`` and
appends one JSON line per record whose value contains ``--marker``:
``[account, event_id, CreateTime ms, seen ms]``; *seen* is this process's wall clock when the
fetch that carried the record returned. Under exactly_once a record is returned to a
``read_committed`` reader only once its transaction committed, so *seen − event time* is event
-> visible delta, where the record's CreateTime (set when the worker's producer sent it,
before the commit) would understate it. A separate process: the harness's own event loop
(sender, CPU sampling) cannot delay the reading. Writes ``READY`` once positioned; runs until
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

READY = "READY"


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    start = {int(p): int(o) for p, o in (item.split(":") for item in args.start.split(","))}
    tps = [TopicPartition(args.topic, p) for p in sorted(start)]
    marker = args.marker.encode()
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100,
                                isolation_level=args.isolation)
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        with open(args.out, "a") as out:
            # A first fetch round trip: the connection is open before the harness sends.
            batch = await consumer.getmany(timeout_ms=300, max_records=20_000)
            out.write(READY + "\n")
            out.flush()
            while True:
                seen_ms = int(time.time() * 1000)
                lines = []
                for messages in batch.values():
                    for m in messages:
                        if m.value is None or marker not in m.value:
                            continue
                        doc = json.loads(m.value)
                        lines.append(json.dumps([doc["account"], doc["event_id"], m.timestamp,
                                                 seen_ms]))
                if lines:
                    out.write("\n".join(lines) + "\n")
                    out.flush()
                if stop.is_set():
                    break
                batch = await consumer.getmany(timeout_ms=100, max_records=20_000)
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--start", required=True, help="partition:offset,...")
    parser.add_argument("--marker", required=True)
    parser.add_argument("--isolation", choices=("read_committed", "read_uncommitted"),
                        default="read_committed")
    parser.add_argument("--out", required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
