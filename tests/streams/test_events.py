"""Canonical events: what validates, what does not, and what the DLQ reason says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rcmflow.streams.chart import load_chart
from rcmflow.streams.events import EVENT_ADAPTER, EventKind, event_digest, events_json_schema
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Processor
from tests.factories import adjudication, charge, event_doc, messages, parse, payment

EVERY_KIND = [
    charge(100),
    event_doc("charge_reversed", amount_cents=100),
    event_doc("claim_submitted", claim_id="C1", total_charge_cents=300,
              lines=[{"line_id": "1", "charge_cents": 100}, {"line_id": "2", "charge_cents": 200}]),
    adjudication(300, 200, [("CO", "45", 100)]),
    adjudication(500, 0, [("CO", "16", 500)], claim_id="C2", outcome="denied",
                 remark_codes=["N14"]),
    payment(100),
    event_doc("refund", amount_cents=100),
    event_doc("refund_approved", request_id="R1", by="ann", role="refund_approver"),
    event_doc("refund_rejected", request_id="R1", by="ann", role="refund_approver",
              reason="already refunded by cheque"),
    event_doc("write_off", amount_cents=100, reason="charity"),
    event_doc("manual_adjustment", amount_cents=-100),
    event_doc("account_status_changed", status="closed"),
    event_doc("provider_adjustment", "provider:99", reason_code="L6", amount_cents=-5),
    event_doc("suspense_reclassified", posting_id="pst_1", role="gross_revenue",
              dimension="ED", bucket="gross_charges", amount_cents=-100,
              missing="gross_revenue[revenue code 0999]", suspense_account="2900"),
    event_doc("workflow_step", step="eligibility_verified", result="active"),
]


def reject(value: dict[str, Any] | bytes) -> tuple[str, str]:
    """(reason_code, reason) the worker gives this input."""
    doc = value if isinstance(value, dict) else None
    raw = json.dumps(doc).encode() if doc is not None else value
    assert isinstance(raw, bytes)
    key = doc["account"] if doc is not None and "account" in doc else "A1"
    result = Processor(load_chart()).process(messages([(key, raw)]), MemoryTables())
    assert result.counts.applied == 0, "expected a rejection"
    record = json.loads(result.dlq[0][2])
    return record["reason_code"], record["reason"]


def test_every_kind_validates_and_round_trips() -> None:
    assert {d["kind"] for d in EVERY_KIND} == {k.value for k in EventKind}
    for doc in EVERY_KIND:
        event = parse(doc)
        assert EVENT_ADAPTER.validate_json(event.model_dump_json()) == event


def test_the_schema_lists_the_workflow_step_kind() -> None:
    """`rcmflow schema events` publishes the workflow events other systems send."""
    schema = json.dumps(events_json_schema())
    assert '"workflow_step"' in schema
    for step in ("registration_complete", "eligibility_verified", "charge_review_complete",
                 "coding_approved", "appeal_initiated", "patient_statement_issued"):
        assert f'"{step}"' in schema


def test_an_unknown_workflow_step_is_refused() -> None:
    code, reason = reject(event_doc("workflow_step", step="claim_paid"))
    assert code == "invalid_event"
    assert "step" in reason


@pytest.mark.parametrize("amount", [12.5, 100.0, "100", True, None])
def test_money_must_be_integer_cents(amount: object) -> None:
    code, reason = reject(charge(100) | {"amount_cents": amount})
    assert code == "invalid_event"
    assert "amount_cents" in reason


def test_negative_amount_where_not_allowed() -> None:
    code, reason = reject(payment(-5))
    assert code == "invalid_event" and "greater than 0" in reason


def test_unknown_kind_names_the_kind_and_the_known_ones() -> None:
    code, reason = reject(event_doc("charge_teleported", amount_cents=1))
    assert code == "unknown_kind"
    assert "'charge_teleported'" in reason and "charge_posted" in reason


def test_unknown_schema_version() -> None:
    assert reject(charge(1) | {"schema_version": 2})[0] == "unsupported_schema_version"


def test_unknown_currency_and_malformed_currency() -> None:
    assert reject(charge(1, currency="XYZ"))[0] == "currency_unsupported"
    assert reject(charge(1, currency="usd"))[0] == "invalid_event"


def test_broken_json_and_too_large() -> None:
    assert reject(b'{"account": "A1", "kind": ')[0] == "invalid_json"
    big = charge(1, source="x" * 300_000)
    assert reject(big)[0] == "too_large"


def test_unbalanced_adjudication_is_refused_with_the_numbers() -> None:
    code, reason = reject(adjudication(1_000, 600, [("CO", "45", 300)]))
    assert code == "invalid_event"
    assert "charge 1000 - paid 600 != adjustments 300" in reason


def test_provider_keys_are_only_for_provider_adjustments() -> None:
    assert reject(charge(1, account="provider:1"))[0] == "invalid_event"
    assert reject(event_doc("provider_adjustment", "A1", reason_code="L6",
                            amount_cents=1))[0] == "invalid_event"


def test_key_must_be_the_account() -> None:
    raw = json.dumps(charge(1, account="A2")).encode()
    result = Processor(load_chart()).process(messages([("A1", raw)]), MemoryTables())
    assert json.loads(result.dlq[0][2])["reason_code"] == "key_mismatch"


def test_digest_ignores_key_order_and_whitespace_but_not_content() -> None:
    doc = charge(100, event_id="X")
    reordered = json.dumps(dict(reversed(list(doc.items()))), indent=2).encode()
    assert event_digest(json.dumps(doc).encode()) == event_digest(reordered)
    assert event_digest(json.dumps(doc).encode()) != event_digest(
        json.dumps(doc | {"amount_cents": 101}).encode())


def test_published_schema_names_every_kind() -> None:
    schema = events_json_schema()
    assert schema["discriminator"]["propertyName"] == "kind"  # type: ignore[index]
    assert set(schema["discriminator"]["mapping"]) == {k.value for k in EventKind}  # type: ignore[index]


def test_head_json_is_the_models_own_document() -> None:
    from rcmflow.streams.core import Applied, apply, new_account
    from rcmflow.streams.state import AccountHead, head_json

    head, items = new_account("A1"), {}
    for doc in [charge(100), adjudication(100, 60, [("CO", "45", 30), ("PR", "1", 10)]),
                payment(25)]:
        result = apply(head, parse(doc), load_chart(), items.get)
        assert isinstance(result, Applied)
        head, items = result.head, {**items, **result.items}
    assert json.loads(head_json(head)) == json.loads(head.model_dump_json())
    assert AccountHead.model_validate_json(head_json(head)) == head
    assert head.items.total() + head.items.transition == len(items) == 5  # + payment_posted


def test_the_published_accounts_schema_holds_every_record_the_worker_writes() -> None:
    """`rcmflow schema accounts`: each head and item record validates against its key's form."""
    import subprocess
    import sys

    import jsonschema

    from rcmflow.streams.layout import parse_key
    from rcmflow.streams.memory_tables import MemoryTables

    shown = subprocess.run([sys.executable, "-m", "rcmflow.cli", "schema", "accounts"],
                           capture_output=True, text=True, timeout=60, check=True)
    schema = json.loads(shown.stdout)["keys"]
    tables = MemoryTables()
    tables.write(Processor(load_chart()).process(messages(EVERY_KIND), tables))
    forms = set()
    for (_, key), value in tables.accounts.items():
        parsed = parse_key(key)
        form = "<account>" if parsed.item is None else f"<account>/{parsed.item[0]}/<id>"
        jsonschema.validate(json.loads(value), schema[form])
        forms.add(form)
    assert forms == set(schema)


def test_835_line_details_that_move_no_money_are_no_conflict_when_sent_again() -> None:
    """An 835 applied before rcmflow read AMT*B6, units, revenue code and date of service,
    sent again by a version that does: a replay (the same money), not a conflict."""
    old = adjudication(300, 200, [("CO", "45", 100)]) | {"lines": [
        {"line_id": "1", "charge_cents": 300, "paid_cents": 200,
         "adjustments": [{"group": "CO", "reason": "45", "amount_cents": 100}]}]}
    new = old | {"remark_codes": ["MA02"],
                 "lines": [old["lines"][0] | {"allowed_cents": 200, "units": 1,
                                              "revenue_code": "0450", "remark_codes": ["N14"],
                                              "service_date": "2026-11-01"}]}
    assert event_digest(json.dumps(old).encode()) == event_digest(json.dumps(new).encode())
    paid_more = old | {"paid_cents": 250}
    assert event_digest(json.dumps(old).encode()) != event_digest(json.dumps(paid_more).encode())
