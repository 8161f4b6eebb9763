"""The read model's feed from a real rcm.accounts topic (embedded broker, no workers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rcmflow.facade.feed import LIVE_BATCH_RECORDS_MAX, Feeder, samples_validation
from rcmflow.facade.server import build_app
from rcmflow.facade.store import Store
from rcmflow.ops.accounts import dlq_records
from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.runtime.settings import Settings
from rcmflow.streams.layout import item_key, parse_key
from rcmflow.streams.topics import ACCOUNTS, DLQ
from rcmflow.tables.upgrade import split_layout_1
from tests.conftest import Broker, wait_until
from tests.facade.conftest import Served, build_tables, records, world_events
from tests.facade.test_exceptions import UNREPRESENTABLE, account_records, with_payment_dated
from tests.facade.test_store import LEGACY, served

pytestmark = pytest.mark.broker

FEED_WAIT_S = 30.0


async def _feed_until(feeder: Feeder, done: object, what: str) -> None:
    """Run the feeder until ``done()`` holds (bounded), then stop it."""
    task = asyncio.create_task(feeder.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FEED_WAIT_S
        while not done():  # type: ignore[operator]
            assert loop.time() < deadline, f"feed did not reach {what}: {feeder.status}"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_feed_fills_resumes_and_refills(broker: Broker, tmp_path: Path) -> None:
    held = records(build_tables(world_events()))
    heads = {k: orjson.loads(v or b"") for k, v in held if parse_key(k).item is None}
    kafka = broker.connection
    await publish(kafka, [(ACCOUNTS, k.encode(), v) for k, v in held])
    store = Store(tmp_path / "read.sqlite")
    feeder = Feeder(store, kafka, source="broker-1")
    await _feed_until(feeder, lambda: feeder.status.lag() == 0, "lag 0")
    assert store.account_count() == len(heads)
    row = store.read("Account", "A1001")
    assert row is not None and row.version == heads["A1001"]["version"]
    assert sum(store.offsets().values()) == len(held)

    # A newer head replaces, an older one (a worker re-sending after a crash) does not,
    # a head's tombstone removes the account.
    newer = heads["B01"] | {"version": heads["B01"]["version"] + 1}
    older = heads["B02"] | {"version": 1}
    await publish(kafka, [(ACCOUNTS, b"B01", orjson.dumps(newer)),
                          (ACCOUNTS, b"B02", orjson.dumps(older))])
    producer = AIOKafkaProducer(**kafka.client_options())
    await producer.start()
    try:
        await producer.send_and_wait(ACCOUNTS, None, key=b"B03")
    finally:
        await producer.stop()
    # Same source: resumes from the stored offsets (only the 3 new records are applied).
    resumed = Feeder(store, kafka, source="broker-1")
    await _feed_until(resumed, lambda: resumed.status.lag() == 0
                      and resumed.status.applied_records == 3, "the 3 new records")
    assert store.read("Account", "B01").version == newer["version"]  # type: ignore[union-attr]
    assert store.read("Account", "B02").version == heads["B02"]["version"]  # type: ignore[union-attr]
    assert store.read("Account", "B03") is None and not served(store, "B03")
    assert store.account_count() == len(heads) - 1

    # Another broker behind the same store: emptied and filled again from the beginning.
    refilled = Feeder(store, kafka, source="broker-2")
    await _feed_until(refilled, lambda: refilled.status.lag() == 0, "lag 0 again")
    assert refilled.status.applied_records == len(held) + 3
    assert store.account_count() == len(heads) - 1
    store.close()


async def test_an_older_rcmflow_head_is_said_at_the_log_end_unless_the_upgrade_replaced_it(
        broker: Broker, tmp_path: Path) -> None:
    """Old heads stay on the compacted topic until compaction: one that `rcmflow upgrade`
    replaced further on is passed over in silence; one left alone is an exception record in
    rcm.dlq naming the command, sent once the feed has read to the end."""
    legacy = orjson.loads(LEGACY.read_bytes())["accounts"]
    kafka = broker.connection
    await publish(kafka, [(ACCOUNTS, a.encode(), orjson.dumps(legacy[a]["record"]))
                          for a in ("A1001", "A1002")])
    head, items = split_layout_1(legacy["A1001"]["record"])
    await publish(kafka, [(ACCOUNTS, item_key("A1001", ref), orjson.dumps(item))
                          for ref, item in items.items()]
                  + [(ACCOUNTS, b"A1001", orjson.dumps(head))])
    store = Store(tmp_path / "read.sqlite")
    feeder = Feeder(store, kafka, source="broker-1")
    await _feed_until(feeder, lambda: feeder.status.lag() == 0
                      and feeder.status.exceptions_sent > 0, "lag 0 and an exception sent")
    said = [orjson.loads(r.value) for r in await read_topic(kafka, DLQ)]
    assert [(r["context"]["account"], r["reason_code"]) for r in said] == \
        [("A1002", "record_unreadable")]
    assert "run `rcmflow upgrade` once" in said[0]["reason"]
    assert store.read("Account", "A1001") is not None and not served(store, "A1002")
    store.close()


def test_an_account_whose_resource_cannot_be_built_stays_visible_and_is_said(
        broker: Broker, tmp_path: Path) -> None:
    """A record on rcm.accounts whose resource cannot be built (a payment dated year 1
    east of UTC: no UTC instant holds it) -> one rcm.dlq record (stage facade) and the
    facade's metric; the account, its claim and its other payment are still served."""
    held = with_payment_dated(account_records("X1"), "X1-P1", UNREPRESENTABLE)
    kafka = broker.connection
    asyncio.run(publish(kafka, [(ACCOUNTS, k.encode(), v) for k, v in held]))
    settings = Settings(broker=broker.url, data_dir=tmp_path / "facade-data",
                        facade_auth="off")
    app = build_app(settings, kafka, source="exceptions")
    feeder: Feeder = app.state.feeder
    with Served(app) as served, httpx.Client(base_url=served.base, timeout=5) as client:
        wait_until(lambda: feeder.status.exceptions_sent == 1 and feeder.status.lag() == 0,
                   FEED_WAIT_S, "the exception record sent")
        for path in ("Account/X1", "Claim/X1.K1", "PaymentReconciliation/pay.X1.X1-P2"):
            assert client.get(path).status_code == 200, path
        assert client.get("PaymentReconciliation/pay.X1.X1-P1").status_code == 404
        metrics = httpx.get(served.base.rsplit("/fhir", 1)[0] + "/metrics").text
    assert 'rcmflow_facade_exceptions_total{reason_code="resource_build_failed"} 1.0' in metrics
    assert 'rcmflow_facade_unserved_resources{reason_code="resource_build_failed"} 1.0' \
        in metrics
    [record] = [r for r in asyncio.run(dlq_records(kafka)) if r["stage"] == "facade"]
    assert record["reason_code"] == "resource_build_failed"
    assert "account X1" in record["reason"] and "pay.X1.X1-P1" in record["reason"]

    # Another facade filling its own store from the start makes the same record: rcm.dlq
    # still holds one (by dlq_id) however often the account is read again.
    again = Store(tmp_path / "again.sqlite")
    refill = Feeder(again, kafka, source="exceptions")
    asyncio.run(_feed_until(refill, lambda: refill.status.exceptions_sent == 1, "the resend"))
    again.close()
    assert [r["dlq_id"] for r in asyncio.run(dlq_records(kafka))
            if r["stage"] == "facade"] == [record["dlq_id"]]


def test_live_traffic_is_validated_whole_and_a_bulk_arrival_is_sampled() -> None:
    # Live traffic (tens of records a fetch, nothing behind) has every resource validated;
    # a batch a bulk file brings, or one with more waiting, only a sample (catch-up speed).
    assert not samples_validation(40, 0)
    assert not samples_validation(LIVE_BATCH_RECORDS_MAX, None)
    assert samples_validation(LIVE_BATCH_RECORDS_MAX + 1, 0)
    assert samples_validation(40, 1)
