"""The systems under test: how to start each one and how to read what it emits."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcmflow.streams.topics import POSTINGS

__all__ = ["System", "SYSTEMS", "SYSTEM_ORDER", "DISPLAY_ORDER", "DEFAULT_SYSTEMS", "OutputKey",
           "parse_output"]

OutputKey = tuple[str, str]  # (account, event_id)


@dataclass(frozen=True)
class System:
    key: str
    label: str
    #: Output topic; None for the Faust ceilings, which emit nothing.
    output_topic: str | None
    group: str
    description: str
    #: Processes started together in one consumer group (throughput across all of them).
    workers: int = 1
    #: Runs with Kafka transactions: read its output ``read_committed``, and its latency is
    #: event -> delta *visible* to such a reader (its records' CreateTime precedes the commit).
    transactional: bool = False

    @property
    def produces(self) -> bool:
        return self.output_topic is not None

    @property
    def is_rcmflow(self) -> bool:
        """The real worker (one of its variants): posting checks, rcm.dlq, shared rcm.* topics."""
        return self.key == "rcmflow" or self.key.startswith("rcmflow-")

    @property
    def echoes(self) -> bool:
        """Emits every input record unchanged (replays too) instead of posting deltas."""
        return self.key == "faust-echo"

    def command(self, bootstrap: str, workdir: Path, expected_events: int,
                partitions: int) -> tuple[list[str], dict[str, str]]:
        """argv and environment of the system's process (``workdir`` persists across runs);
        a system of several ``workers`` starts this command that many times."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
        python = sys.executable
        if self.is_rcmflow:
            # Each variant is its own application (consumer group, changelogs, transactional
            # ids); the workers of one variant share a data dir and take slots w1, w2, ...
            env |= {"RCMFLOW_BROKER": f"kafka://{bootstrap}",
                    "RCMFLOW_DATA_DIR": str(workdir),
                    "RCMFLOW_PARTITIONS": str(partitions),
                    "RCMFLOW_LOG_LEVEL": "warn",
                    "RCMFLOW_APP_ID": self.group,
                    "RCMFLOW_PROCESSING_GUARANTEE":
                        "exactly_once" if self.transactional else "at_least_once"}
            return [str(Path(python).parent / "rcmflow"), "worker"], env
        if self.key.startswith("faust-"):
            argv = [python, "-m", "bench.ref_faust", "--bootstrap", bootstrap,
                    "--app-id", self.group, "--mode", self.key.removeprefix("faust-"),
                    "--expected", str(expected_events), "--datadir", str(workdir),
                    "--partitions", str(partitions)]
            if self.output_topic:
                argv += ["--output", self.output_topic]
            return argv, env
        assert self.output_topic is not None
        args = ["--bootstrap", bootstrap, "--group", self.group, "--output", self.output_topic]
        if self.key == "aiokafka":
            return [python, "-m", "bench.ref_aiokafka", *args], env
        if self.key == "quix":
            return [python, "-m", "bench.ref_quix", *args, "--state-dir",
                    str(workdir / "state")], env
        raise ValueError(self.key)


SYSTEMS: dict[str, System] = {
    s.key: s for s in (
        System("rcmflow", "rcmflow worker", POSTINGS, "rcmflow",
               "the real `rcmflow worker` (Faust agent, RocksDB tables, posting rules)"),
        System("rcmflow-eos", "rcmflow worker, exactly_once", POSTINGS, "rcmflow-eos",
               "the real `rcmflow worker` with RCMFLOW_PROCESSING_GUARANTEE=exactly_once: one "
               "Kafka transaction per rcm.events partition per batch (Apache Kafka only)",
               transactional=True),
        System("rcmflow-2w", "rcmflow, two workers", POSTINGS, "rcmflow-2w",
               "two `rcmflow worker` processes in one consumer group, at_least_once",
               workers=2),
        System("faust-plain", "Faust ceiling (async for)", None, "bench-faust-plain",
               "bare faust-streaming agent, `async for value in stream: counter += 1`"),
        System("faust-batch", "Faust take_events(1000)", None, "bench-faust-batch",
               "bare faust-streaming agent over `stream.take_events(1000, within=0.05)`"),
        System("aiokafka", "plain aiokafka", "bench.out.aiokafka", "bench-aiokafka",
               "AIOKafkaConsumer + AIOKafkaProducer, in-memory dicts, commit after acks"),
        System("quix", "Quix Streams", "bench.out.quix", "bench-quix",
               "quixstreams Application, RocksDB state, at-least-once"),
        System("faust-echo", "Faust echo (diagnostic)", "bench.out.faust-echo",
               "bench-faust-echo", "bare faust-streaming agent, take_events(1000) -> send "
               "each event unchanged, await the batch's acks; no dedup, no state"),
    )
}
#: Run order. Each producing system's latency events stay in rcm.events and are part of the
#: backlog of every system after it; rcmflow runs last, so any effect of that heavier backlog
#: (fresh money-moving events, no replays) counts against rcmflow, not for it (and against
#: its exactly_once and two-worker variants a little more, as they run after it).
#: The Faust echo is a latency diagnostic; it runs after rcmflow.
SYSTEM_ORDER = ["faust-plain", "faust-batch", "aiokafka", "quix", "rcmflow", "rcmflow-eos",
                "rcmflow-2w", "faust-echo"]
#: What ``--systems`` defaults to per broker. Tansu: the run as it was before the Kafka
#: variants (exactly_once needs transactions, which Tansu lacks; ``rcmflow-2w`` runs there
#: when asked for).
DEFAULT_SYSTEMS = {
    "tansu": ["faust-plain", "faust-batch", "aiokafka", "quix", "rcmflow", "faust-echo"],
    "kafka": SYSTEM_ORDER,
}
#: Table order.
DISPLAY_ORDER = list(SYSTEMS)


def parse_output(value: bytes | None) -> dict[str, Any]:
    doc = json.loads(value or b"null")
    if not isinstance(doc, dict):
        raise ValueError("output record is not a JSON object")
    return doc
