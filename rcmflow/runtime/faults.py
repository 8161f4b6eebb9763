"""Test-only fault injection: kill or pause a process at one exact step, for the crash tests;
or break one guarantee on purpose (``BREAKS``), to show that the tests see the damage.

The one place that reads the environment besides ``settings.py``: the command line calls
``from_environment()`` once at process start and hands the ``Faults`` down (the worker's
``Pipeline`` and ``Processor``, the ERP ``Connector``, `rcmflow consume`'s ``TopicConsumer``,
`rcmflow mllp`'s ``MllpListener``). Production never sets ``RCMFLOW_TEST_FAULTS``, so they get
``NO_FAULTS`` and every hook is a no-op. Tests that start real processes put
``Faults(...).environment()`` into the child's environment; tests in one process pass a
``Faults`` directly.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Faults", "NO_FAULTS", "FAULTS_ENV", "WORKER_KILL_POINTS", "BREAKS",
           "from_environment", "kill_this_process", "SkipRecords"]

log = logging.getLogger("rcmflow.faults")

#: The one variable: comma-separated ``name=value`` pairs, names the fields of ``Faults``
#: (e.g. ``worker_kill_at=outputs-acked:1,erp_kill_after=3``).
FAULTS_ENV = "RCMFLOW_TEST_FAULTS"

#: Where a worker batch can be cut: ``processed`` (applied in memory, nothing sent),
#: ``outputs-acked`` (deltas durable, no dedup record; exactly_once: everything sent, the
#: transaction not committed), ``dedup-acked`` (dedup records durable, states not written),
#: ``committed`` (exactly_once: the transaction committed, the local stores not written),
#: ``batch-done`` (the batch counted). Kills in the middle of a send are left to the random
#: kill -9 of the crash tests.
WORKER_KILL_POINTS = ("processed", "outputs-acked", "dedup-acked", "committed", "batch-done")

#: The switches that break a guarantee on purpose (``name=1``), for the tests that prove the
#: damage shows: docs/testing.md, "Breaking a guarantee on purpose".
BREAKS = ("break_dedup", "break_erp_commit_first", "break_mllp_ack_first")


@dataclass(frozen=True)
class Faults:
    #: Worker: (point, batch number) kills the worker (SIGKILL) right there; batches are
    #: counted from 0 in the process, those that applied at least one record.
    worker_kill_at: tuple[str, int] | None = None
    #: Worker: (partition, batch number) pauses that rcm.events partition in Faust's consumer
    #: after that batch, as faust-streaming #629 leaves one after a rebalance: the watchdog
    #: must find it and put it back.
    worker_pause_at: tuple[int, int] | None = None
    #: Worker: (point, batch number, seconds) holds that batch there that long, the event
    #: loop running (Faust's periodic commit, heartbeats): what is committed meanwhile shows
    #: whether the commit limit waits for the batch's writes.
    worker_hold_at: tuple[str, int, float] | None = None
    #: Worker: (partition, offset, count) the records ``offset .. offset+count-1`` of that
    #: rcm.events partition are not handed over the first time they are fetched, as Faust's
    #: drain loop passes over a "gap": the offset guard must see the hole and read it again.
    worker_skip_at: tuple[int, int, int] | None = None
    #: Worker: (partition, offset, count) as ``worker_skip_at``, but only the first time those
    #: records are fetched, and with nothing after them needed: as Faust's drain loop drops
    #: records below a read offset it kept from before a rebalance. Records an earlier process
    #: applied but did not commit are then never delivered, and nothing moves the commit.
    worker_drop_once_at: tuple[int, int, int] | None = None
    #: Worker: Faust's periodic commit finds nothing to commit for the first N seconds of the
    #: process (what it applies meanwhile stays uncommitted: a kill then leaves it so).
    worker_commit_hold_s: float | None = None
    #: `rcmflow erp`: kill right after the Nth ERP call succeeded, before its offsets are
    #: committed (the window the ERP's duplicate guard must cover).
    erp_kill_after: int | None = None
    #: `rcmflow erp`: kill right before the Nth ERP call (counting retries), nothing of its
    #: deltas sent: with ``break_erp_commit_first`` their offsets are committed already.
    erp_kill_before: int | None = None
    #: `rcmflow consume`: kill right after the outputs of the Nth batch were acknowledged,
    #: before its offsets are committed (the window a re-read must cover).
    consume_kill_after: int | None = None
    #: `rcmflow mllp`: kill right after the Nth ACK was handed to its sender's socket.
    mllp_kill_after_ack: int | None = None

    # Breaks: each switches one guarantee off, so that a test (and a fault run) shows the
    # damage it then does and goes red. Off (False) they change nothing.

    #: Worker: a replay (an event whose dedup record says it was applied, read from another
    #: offset) is applied again as if new: its account counts it twice and rcm.postings gets
    #: its posting id a second time with other content. Redeliveries are left alone.
    break_dedup: bool = False
    #: `rcmflow erp`: a chunk's offsets are committed before the ERP call instead of after
    #: the ERP accepted it: a kill in between (``erp_kill_before``) loses those postings.
    break_erp_commit_first: bool = False
    #: `rcmflow mllp`: each message is answered AA as soon as its frame is read, before the
    #: intake writes its records (the intake's own answer is dropped): a kill after the ACK
    #: (``mllp_kill_after_ack``) or a broker that refuses the write loses an ACKed message.
    break_mllp_ack_first: bool = False

    def __post_init__(self) -> None:
        for name in ("worker_kill_at", "worker_hold_at"):
            at = getattr(self, name)
            if at is not None and at[0] not in WORKER_KILL_POINTS:
                raise ValueError(f"{FAULTS_ENV}: {name} point {at[0]!r} is none of "
                                 f"{', '.join(WORKER_KILL_POINTS)}")
        for name in ("worker_skip_at", "worker_drop_once_at"):
            skip = getattr(self, name)
            if skip is not None and (skip[1] < 0 or skip[2] < 1):
                raise ValueError(f"{FAULTS_ENV}: {name} needs an offset >= 0 and a count "
                                 f">= 1, not {skip[1]} and {skip[2]}")

    def environment(self) -> dict[str, str]:
        """The child-process environment that makes ``from_environment`` return these."""
        pairs = []
        for name, value in ((f.name, getattr(self, f.name)) for f in fields(self)):
            if value is True:
                pairs.append(f"{name}=1")
            elif value is not None and value is not False:
                text = ":".join(map(str, value)) if isinstance(value, tuple) else str(value)
                pairs.append(f"{name}={text}")
        return {FAULTS_ENV: ",".join(pairs)} if pairs else {}

    @classmethod
    def parse(cls, text: str) -> Faults:
        """``name=value,...`` as ``environment`` writes it; ValueError for anything else."""
        values: dict[str, object] = {}
        for pair in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = pair.partition("=")
            try:
                if name == "worker_kill_at":
                    point, _, batch = value.partition(":")
                    values[name] = (point, int(batch))
                elif name == "worker_hold_at":
                    point, batch, seconds = value.split(":")
                    values[name] = (point, int(batch), float(seconds))
                elif name == "worker_pause_at":
                    partition, _, batch = value.partition(":")
                    values[name] = (int(partition), int(batch))
                elif name == "worker_commit_hold_s":
                    values[name] = float(value)
                elif name in ("worker_skip_at", "worker_drop_once_at"):
                    partition, offset, count = value.split(":")
                    values[name] = (int(partition), int(offset), int(count))
                elif name in ("erp_kill_after", "erp_kill_before", "consume_kill_after",
                              "mllp_kill_after_ack"):
                    values[name] = int(value)
                elif name in BREAKS:
                    if value not in ("0", "1"):
                        raise ValueError("a break is 1 (on) or 0 (off)")
                    values[name] = value == "1"
                else:
                    raise ValueError(f"{FAULTS_ENV}: unknown fault {name!r}")
            except ValueError as exc:
                raise ValueError(f"{FAULTS_ENV}: {pair!r}: {exc}") from exc
        return cls(**values)  # type: ignore[arg-type]


NO_FAULTS = Faults()


def from_environment(environ: Mapping[str, str] | None = None) -> Faults:
    """The faults this process was started with (``RCMFLOW_TEST_FAULTS``); ValueError if the
    variable says something else than ``Faults.environment`` writes."""
    text = (os.environ if environ is None else environ).get(FAULTS_ENV, "")
    faults = Faults.parse(text) if text else NO_FAULTS
    for name in BREAKS:
        if getattr(faults, name):
            log.warning("%s %s=1: a guarantee is broken on purpose (tests only)", FAULTS_ENV,
                        name)
    return faults


def kill_this_process(why: str) -> None:
    """SIGKILL this process at once: no cleanup, no flush, as a crash."""
    log.warning("%s %s: killing this process", FAULTS_ENV, why)
    os.kill(os.getpid(), signal.SIGKILL)


class SkipRecords:
    """``worker_skip_at``: a hand-over filter (``BulkFeed``'s ``handover``) that keeps the
    records ``offset .. offset+count-1`` of one partition from the worker until a later record
    of that partition is handed over, then lets everything through: the worker sees exactly
    one jump, as when Faust's drain loop passes over a "gap". A partition that never gets past
    ``offset+count`` keeps losing them (choose a range with records after it)."""

    def __init__(self, partition: int, offset: int, count: int, *, once: bool = False) -> None:
        """``once`` (``worker_drop_once_at``): disarmed after the first fetch it cut."""
        self.partition, self.first, self.end = partition, offset, offset + count
        self.armed = True
        self.once = once

    def __call__(self, records: list[Any]) -> list[Any]:
        """``records``: one partition's records of one fetch, in offset order."""
        if not self.armed or not records or records[0].partition != self.partition:
            return records
        kept = [r for r in records if not self.first <= r.offset < self.end]
        if len(kept) < len(records):
            log.warning("%s worker_skip_at=%d:%d:%d: %d records of a fetch not handed over",
                        FAULTS_ENV, self.partition, self.first, self.end - self.first,
                        len(records) - len(kept))
        if (kept and kept[-1].offset >= self.end) or (self.once and len(kept) < len(records)):
            self.armed = False
        return kept
