"""The Faust ceiling: a faust-streaming agent over rcm.events that only counts.

Same app settings as rcmflow's worker (session timeout 10 s, heartbeat 1 s, earliest offset
reset, acks=all, web server off) with an in-memory store and raw key/value serializers.
``--mode plain`` iterates ``async for value in stream``; ``--mode batch`` iterates
``stream.take_events(1000, within=0.05)`` like the worker. Both time themselves from the first
to the last event consumed (``time.perf_counter``), print ``BENCH_RESULT {...}`` once
``--expected`` events are counted, and stop their own worker.

``--mode echo`` is a diagnostic, not a ceiling: the worker's batch loop with no logic, each
event sent unchanged to ``--output`` (source partition number) and the batch's acks awaited,
like rcmflow's write path. It shows what Faust itself adds to event -> output latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import time

import faust
from faust.worker import Worker

from bench.reference import emit_result

BATCH_MAX = 1000
BATCH_WAIT_S = 0.05


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Counter:
    def __init__(self, mode: str, expected: int) -> None:
        self.mode = mode
        self.expected = expected
        self.count = 0
        self.first: float | None = None
        self.first_wall: float | None = None
        self.done = False

    def tick(self, n: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first, self.first_wall = now, time.time()
        self.count += n
        if self.count >= self.expected and not self.done:
            self.done = True
            elapsed = now - self.first
            emit_result(system=f"faust-{self.mode}", consumed=self.count,
                        first_consumed_wall=self.first_wall, last_consumed_wall=time.time(),
                        elapsed_s=elapsed,
                        events_per_s=self.count / elapsed if elapsed > 0 else None)
            os.kill(os.getpid(), signal.SIGTERM)  # the Worker shuts down in order


def build(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=args.datadir,
        topic_partitions=args.partitions,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        web_port=_free_port(),  # never 6066: two runs must not collide even if web comes on
    )
    topic = app.topic(args.input, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw", partitions=args.partitions)
    counter = Counter(args.mode, args.expected)

    if args.mode == "plain":
        @app.agent(topic, name="count")
        async def count(stream: faust.StreamT[bytes]) -> None:
            async for _value in stream:
                counter.tick(1)
    elif args.mode == "echo":
        @app.agent(topic, name="echo")
        async def echo(stream: faust.StreamT[bytes]) -> None:
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WAIT_S):
                futures = [await app.producer.send(args.output, e.message.key, e.message.value,
                                                   e.message.partition, None, None)
                           for e in batch]
                await asyncio.gather(*futures)
    else:
        @app.agent(topic, name="count")
        async def count_batches(stream: faust.StreamT[bytes]) -> None:
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WAIT_S):
                counter.tick(len(batch))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--mode", choices=("plain", "batch", "echo"), required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--output", default="bench.out.faust-echo")
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--input", default="rcm.events")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    app = build(args)
    Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
