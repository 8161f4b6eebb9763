"""The largest records the settings allow, and the largest accounts, through a real worker,
on both brokers.

Apache Kafka refuses a record over a topic's max.message.bytes (1 MiB unless set); Tansu does
not. rcmflow creates every topic with the limit its largest record needs (streams/topics.py),
and what could not fit is refused as a DLQ record, never a batch the worker crashes on for
ever: the largest event RCMFLOW_EVENT_BYTES_MAX allows (16 MiB), whose DLQ record keeps a
bounded payload. An account's records stay small however much it holds (a head and one
record per item, streams/layout.py): its size is bounded by its items, not by a record limit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.streams.limits import ACCOUNT_ITEMS_MAX
from rcmflow.streams.topics import ACCOUNTS, DLQ, EVENTS
from tests.conftest import Broker, Workers, wait_until
from tests.factories import charge
from tests.integration.test_crash import FAST
from tests.streams.test_output_bounds import claim
from tests.workload import Observed

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EVENT_BYTES_MAX = 16 * 1024 * 1024  # the ceiling of RCMFLOW_EVENT_BYTES_MAX
CLAIMS = 90  # of 999 lines, ~100 KB each


def dlq(broker: Broker) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, DLQ))]


def send(broker: Broker, docs: list[dict[str, Any]]) -> None:
    asyncio.run(publish(broker.connection, [(EVENTS, d["account"].encode(),
                                             json.dumps(d).encode()) for d in docs]))


def account(broker: Broker, name: str) -> dict[str, Any]:
    return Observed.read(broker.connection).states.get(name, {})


def largest_record(broker: Broker, name: str) -> int:
    """The largest rcm.accounts record of an account (its head or one of its items)."""
    records = asyncio.run(read_topic(broker.connection, ACCOUNTS))
    return max(len(r.value or b"") for r in records
               if r.key is not None and r.key.split(b"/")[0] == name.encode())


def test_the_largest_records_the_settings_allow(broker: Broker, workers: Workers) -> None:
    worker = workers.start("w1", RCMFLOW_EVENT_BYTES_MAX=str(EVENT_BYTES_MAX), **FAST)
    # The largest event the settings allow: 16 MiB, with a field no event kind has.
    huge = charge(100, "H1", event_id="HUGE")
    huge["note"] = "x" * (EVENT_BYTES_MAX - len(json.dumps(huge)) - 20)
    send(broker, [huge])
    # 90 claims of 999 lines: ~9 MB as one layout-1 snapshot, past any topic's limit.
    send(broker, [claim("BIG", n, lines=999) for n in range(CLAIMS)])
    wait_until(lambda: account(broker, "BIG").get("version") == CLAIMS, 240,
               "every claim applied", worker.log_tail)
    assert worker.alive(), worker.log_tail()
    assert not [r for r in dlq(broker) if r["origin"]["key"] == "BIG"]
    # Every record of it under Apache Kafka's 1 MiB default: a claim of 999 lines is ~100 KB.
    assert largest_record(broker, "BIG") < 1024 * 1024 // 8
    [invalid] = [r for r in dlq(broker) if r["origin"]["key"] == "H1"]
    assert invalid["reason_code"] == "invalid_event"
    assert invalid["context"]["payload_truncated"] is True
    assert invalid["context"]["payload_bytes"] == len(json.dumps(huge))
    assert len(invalid["payload"]) == 512 * 1024

    # A new machine takes the worker's place: its store is rebuilt from rcm.accounts.
    worker.kill()
    workers.wipe_tables("w1")
    # (FAST: its join waits for the killed member's session to expire.)
    worker = workers.start("w1", RCMFLOW_EVENT_BYTES_MAX=str(EVENT_BYTES_MAX), **FAST)
    send(broker, [claim("BIG", CLAIMS, lines=999), charge(500, "SMALL", event_id="S1")])
    wait_until(lambda: account(broker, "BIG").get("version") == CLAIMS + 1
               and "SMALL" in Observed.read(broker.connection).states, 120,
               "the events after the restart", worker.log_tail)
    assert worker.alive(), worker.log_tail()
    big = account(broker, "BIG")
    assert big["items"]["claim"] == len(big["claims"]) == CLAIMS + 1


def test_an_account_with_ten_thousand_items_flows(broker: Broker, workers: Workers) -> None:
    """A long inpatient stay: 10,000 charges (the item limit), then one more, refused."""
    worker = workers.start("w1")
    docs = [charge(1, "STAY", event_id=f"FT1-{n}") for n in range(ACCOUNT_ITEMS_MAX + 1)]
    for start in range(0, len(docs), 2_000):
        send(broker, docs[start:start + 2_000])
    wait_until(lambda: [r["reason_code"] for r in dlq(broker)] == ["account_items_max"], 300,
               "every charge applied and the last refused", worker.log_tail)
    stay = account(broker, "STAY")
    assert (stay["version"], stay["items"]["charge"]) == (ACCOUNT_ITEMS_MAX,) * 2
    assert stay["balances"]["gross_charges"] == ACCOUNT_ITEMS_MAX
    # The head stays a head: the same few hundred bytes at 10,000 items as at one.
    assert largest_record(broker, "STAY") < 1_000
    assert worker.alive(), worker.log_tail()
