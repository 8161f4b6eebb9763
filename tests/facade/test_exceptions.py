"""The facade never drops an account silently: a resource it cannot build (or a record it
cannot read) is an exception record for rcm.dlq and a metric, and the account's other
resources are still served (the feed's side, with a real broker: test_feed.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from rcmflow.facade.resources import validate
from rcmflow.facade.store import Store
from rcmflow.streams.layout import parse_key
from tests.facade.conftest import build_tables, records
from tests.factories import charge, event_doc, payment

#: Year 1 with an offset east of UTC: its UTC instant would be in year 0, which no date type
#: holds. The worker refuses such a date now; a record written before it did still arrives.
UNREPRESENTABLE = "0001-01-01T00:00:00+05:00"


def account_records(account: str) -> list[tuple[str, bytes | None]]:
    """A charge, a submitted claim and two patient payments (event ids <account>-P1, -P2)."""
    return records(build_tables([
        charge(10_000, account=account),
        event_doc("claim_submitted", account, claim_id="K1", total_charge_cents=10_000,
                  dimensions={"entity": "01", "payer": "ACME", "payer_class": "COMMERCIAL"}),
        payment(1_000, account=account, event_id=f"{account}-P1"),
        payment(2_000, account=account, event_id=f"{account}-P2"),
    ]))


def with_payment_dated(held: list[tuple[str, bytes | None]], event_id: str,
                       when: str) -> list[tuple[str, bytes | None]]:
    """The records with one payment item's time replaced (as an old record carried it)."""
    out = []
    for key, value in held:
        parsed = parse_key(key)
        if parsed.item == ("payment", event_id):
            assert value is not None
            value = orjson.dumps(orjson.loads(value) | {"occurred_at": when})
        out.append((key, value))
    return out


def metric(store: Store, name: str, reason: str) -> float:
    for family in store.metric_families():
        for sample in family.samples:
            if sample.name == name and sample.labels["reason_code"] == reason:
                return float(sample.value)
    raise AssertionError(f"no {name}{{reason_code={reason}}}")


def test_a_resource_that_cannot_be_built_is_an_exception_and_the_account_stays(
        tmp_path: Path) -> None:
    held = with_payment_dated(account_records("X1"), "X1-P1", UNREPRESENTABLE)
    store = Store(tmp_path / "read.sqlite")
    store.apply(held, {0: len(held)})
    # The account, its claim and its other payment are served; the offsets moved on.
    assert store.read("Account", "X1") is not None
    assert store.read("Claim", "X1.K1") is not None
    assert store.read("PaymentReconciliation", "pay.X1.X1-P2") is not None
    assert store.read("PaymentReconciliation", "pay.X1.X1-P1") is None
    assert store.offsets() == {0: len(held)}

    [(dlq_id, account, raw)] = store.unsent_exceptions()
    record = orjson.loads(raw)
    assert account == "X1" and record["dlq_id"] == dlq_id
    assert record["stage"] == "facade" and record["reason_code"] == "resource_build_failed"
    assert record["severity"] == "error"
    # The reason names the account and what failed, and carries no value of the record.
    assert "account X1" in record["reason"] and "PaymentReconciliation/pay.X1.X1-P1" in \
        record["reason"] and "OverflowError" in record["reason"]
    assert "0001" not in record["reason"]
    assert orjson.loads(record["payload"])["occurred_at"] == UNREPRESENTABLE  # for the operator
    assert metric(store, "rcmflow_facade_exceptions_total", "resource_build_failed") == 1
    assert metric(store, "rcmflow_facade_unserved_resources", "resource_build_failed") == 1

    # Sent, then the same records again (a feed re-reading them after a restart, or
    # another event on the account): no second record.
    store.mark_sent([dlq_id])
    store.apply(held, {0: len(held)})
    assert store.unsent_exceptions() == []
    store.close()
    # A store filled again from the beginning makes the same dlq_id (rcm.dlq keeps one).
    again = Store(tmp_path / "again.sqlite")
    again.apply(held, {0: len(held)})
    assert [i for i, _, _ in again.unsent_exceptions()] == [dlq_id]

    # A corrected record: the payment is served, its exception is over.
    fixed = [(k, v) for k, v in account_records("X1") if parse_key(k).item == ("payment",
                                                                               "X1-P1")]
    fixed = [(k, orjson.dumps(orjson.loads(v or b"") | {"version": 99})) for k, v in fixed]
    again.apply(fixed, {0: len(held) + 1})
    assert again.read("PaymentReconciliation", "pay.X1.X1-P1") is not None
    assert metric(again, "rcmflow_facade_unserved_resources", "resource_build_failed") == 0
    again.close()


def test_a_payment_dated_year_1_is_served_as_valid_fhir(tmp_path: Path) -> None:
    """Year 1 in UTC is a valid FHIR instant: the account stays visible (it used to be held
    back as invalid, its lastUpdated written "1-01-01")."""
    held = with_payment_dated(account_records("X2"), "X2-P1", "0001-01-01T00:00:00Z")
    store = Store(tmp_path / "read.sqlite")
    store.apply(held, {0: 1})
    row = store.read("PaymentReconciliation", "pay.X2.X2-P1")
    assert row is not None
    doc: dict[str, Any] = orjson.loads(row.body)
    validate(doc)
    assert doc["created"] == "0001-01-01T00:00:00.000000Z"
    assert store.read("Account", "X2") is not None
    assert store.invalid_snapshots == 0 and store.unsent_exceptions() == []
    store.close()


def test_an_unreadable_record_is_an_exception_and_the_batch_goes_on(tmp_path: Path) -> None:
    held = account_records("X3")
    broken = [(k, b"{not json" if parse_key(k).item == ("payment", "X3-P2") else v)
              for k, v in held]
    store = Store(tmp_path / "read.sqlite")
    store.apply(broken, {0: 1})
    assert store.read("Account", "X3") is not None
    assert store.read("PaymentReconciliation", "pay.X3.X3-P1") is not None
    [(_, account, raw)] = store.unsent_exceptions()
    record = orjson.loads(raw)
    assert account == "X3" and record["reason_code"] == "record_unreadable"
    assert "account X3" in record["reason"] and record["payload"] == "{not json"
    assert metric(store, "rcmflow_facade_unserved_resources", "record_unreadable") == 1
    store.close()
