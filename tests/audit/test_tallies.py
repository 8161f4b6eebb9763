"""`rcmflow audit --follow`'s exception and balance metrics, fed records as it reads them
(``Follower.take``; no broker: the reading loop is the existing follower's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rcmflow.audit.ledger import Follower
from rcmflow.audit.tallies import DlqTally
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record
from rcmflow.runtime.metrics import new_registry, render
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Processor
from rcmflow.streams.topics import DLQ, POSTINGS, POSTINGS_DLQ
from tests.factories import charge, messages, payment

STAMP_MS = 1_795_000_000_000


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Follower]:
    made = Follower(KafkaConnection(("127.0.0.1:9",)), tmp_path)
    yield made
    made.close()


def _samples(follower: Follower) -> dict[str, float]:
    text = render(new_registry(follower.families)).decode()
    return {s.name + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("rcmflow_audit")}


def _feed(follower: Follower, topic: str, values: list[bytes]) -> None:
    for offset, value in enumerate(values):
        follower.take(Record(topic, 0, offset, b"k", value, STAMP_MS))


def test_entity_balances_and_exception_items(follower: Follower) -> None:
    docs = [charge(1_000, account="A1", revenue_code="0999"),  # unmapped: to suspense
            payment(3_000, account="A2"),  # nothing owed: unapplied credit
            charge(500, account="A3", dimensions={"entity": "02"}),
            payment(200, account="A4", dimensions={"entity": "02"})]
    conflicting = dict(docs[1], amount_cents=3_001)  # same event id, other content
    result = Processor(load_chart()).process(
        messages([*docs, conflicting, ("A9", b"{not json")]), MemoryTables())
    postings = [value for _, _, value in result.postings]
    _feed(follower, POSTINGS, postings + postings[:2])  # re-sent deltas count once
    dlq = [value for _, _, value in result.dlq]
    assert len(dlq) == 3  # the suspense warning, the conflict, the bad JSON
    _feed(follower, DLQ, dlq + dlq)  # a DLQ record written twice is one item
    got = _samples(follower)
    assert got["rcmflow_audit_unapplied_credit_centsentity=01"] == 3_000
    assert got["rcmflow_audit_unapplied_credit_centsentity=02"] == 200
    assert got["rcmflow_audit_suspense_centsentity=01"] == 1_000
    # AR by bucket and entity: A1's and A3's charges (the payments found nothing owed).
    assert got["rcmflow_audit_ar_centsbucket=insurance_ar,entity=01"] == 1_000
    assert got["rcmflow_audit_ar_centsbucket=insurance_ar,entity=02"] == 500
    items = {k.split("items", 1)[1]: v for k, v in got.items()
             if k.startswith("rcmflow_audit_dlq_items")}
    assert items == {
        "entity=01,queue=dlq,reason=unmapped_dimension,severity=warning,stage=posting": 1,
        "entity=01,queue=dlq,reason=conflict,severity=error,stage=dedup": 1,
        "entity=unknown,queue=dlq,reason=invalid_json,severity=error,stage=decode": 1,
    }
    assert got["rcmflow_audit_dlq_oldest_item_age_secondsqueue=dlq"] > 0
    age = got["rcmflow_audit_dlq_oldest_item_age_secondsqueue=postings_dlq"]
    assert age != age  # NaN: that queue is empty


def test_oldest_age_and_the_open_only_hook() -> None:
    tally = DlqTally()
    for n, received in enumerate(("2026-12-01T00:00:00+00:00", "2026-12-03T00:00:00+00:00")):
        record = {"dlq_id": f"dlq_{n}", "stage": "posting", "reason_code": "erp_rejected",
                  "severity": "error", "received_at": received, "context": {"entity": "03"}}
        tally.take(POSTINGS_DLQ, json.dumps(record).encode(), None)
    now = 1_796_342_400.0  # 2026-12-04T00:00:00Z
    assert tally.oldest_age_s(now)["postings_dlq"] == 3 * 86_400
    tally.settle("dlq_0")  # resolved: the work queue's state says so
    assert tally.oldest_age_s(now)["postings_dlq"] == 86_400
    assert sum(tally.counts.values()) == 1
    tally.reopen("dlq_0")
    assert sum(tally.counts.values()) == 2


def test_the_tally_is_bounded() -> None:
    tally = DlqTally(items_max=3)
    for n in range(5):
        tally.take(DLQ, json.dumps({"dlq_id": f"dlq_{n}", "stage": "decode",
                                    "reason_code": "invalid_json"}).encode(), STAMP_MS)
    tally.take(DLQ, b"not a record", STAMP_MS)
    assert len(tally.items) == 3 and tally.untracked == 2 and tally.unreadable == 1


def test_open_items_only_as_the_work_queues_states_say(follower: Follower) -> None:
    from datetime import UTC, datetime

    from rcmflow.ops.items import Step, add_step
    from rcmflow.streams.topics import DLQ_STATE

    def item(n: int) -> bytes:
        return json.dumps({"dlq_id": f"dlq_{n}", "stage": "rules", "severity": "error",
                           "reason_code": "small_balance_over_threshold",
                           "received_at": "2026-12-01T00:00:00+00:00",
                           "context": {"entity": "01"}}).encode()

    def state(n: int, name: str) -> Record:
        made = add_step(None, f"dlq_{n}", DLQ, Step(state=name, at=datetime.now(UTC),
                                                     by="ana", note="x"))
        return Record(DLQ_STATE, 0, 0, f"dlq_{n}".encode(), made.model_dump_json().encode(),
                      STAMP_MS)

    open_items = ("rcmflow_audit_dlq_itemsentity=01,queue=dlq,reason="
                  "small_balance_over_threshold,severity=error,stage=rules")
    follower.take(state(0, "resolved"))  # its state is read before the item itself
    _feed(follower, DLQ, [item(0), item(1), item(2)])
    assert _samples(follower)[open_items] == 2
    follower.take(state(1, "resolved"))
    assert _samples(follower)[open_items] == 1
    follower.take(state(1, "assigned"))  # reopened: work to do again
    follower.take(state(2, "assigned"))  # taken, not done
    assert _samples(follower)[open_items] == 2


def test_pending_refunds_by_entity_and_the_oldest_age(follower: Follower) -> None:
    """The refund requests on rcm.accounts, as the worker writes them: two wait (entity 01
    and 02), one was approved by the policy, one waited and was then approved."""
    from rcmflow.streams.layout import item_key
    from tests.factories import event_doc

    def refund(account: str, rid: str, cents: int, entity: str, day: str) -> dict[str, object]:
        return event_doc("refund", account, event_id=rid, amount_cents=cents,
                         occurred_at=f"2026-11-{day}T10:00:00+00:00",
                         dimensions={"entity": entity})

    docs = [payment(900_000, "P1", event_id="P1-PAY"), payment(900_000, "P2", event_id="P2-PAY",
                                                               dimensions={"entity": "02"}),
            refund("P1", "R-old", 50_000, "01", "10"), refund("P1", "R-new", 20_000, "01", "12"),
            refund("P1", "R-auto", 5_000, "01", "12"), refund("P2", "R-02", 30_000, "02", "11"),
            refund("P1", "R-done", 40_000, "01", "09"),
            event_doc("refund_approved", "P1", event_id="ok", request_id="R-done", by="bob",
                      role="refund_manager")]
    tables = MemoryTables()
    tables.write(Processor(load_chart()).process(messages(docs), tables))
    for offset, ((_, key), value) in enumerate(sorted(tables.accounts.items())):
        follower.take(Record("rcm.accounts", 0, offset, key, value, STAMP_MS))
    families = {f.name: f for f in text_string_to_metric_families(
        render(new_registry(lambda: follower.refunds.families(now_s=1_794_736_800.0))).decode())}
    pending = {s.labels["entity"]: s.value for s in families["rcmflow_refunds_pending"].samples}
    cents = {s.labels["entity"]: s.value
             for s in families["rcmflow_refunds_pending_cents"].samples}
    oldest = {s.labels["entity"]: s.value
              for s in families["rcmflow_refunds_pending_oldest_age_seconds"].samples}
    assert pending == {"01": 2, "02": 1}
    assert cents == {"01": 70_000, "02": 30_000}
    # 1_794_736_800 is 2026-11-15T10:00Z: R-old (the 10th) is 5 days old, R-02 4 days.
    assert oldest == {"01": 5 * 86_400, "02": 4 * 86_400}
    assert item_key("P1", ("refund", "R-done")) not in follower.refunds.items


def test_accounts_by_state_follow_each_accounts_newest_head(follower: Follower) -> None:
    """Heads as the follower reads them from rcm.accounts: an account counts once, in its
    newest head's lifecycle state; a tombstone takes it out."""
    from rcmflow.streams.layout import is_head_key
    from rcmflow.streams.memory_tables import head_records
    from rcmflow.streams.topics import ACCOUNTS
    from tests.factories import event_doc

    tables = MemoryTables()
    processor = Processor(load_chart())
    heads: list[tuple[bytes, bytes]] = []
    for doc in [event_doc("workflow_step", account="A1", step="registration_complete"),
                event_doc("workflow_step", account="A2", step="registration_complete"),
                charge(1_000, account="A3", dimensions={"entity": "02"}),
                event_doc("claim_submitted", account="A1", claim_id="C1",
                          total_charge_cents=0)]:
        result = processor.process(messages([doc]), tables)
        tables.write(result)
        heads += [(key, value) for (_, key), value in head_records(result).items()
                  if is_head_key(key)]
    for offset, (key, value) in enumerate(heads):
        follower.take(Record(ACCOUNTS, 0, offset, key, value, STAMP_MS))
    got = {k.split("state", 1)[1]: v for k, v in _samples(follower).items()
           if k.startswith("rcmflow_audit_accounts_by_state")}
    assert got == {"entity=01,state=registration_complete": 1,
                   "entity=01,state=claim_submitted": 1, "entity=02,state=none": 1}
    follower.take(Record(ACCOUNTS, 0, len(heads), b"A2", None, STAMP_MS))
    got = {k.split("state", 1)[1]: v for k, v in _samples(follower).items()
           if k.startswith("rcmflow_audit_accounts_by_state")}
    assert got["entity=01,state=registration_complete"] == 0


def test_denials_by_payer_category_state_and_open_amounts_by_age(follower: Follower) -> None:
    """The denial items on rcm.accounts, as the worker writes them: the routing table sorts
    them as they are read; only open (or appealed) ones are aged."""
    from tests.factories import adjudication, event_doc

    acme = {"entity": "01", "payer": "ACME", "payer_class": "COMMERCIAL"}
    docs = [
        charge(30_000, "D3"),
        adjudication(50_000, 0, [("CO", "29", 50_000)], "D1", claim_id="D1", outcome="denied",
                     dimensions=acme, occurred_at="2026-11-10T10:00:00+00:00"),
        adjudication(20_000, 0, [("CO", "16", 20_000)], "D2", claim_id="D2", outcome="denied",
                     dimensions=acme, occurred_at="2026-07-01T10:00:00+00:00"),
        adjudication(30_000, 0, [("CO", "16", 30_000)], "D3", claim_id="D3", outcome="denied",
                     dimensions=acme, occurred_at="2026-11-01T10:00:00+00:00"),
        event_doc("write_off", "D3", amount_cents=30_000, reason="denial",
                  dimensions={"entity": "01", "claim_id": "D3"}),
    ]
    tables = MemoryTables()
    tables.write(Processor(load_chart()).process(messages(docs), tables))
    for offset, ((_, key), value) in enumerate(sorted(tables.accounts.items())):
        follower.take(Record("rcm.accounts", 0, offset, key, value, STAMP_MS))
    families = {f.name: f for f in text_string_to_metric_families(
        render(new_registry(lambda: follower.denials.families(now_s=1_794_736_800.0)))
        .decode())}
    counts = {(s.labels["category"], s.labels["state"]): s.value
              for s in families["rcmflow_denials"].samples}
    assert counts == {("timely_filing", "open"): 1, ("missing_information", "open"): 1,
                      ("missing_information", "written_off"): 1}
    cents = {(s.labels["category"], s.labels["state"]): s.value
             for s in families["rcmflow_denials_cents"].samples}
    assert cents[("missing_information", "written_off")] == 30_000
    # 1_794_736_800 is 2026-11-15: D1 is 5 days old, D2 137.
    aged = {s.labels["age"]: s.value for s in families["rcmflow_denials_open_cents"].samples}
    assert aged == {"0-30": 50_000, "31-60": 0, "61-90": 0, "91-120": 0, "120+": 20_000}
