"""Event -> delta latency: fresh events at a steady rate while a system runs.

Latency of one event = the output record's Kafka timestamp (CreateTime, set by the system's
producer when it sends the delta) - the input record's timestamp (set by this producer to the
wall clock when it sends the event), matched by (account, event_id). Same clock, same machine.

On Apache Kafka a reader in its own process (``bench.probe``, ``VisibleProbe``) also notes when
each delta became *visible* to a ``read_committed`` consumer: for a transactional system
(exactly_once) that is the latency that counts, since its records' CreateTime precedes the
commit that makes them readable.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench.workload import encode, payment_doc
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.topics import EVENTS

__all__ = ["Collector", "VisibleProbe", "LatencyResult", "send_steady", "percentile",
           "summarize", "stats"]

Key = tuple[str, str]


@dataclass
class LatencyResult:
    sent: int = 0
    matched: int = 0
    missing: int = 0
    rate_target: float = 0.0
    rate_achieved: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    error: str | None = None
    #: What p50_ms... measure: "created" (output CreateTime) or "visible" (seen by a
    #: read_committed reader in its own process, bench.probe).
    measure: str = "created"
    #: Both measures where both were taken (Apache Kafka): p50/p90/p99/max/mean ms.
    created: dict[str, float | None] | None = None
    visible: dict[str, float | None] | None = None
    #: Per second of sending: [second, events, p50 ms, max ms] (does latency build up?).
    profile: list[list[float]] = field(default_factory=list)
    samples_ms: list[int] = field(default_factory=list, repr=False)


def percentile(sorted_values: Sequence[int], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[rank - 1])


def stats(sent: dict[Key, int], seen: dict[Key, int]) -> dict[str, float | None]:
    """p50/p90/p99/max/mean ms of seen - sent over the keys seen."""
    samples = sorted(seen[k] - ts for k, ts in sent.items() if k in seen)
    return {"matched": len(samples),
            "p50_ms": percentile(samples, 0.50), "p90_ms": percentile(samples, 0.90),
            "p99_ms": percentile(samples, 0.99),
            "max_ms": float(samples[-1]) if samples else None,
            "mean_ms": sum(samples) / len(samples) if samples else None}


def summarize(result: LatencyResult, sent: dict[Key, int], seen: dict[Key, int]) -> None:
    samples = sorted(seen[k] - ts for k, ts in sent.items() if k in seen)
    result.sent = len(sent)
    result.matched = len(samples)
    result.missing = len(sent) - len(samples)
    result.samples_ms = samples
    if sent:
        t0 = min(sent.values())
        buckets: dict[int, list[int]] = {}
        for key, ts in sent.items():
            if key in seen:
                buckets.setdefault((ts - t0) // 1000, []).append(seen[key] - ts)
        for second, values in sorted(buckets.items()):
            values.sort()
            result.profile.append([second, len(values), percentile(values, 0.5) or 0.0,
                                   float(values[-1])])
    if samples:
        result.p50_ms = percentile(samples, 0.50)
        result.p90_ms = percentile(samples, 0.90)
        result.p99_ms = percentile(samples, 0.99)
        result.max_ms = float(samples[-1])
        result.mean_ms = sum(samples) / len(samples)


class Collector:
    """Reads an output topic from given offsets and keeps the first timestamp of wanted keys."""

    def __init__(self, kafka: KafkaConnection, topic: str, start: dict[int, int],
                 marker: bytes) -> None:
        self.tps = [TopicPartition(topic, p) for p in sorted(start)]
        self.start = start
        self.marker = marker
        self.seen: dict[Key, int] = {}
        self.consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                                         enable_auto_commit=False, fetch_max_wait_ms=100)

    async def __aenter__(self) -> Collector:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        for tp in self.tps:
            self.consumer.seek(tp, self.start[tp.partition])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def positions(self) -> dict[int, int]:
        return {tp.partition: await self.consumer.position(tp) for tp in self.tps}

    async def until(self, wanted: set[Key], timeout_s: float,
                    alive: Callable[[], bool]) -> bool:
        """Consume until every wanted key was seen; False on timeout or a dead process."""
        deadline = time.monotonic() + timeout_s
        while not wanted.issubset(self.seen.keys()):
            if time.monotonic() > deadline or not alive():
                return False
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20_000)
            for messages in batch.values():
                for m in messages:
                    if m.value is None or self.marker not in m.value:
                        continue
                    doc = json.loads(m.value)
                    key = (doc["account"], doc["event_id"])
                    if key not in self.seen or m.timestamp < self.seen[key]:
                        self.seen[key] = m.timestamp
        return True


class VisibleProbe:
    """The harness's side of ``bench.probe``: start the reader before the events are sent,
    collect what it saw, stop it. ``created``/``visible``: key -> CreateTime / seen ms."""

    READY_TIMEOUT_S = 30.0

    def __init__(self, bootstrap: str, topic: str, start: dict[int, int], marker: str,
                 isolation: str, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path = workdir / f"probe-{marker.strip('-')}.jsonl"
        self.log_path = self.out_path.with_suffix(".log")
        self.argv = [sys.executable, "-m", "bench.probe", "--bootstrap", bootstrap,
                     "--topic", topic, "--marker", marker, "--isolation", isolation,
                     "--out", str(self.out_path),
                     "--start", ",".join(f"{p}:{o}" for p, o in sorted(start.items()))]
        self.created: dict[Key, int] = {}
        self.visible: dict[Key, int] = {}
        self.popen: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._ready = False

    async def __aenter__(self) -> VisibleProbe:
        from bench.procs import REPO_ROOT

        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, cwd=REPO_ROOT, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        while not self._ready:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                await self.__aexit__()
                raise RuntimeError(f"bench.probe did not start: see {self.log_path}")
            await asyncio.sleep(0.05)
            self._read()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            for _ in range(100):
                if self.popen.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.popen.kill()
                self.popen.wait()
        self._read()

    def _read(self) -> None:
        try:
            with open(self.out_path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            if line == b"READY":
                self._ready = True
                continue
            account, event_id, created, seen = json.loads(line)
            key: Key = (account, event_id)
            if key not in self.visible or seen < self.visible[key]:
                self.visible[key] = seen
                self.created[key] = created

    async def until(self, wanted: set[Key], timeout_s: float,
                    alive: Callable[[], bool]) -> bool:
        """Wait until the reader saw every wanted key; False on timeout or a dead process."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._read()
            if wanted.issubset(self.visible.keys()):
                return True
            if time.monotonic() > deadline or not alive():
                return False
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"bench.probe exited: see {self.log_path}")
            await asyncio.sleep(0.1)


async def send_steady(kafka: KafkaConnection, accounts: Sequence[str], tag: str, rate: float,
                      seconds: float, seed: int
                      ) -> tuple[dict[Key, int], dict[str, int], float]:
    """Fresh patient payments at ``rate``/s for ``seconds``.

    Returns their input timestamps, the cents paid per account and the achieved rate.
    """
    rng = random.Random(seed)
    producer = AIOKafkaProducer(**kafka.client_options(), acks="all", linger_ms=0)
    await producer.start()
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    sent: dict[Key, int] = {}
    amounts: dict[str, int] = {}
    try:
        futures = []
        t0 = loop.time()
        for i in range(total):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            account = rng.choice(accounts)
            event_id = f"lat-{tag}-{i:06d}"
            amount = rng.randint(100, 50_000)
            ts = int(time.time() * 1000)
            futures.append(await producer.send(
                EVENTS, encode(payment_doc(account, event_id, amount)),
                key=account.encode(), timestamp_ms=ts))
            sent[(account, event_id)] = ts
            amounts[account] = amounts.get(account, 0) + amount
        elapsed = loop.time() - t0
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent, amounts, total / elapsed if elapsed > 0 else 0.0
