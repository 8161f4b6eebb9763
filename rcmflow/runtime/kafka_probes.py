"""Probes of a partition's true end that aiokafka's public calls do not give: the high
watermark a fetch reports (the embedded broker's ListOffsets answers short of it) and the end
of the last committed record under transactions. Used by the worker's recovery fix and by the
operator tools (``kafka_io.log_ends``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiokafka
from aiokafka.structs import TopicPartition

__all__ = ["HIGHWATER_PROBE_TIMEOUT_S", "fetch_highwaters", "last_committed_ends"]

#: How long the highwater probe may take before recovery fails loudly.
HIGHWATER_PROBE_TIMEOUT_S = 30.0


async def fetch_highwaters(
    client_options: Mapping[str, Any],
    listed: Mapping[TopicPartition, int],
    *,
    timeout_s: float = HIGHWATER_PROBE_TIMEOUT_S,
) -> dict[TopicPartition, int]:
    """The high watermark of each partition as a fetch response reports it.

    ``listed`` holds the ListOffsets answers; a partition listed at 0 is empty. The probe
    consumer joins no group and commits nothing. ``client_options``: the servers and security
    (``KafkaConnection.client_options()``, or Faust's own inside the worker).
    """
    wanted = {
        TopicPartition(tp.topic, tp.partition): off for tp, off in listed.items() if off and off > 0
    }
    found: dict[TopicPartition, int] = {}
    if not wanted:
        return found
    probe = aiokafka.AIOKafkaConsumer(
        **client_options,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=1024,
    )
    await probe.start()
    try:
        probe.assign(list(wanted))
        for tp, listed_offset in wanted.items():
            probe.seek(tp, listed_offset - 1)
        deadline = time.monotonic() + timeout_s
        while len(found) < len(wanted):
            if time.monotonic() > deadline:
                missing = sorted(str(tp) for tp in wanted if tp not in found)
                raise TimeoutError(f"no high watermark fetched for {missing} in {timeout_s}s")
            await probe.getmany(timeout_ms=200, max_records=1)
            for tp in wanted:
                hw = probe.highwater(tp)
                if hw is not None:
                    found[tp] = hw
                    probe.pause(tp)
    finally:
        await probe.stop()
    return found


async def last_committed_ends(
    client_options: Mapping[str, Any],
    stable: Mapping[TopicPartition, int],
    *,
    window: int = 64,
    timeout_s: float = HIGHWATER_PROBE_TIMEOUT_S,
) -> dict[TopicPartition, int]:
    """The offset after the last committed record of each partition, at or below its last
    stable offset (``stable``); 0 when none is committed. A read_committed probe reads the
    last ``window`` offsets, going further back while it finds only transaction markers and
    aborted records."""
    found = {tp: 0 for tp, end in stable.items() if not end or end <= 0}
    if len(found) == len(stable):
        return found
    deadline = time.monotonic() + timeout_s
    probe = aiokafka.AIOKafkaConsumer(**client_options, group_id=None,
                                      enable_auto_commit=False, fetch_max_wait_ms=100,
                                      isolation_level="read_committed")
    await probe.start()
    try:
        for tp, end in stable.items():
            if tp in found:
                continue
            probe.assign([tp])
            start, step, last, complete = end, window, -1, False
            while last < 0 and start > 0 and time.monotonic() < deadline:
                start = max(0, start - step)
                step *= 8
                probe.seek(tp, start)
                complete = False
                while not complete and time.monotonic() < deadline:
                    batch = await probe.getmany(tp, timeout_ms=200)
                    last = max([last, *(r.offset for r in batch.get(tp, []) if r.offset < end)])
                    complete = await probe.position(tp) >= end
            # Read to the end: the record found (none committed at all: 0). Not in time: the
            # last stable offset, as Faust would (it then waits out the marker).
            found[tp] = last + 1 if complete and (last >= 0 or start == 0) else end
    finally:
        # aiokafka 0.14: stopping before its coordinator task first ran re-raises that
        # task's CancelledError; one loop turn avoids it.
        await asyncio.sleep(0)
        await probe.stop()
    return found
