"""Tables written by layout 1 (one record per account) are read by today's worker.

``tests/samples/layout1/store.json`` is what rcmflow at commit ac27971 wrote for 49 events:
its rcm.accounts records (each account whole, in one record) and its dedup changelog
(``make_store.py`` made it, with that commit's code). The test puts them back on a broker as
the old worker left them, with the group's committed offsets. A worker of today with an empty
store recovers both changelogs (a store in place holds the same records) and must: post
nothing again, write each account it touches in layout 2 (the others stay as they were, read
through ``layout.read_record``), and end, after new events, where today's code run over every
event ends — the same balances, versions and items.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from rcmflow.runtime.broker import ensure_topics
from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.streams.chart import load_chart
from rcmflow.streams.layout import is_legacy
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import ACCOUNTS, EVENTS, POSTINGS, dedup_changelog, topic_specs
from rcmflow.tables.account_tables import NEXT_OFFSET_KEY
from tests.conftest import PARTITIONS, Broker, Workers, wait_until
from tests.factories import charge, payment
from tests.workload import Observed

pytestmark = [pytest.mark.broker]

STORE = Path(__file__).parents[1] / "samples" / "layout1" / "store.json"


def without_item_versions(doc: dict[str, Any]) -> dict[str, Any]:
    """An account view minus each item's ``version`` (layout 1 did not keep them: split
    items carry the account's version at the split) and the head's ``last_event_at`` form."""
    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "version"} for i in items]
    claims = {cid: {k: v for k, v in c.items() if k != "version"} | {
        "adjudications": strip(c["adjudications"])} for cid, c in doc["claims"].items()}
    return doc | {"charges": strip(doc["charges"]), "payments": strip(doc["payments"]),
                  "claims": claims, "last_event_at": None}


async def restore(broker: Broker, store: dict[str, Any]) -> None:
    """The changelogs and offsets as the old worker left them, each in its partition."""
    producer = AIOKafkaProducer(**broker.connection.client_options(), acks="all")
    await producer.start()
    try:
        for partition, account, value in store["accounts"]:
            await producer.send_and_wait(ACCOUNTS, value.encode(), key=account.encode(),
                                         partition=partition)
        for partition, key, value in store["dedup"]:
            await producer.send_and_wait(dedup_changelog("rcmflow"), value.encode(),
                                         key=bytes.fromhex(key), partition=partition)
        for partition, offset in store["next_offsets"].items():
            await producer.send_and_wait(dedup_changelog("rcmflow"), str(offset).encode(),
                                         key=NEXT_OFFSET_KEY, partition=int(partition))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**broker.connection.client_options(), group_id="rcmflow",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = {TopicPartition(EVENTS, int(p)): OffsetAndMetadata(offset, "")
                   for p, offset in store["next_offsets"].items()}
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def test_a_store_written_by_layout_1_is_read_and_rewritten_on_touch(
        broker: Broker, workers: Workers) -> None:
    store = json.loads(STORE.read_text())
    assert store["partitions"] == PARTITIONS
    kafka = broker.connection
    asyncio.run(ensure_topics(kafka, topic_specs("rcmflow"), PARTITIONS, 1))
    events = [(EVENTS, k.encode(), v.encode()) for k, v in store["events"]]
    asyncio.run(publish(kafka, events))
    asyncio.run(restore(broker, store))
    before = Observed.read(kafka).states
    assert all(v["items"] for v in before.values())  # layout 1, read as layout 2
    worker = workers.start("w1")
    # New events for half the accounts: those are rewritten in layout 2, the others are not.
    new = [charge(300, f"L{n:03d}", event_id=f"L{n:03d}-NEW") for n in range(0, 8, 2)]
    new += [payment(50, "L001", event_id="L001-NEW-PAY")]
    asyncio.run(publish(kafka, [(EVENTS, d["account"].encode(), json.dumps(d).encode())
                                for d in new]))

    tables = MemoryTables()  # today's code over every event, from nothing
    values = [v for _, _, v in events] + [json.dumps(d).encode() for d in new]
    keys = [k for _, k, _ in events] + [d["account"].encode() for d in new]
    result = Processor(load_chart()).process(
        [Message(EVENTS, 0, i, k, v) for i, (k, v) in enumerate(zip(keys, values, strict=True))],
        tables)
    tables.write(result)
    expected = {a: without_item_versions(v) for a, v in tables.views().items()}

    def caught_up() -> bool:
        observed = Observed.read(kafka).states
        return {a: without_item_versions(v) for a, v in observed.items()} == expected

    wait_until(caught_up, 120, "the new events applied on the old store", worker.log_tail)
    # Nothing posted again: the only postings are the new events'.
    posted = {json.loads(r.value)["event_id"] for r in asyncio.run(read_topic(kafka, POSTINGS))}
    assert posted == {d["event_id"] for d in new}
    # The touched accounts' heads are layout 2 now, with their items as records of their own.
    latest: dict[bytes, dict[str, Any]] = {}
    for record in asyncio.run(read_topic(kafka, ACCOUNTS)):
        assert record.key is not None and record.value is not None
        latest[record.key] = json.loads(record.value)
    touched = {d["account"] for d in new}
    for account in [f"L{n:03d}" for n in range(8)]:
        assert is_legacy(latest[account.encode()]) is (account not in touched), account
    assert b"L000/charge/L000-CH1" in latest and b"L001/payment/L001-PAY" in latest
    assert worker.alive(), worker.log_tail()
