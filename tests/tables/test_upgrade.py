"""`rcmflow upgrade` on tables an older rcmflow wrote, and what a worker does without it.

``tests/samples/layout1/store.json`` is what rcmflow at commit ac27971 wrote for 49 events:
its rcm.accounts records (layout 1: each account whole, in one record, no ``layout`` field)
and its dedup changelog (records without ``horizon_day``: the horizon did not exist yet);
``make_store.py`` made it, with that commit's code. The tests put them back on a broker as
the old worker left them, with the group's committed offsets.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from rcmflow.runtime.broker import ensure_topics
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.streams.chart import load_chart
from rcmflow.streams.dedup import horizon_key
from rcmflow.streams.exceptions import UpgradeNeeded
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import ACCOUNTS, EVENTS, POSTINGS, dedup_changelog, topic_specs
from rcmflow.tables.account_tables import NEXT_OFFSET_KEY
from rcmflow.tables.upgrade import KEPT_FOR_EVER_DAY
from tests.conftest import PARTITIONS, Broker, Workers, wait_until
from tests.factories import charge, payment
from tests.workload import Observed

STORE = Path(__file__).parents[1] / "samples" / "layout1" / "store.json"
DEDUP = dedup_changelog("rcmflow")


def old_store() -> dict[str, Any]:
    store: dict[str, Any] = json.loads(STORE.read_text())
    assert store["partitions"] == PARTITIONS
    return store


def without_item_versions(doc: dict[str, Any]) -> dict[str, Any]:
    """An account view minus each item's ``version`` (layout 1 did not keep them: split
    items carry the account's version at the split) and the head's ``last_event_at`` form."""
    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "version"} for i in items]
    claims = {cid: {k: v for k, v in c.items() if k != "version"} | {
        "adjudications": strip(c["adjudications"])} for cid, c in doc["claims"].items()}
    # And the lifecycle: layout 1 kept none, so an upgraded account enters its first state
    # with its first transition after the upgrade (docs/lifecycle.md), while today's code
    # run over every event derives it from the whole history.
    # The denials likewise (docs/operations/denials.md): made by the 835s after the upgrade.
    # And a head the upgrade wrote has no refunds_pending field (AccountHead reads it as none
    # pending), while today's code writes {"count": 0, "cents": 0}.
    items = {k: v for k, v in doc["items"].items() if k not in ("transition", "denial")}
    return {k: v for k, v in doc.items() if k not in ("lifecycle", "transitions",
                                                      "denials", "refunds_pending")} | {
        "charges": strip(doc["charges"]), "payments": strip(doc["payments"]),
        "claims": claims, "last_event_at": None, "items": items}


def restore(broker: Broker, store: dict[str, Any]) -> list[tuple[str, bytes, bytes]]:
    """The events, changelogs and offsets as the old worker left them, each in its
    partition; returns the events."""
    kafka = broker.connection
    asyncio.run(ensure_topics(kafka, topic_specs("rcmflow"), PARTITIONS, 1))
    events = [(EVENTS, k.encode(), v.encode()) for k, v in store["events"]]
    asyncio.run(publish(kafka, events))

    async def changelogs() -> None:
        producer = AIOKafkaProducer(**kafka.client_options(), acks="all")
        await producer.start()
        try:
            for partition, account, value in store["accounts"]:
                await producer.send_and_wait(ACCOUNTS, value.encode(), key=account.encode(),
                                             partition=partition)
            for partition, key, value in store["dedup"]:
                await producer.send_and_wait(DEDUP, value.encode(), key=bytes.fromhex(key),
                                             partition=partition)
            for partition, offset in store["next_offsets"].items():
                await producer.send_and_wait(DEDUP, str(offset).encode(),
                                             key=NEXT_OFFSET_KEY, partition=int(partition))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**kafka.client_options(), group_id="rcmflow",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            offsets = {TopicPartition(EVENTS, int(p)): OffsetAndMetadata(offset, "")
                       for p, offset in store["next_offsets"].items()}
            consumer.assign(list(offsets))
            await consumer.commit(offsets)
        finally:
            await consumer.stop()

    asyncio.run(changelogs())
    return events


def run_upgrade(workers: Workers) -> subprocess.CompletedProcess[str]:
    """`rcmflow upgrade` as an operator runs it, with the workers' settings."""
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", "upgrade"],
                          env=workers.env(), capture_output=True, text=True, timeout=120)


def newest(broker: Broker, topic: str) -> dict[tuple[int, bytes], bytes | None]:
    latest: dict[tuple[int, bytes], bytes | None] = {}
    for record in asyncio.run(read_topic(broker.connection, topic)):
        assert record.key is not None
        latest[(record.partition, record.key)] = record.value
    return latest


def test_the_core_refuses_an_old_head_and_an_undated_dedup_record() -> None:
    """What a worker that skipped the upgrade meets first: an event for a layout-1 account,
    and a replay of an event applied before the horizon existed. Neither is guessed at."""
    store = old_store()
    tables = MemoryTables()
    for partition, account, value in store["accounts"]:
        tables.accounts[(partition, account.encode())] = value.encode()
    for partition, key, value in store["dedup"]:
        tables.dedup[(partition, bytes.fromhex(key))] = value.encode()
    processor = Processor(load_chart())
    partition = next(p for p, a, _ in store["accounts"] if a == "L000")
    new = json.dumps(charge(300, "L000", event_id="L000-NEW")).encode()
    with pytest.raises(UpgradeNeeded, match="account 'L000'.*rcmflow upgrade"):
        processor.process([Message(EVENTS, partition, 999, b"L000", new)], tables)
    account, first = store["events"][0]
    replay = Message(EVENTS, partition, 999, account.encode(), first.encode())
    with pytest.raises(UpgradeNeeded, match="dedup record without a horizon day.*rcmflow upgrade"):
        processor.process([replay], tables)


@pytest.mark.broker
def test_upgrade_rewrites_an_old_store_once_and_a_worker_then_applies_new_events(
        broker: Broker, workers: Workers) -> None:
    store = old_store()
    events = restore(broker, store)
    kafka = broker.connection

    done = run_upgrade(workers)
    assert done.returncode == ExitCode.OK, done.stderr
    assert "9 layout-1 accounts rewritten as layout 2" in done.stdout, done.stdout
    assert "49 records without a day given one" in done.stdout, done.stdout
    # rcm.accounts: every head is layout 2, its items are records of their own, each in the
    # partition of its account (where the worker reads them).
    accounts = newest(broker, ACCOUNTS)
    heads = {k: orjson.loads(v) for (_, k), v in accounts.items()
             if v is not None and b"/" not in k}
    assert len(heads) == 9 and all(h["layout"] == 2 for h in heads.values())
    where = {account.encode(): partition for partition, account, _ in store["accounts"]}
    assert all(where[k.split(b"/")[0]] == p for p, k in accounts)
    assert (where[b"L000"], b"L000/charge/L000-CH1") in accounts
    assert (where[b"L001"], b"L001/payment/L001-PAY") in accounts
    # The dedup changelog: each record has its day, and its index key files it there.
    dedup = newest(broker, DEDUP)
    for partition, key, _ in store["dedup"]:
        value = dedup[(partition, bytes.fromhex(key))]
        assert value is not None and orjson.loads(value)["horizon_day"] == KEPT_FOR_EVER_DAY
        assert (partition, horizon_key(KEPT_FOR_EVER_DAY, bytes.fromhex(key))) in dedup

    written = [len(asyncio.run(read_topic(kafka, t))) for t in (ACCOUNTS, DEDUP)]
    again = run_upgrade(workers)
    assert again.returncode == ExitCode.OK, again.stderr
    assert again.stdout.startswith("nothing to upgrade"), again.stdout
    assert [len(asyncio.run(read_topic(kafka, t))) for t in (ACCOUNTS, DEDUP)] == written

    worker = workers.start("w1")
    # New events for half the accounts, and a replay of an event applied by the old version
    # (its undated dedup record, dated by the upgrade, still drops it).
    new = [charge(300, f"L{n:03d}", event_id=f"L{n:03d}-NEW") for n in range(0, 8, 2)]
    new += [payment(50, "L001", event_id="L001-NEW-PAY")]
    asyncio.run(publish(kafka, [(EVENTS, d["account"].encode(), json.dumps(d).encode())
                                for d in new] + [events[0]]))

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

    wait_until(caught_up, 120, "the new events applied on the upgraded store", worker.log_tail)
    # Nothing posted again (not the replay either): the only postings are the new events'.
    posted = {json.loads(r.value)["event_id"] for r in asyncio.run(read_topic(kafka, POSTINGS))}
    assert posted == {d["event_id"] for d in new}
    assert worker.alive(), worker.log_tail()


@pytest.mark.broker
def test_a_worker_on_a_store_not_upgraded_stops_naming_the_command(
        broker: Broker, workers: Workers) -> None:
    restore(broker, old_store())
    worker = workers.start("w1")
    new = charge(300, "L000", event_id="L000-NEW")
    asyncio.run(publish(broker.connection,
                        [(EVENTS, b"L000", json.dumps(new).encode())]))
    wait_until(lambda: not worker.alive(), 120, "the worker to stop", worker.log_tail)
    assert worker.process.returncode == ExitCode.REFUSED, worker.log_tail()
    log = worker.log.read_text()
    assert "rcmflow worker: the rcm.accounts head of account 'L000' was written by an older " \
        "rcmflow" in log and "run `rcmflow upgrade` once" in log, worker.log_tail()
    assert not asyncio.run(read_topic(broker.connection, POSTINGS))  # nothing guessed at


@pytest.mark.broker
def test_operator_listings_of_a_store_not_upgraded_refuse_naming_the_command(
        broker: Broker, workers: Workers) -> None:
    restore(broker, old_store())
    for command in (["accounts", "list"], ["accounts", "show", "L000"]):
        shown = subprocess.run([sys.executable, "-m", "rcmflow.cli", *command],
                               env=workers.env(COLUMNS="200"), capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == ExitCode.REFUSED, (command, shown.stderr)
        assert "written by an older rcmflow" in shown.stderr, shown.stderr
        assert "run `rcmflow upgrade` once" in shown.stderr, shown.stderr
    assert run_upgrade(workers).returncode == ExitCode.OK
    shown = subprocess.run([sys.executable, "-m", "rcmflow.cli", "accounts", "show", "L000",
                            "--json"], env=workers.env(), capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == ExitCode.OK, shown.stderr
    assert json.loads(shown.stdout)["charges"][0]["event_id"] == "L000-CH1"
