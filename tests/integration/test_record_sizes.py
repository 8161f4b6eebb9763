"""The largest records the settings allow, through a real worker, on both brokers.

Apache Kafka refuses a record over a topic's max.message.bytes (1 MiB unless set); Tansu does
not. rcmflow creates every topic with the limit its largest record needs (streams/topics.py),
and what could not fit is refused as a DLQ record, never a batch the worker crashes on for
ever: an account whose snapshot would pass rcm.accounts' 8 MiB, and the largest event
RCMFLOW_EVENT_BYTES_MAX allows (16 MiB), whose DLQ record keeps a bounded payload.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rcmflow.kafka_io import publish, read_topic
from rcmflow.ops import latest_snapshots
from rcmflow.streams.topics import ACCOUNTS, DLQ, EVENTS, OUTPUT_RECORD_BYTES_MAX
from tests.conftest import Broker, Workers, wait_until
from tests.factories import charge
from tests.streams.test_output_bounds import claim

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EVENT_BYTES_MAX = 16 * 1024 * 1024  # the ceiling of RCMFLOW_EVENT_BYTES_MAX
CLAIMS = 90  # of 999 lines, ~100 KB of account state each: past the 8 MiB snapshot limit


def dlq(broker: Broker) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, DLQ))]


def send(broker: Broker, docs: list[dict[str, Any]]) -> None:
    asyncio.run(publish(broker.connection, [(EVENTS, d["account"].encode(),
                                             json.dumps(d).encode()) for d in docs]))


def test_the_largest_records_the_settings_allow(broker: Broker, workers: Workers) -> None:
    worker = workers.start("w1", RCMFLOW_EVENT_BYTES_MAX=str(EVENT_BYTES_MAX))
    # The largest event the settings allow: 16 MiB, with a field no event kind has.
    huge = charge(100, "H1", event_id="HUGE")
    huge["note"] = "x" * (EVENT_BYTES_MAX - len(json.dumps(huge)) - 20)
    send(broker, [huge])
    send(broker, [claim("BIG", n, lines=999) for n in range(CLAIMS)])

    def refused() -> list[dict[str, Any]]:
        return [r for r in dlq(broker) if r["reason_code"] == "account_too_large"]

    def settled() -> bool:
        snapshot = asyncio.run(latest_snapshots(broker.connection, "BIG")).get("BIG", {})
        return snapshot.get("version", 0) + len(refused()) == CLAIMS

    wait_until(settled, 240, "every claim applied or refused", worker.log_tail)
    assert worker.alive(), worker.log_tail()
    records = [r for r in asyncio.run(read_topic(broker.connection, ACCOUNTS))
               if r.key == b"BIG"]
    largest = max(len(r.value or b"") for r in records)
    # Past Apache Kafka's 1 MiB default, under the topic's own limit.
    assert 1024 * 1024 < largest <= OUTPUT_RECORD_BYTES_MAX
    assert 0 < len(refused()) < CLAIMS
    [invalid] = [r for r in dlq(broker) if r["origin"]["key"] == "H1"]
    assert invalid["reason_code"] == "invalid_event"
    assert invalid["context"]["payload_truncated"] is True
    assert invalid["context"]["payload_bytes"] == len(json.dumps(huge))
    assert len(invalid["payload"]) == 512 * 1024

    # A new machine takes the worker's place: its store is rebuilt from the big records.
    worker.kill()
    workers.wipe_tables("w1")
    worker = workers.start("w1", RCMFLOW_EVENT_BYTES_MAX=str(EVENT_BYTES_MAX))
    before = len(refused())
    send(broker, [claim("BIG", CLAIMS, lines=999), charge(500, "SMALL", event_id="S1")])
    wait_until(lambda: len(refused()) == before + 1 and "SMALL" in asyncio.run(
        latest_snapshots(broker.connection, "SMALL")), 120, "the events after the restart",
        worker.log_tail)
    assert worker.alive(), worker.log_tail()
