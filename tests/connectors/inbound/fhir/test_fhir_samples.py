"""Every public FHIR sample in tests/samples/fhir: its events, or why it goes to rcm.dlq.

Expectations were written by reading the files (VERIFY.md: all 16 validate with the R4B
models) and the mapping rules in connectors/inbound/fhir/mapping.py, not from what the code prints:

- ChargeItem ``example``: billable, account ``Account/example``, priceOverride 40 **EUR**.
  The ledger is USD, so it is refused (``fhir_currency``); the same item in USD is a 40.00
  charge on account ``example``.
- PaymentReconciliation ``ER2500``: a payer's (paymentIssuer Organization/2) bulk
  settlement whose details pay claims: refused (``fhir_payer_payment``). Read as a patient's,
  its details (3500 + 4000 - 1500 = 6000) do not add up to paymentAmount 7000.
- PaymentNotice ``77654``: a notice about PaymentReconciliation/ER2500: no event, no DLQ.
- Account, Claim, ClaimResponse, Coverage, EOB, Invoice, Patient: valid, but not money
  rcmflow takes from FHIR: a DLQ warning (``fhir_unsupported_resource``) each.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from rcmflow.connectors.inbound.fhir import FhirLimits, FhirOutcome, Rejected, process_fhir
from rcmflow.streams.events import ChargePosted, ChargeReversed, PatientPayment, Refund
from rcmflow.streams.topics import DLQ, EVENTS, RAW_FHIR


def placed(rejected: list[Rejected]) -> list[tuple[str, str]]:
    """Each refusal's place in the file and its reason code."""
    return [(r.place, r.rejection.reason_code) for r in rejected]


SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "fhir"
CET = timezone(timedelta(hours=1))

#: file -> (resourceType, reason code or None for "no DLQ record", severity, note expected)
EXPECTED: dict[str, tuple[str, str | None, str | None, bool]] = {
    "r4_account-example-with-guarantor.json": ("Account", "fhir_unsupported_resource",
                                               "warning", False),
    "r4_account-example.json": ("Account", "fhir_unsupported_resource", "warning", False),
    "r4_chargeitem-example.json": ("ChargeItem", "fhir_currency", "error", False),
    "r4_claim-example-institutional.json": ("Claim", "fhir_unsupported_resource", "warning",
                                            False),
    "r4_claim-example-professional.json": ("Claim", "fhir_unsupported_resource", "warning",
                                           False),
    "r4_claim-example.json": ("Claim", "fhir_unsupported_resource", "warning", False),
    "r4_claimresponse-example-2.json": ("ClaimResponse", "fhir_unsupported_resource", "warning",
                                        False),
    "r4_claimresponse-example.json": ("ClaimResponse", "fhir_unsupported_resource", "warning",
                                      False),
    "r4_coverage-example-selfpay.json": ("Coverage", "fhir_unsupported_resource", "warning",
                                         False),
    "r4_coverage-example.json": ("Coverage", "fhir_unsupported_resource", "warning", False),
    "r4_explanationofbenefit-example-2.json": ("ExplanationOfBenefit",
                                               "fhir_unsupported_resource", "warning", False),
    "r4_explanationofbenefit-example.json": ("ExplanationOfBenefit",
                                             "fhir_unsupported_resource", "warning", False),
    "r4_invoice-example.json": ("Invoice", "fhir_unsupported_resource", "warning", False),
    "r4_patient-example.json": ("Patient", "fhir_unsupported_resource", "warning", False),
    "r4_paymentnotice-example.json": ("PaymentNotice", None, None, True),
    "r4_paymentreconciliation-example.json": ("PaymentReconciliation", "fhir_payer_payment",
                                              "error", False),
}


def _load(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text())


def _run(doc_or_text: Any, name: str = "x.json") -> FhirOutcome:
    data = (doc_or_text if isinstance(doc_or_text, bytes)
            else json.dumps(doc_or_text).encode())
    return process_fhir(data, name=name, origin=f"file:{name}")


def test_every_sample_is_listed() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(name: str) -> None:
    kind, code, severity, note = EXPECTED[name]
    outcome = process_fhir((SAMPLES / name).read_bytes(), name=name, origin=f"file:{name}")
    assert outcome.resources == 1
    assert outcome.events == []  # no public sample is a USD charge or a patient's payment
    assert [(r.rejection.reason_code, r.rejection.severity, r.resource_type, r.place)
            for r in outcome.rejected] == ([(code, severity, kind, "resource")] if code else [])
    assert bool(outcome.notes) is note
    records = outcome.records()
    # The resource is kept as received on rcm.raw.fhir, byte for byte.
    raw = [orjson.loads(v) for t, _, v in records if t == RAW_FHIR]
    assert len(raw) == 1 and raw[0]["resource"] == (SAMPLES / name).read_text()
    assert raw[0]["status"] == ("notice" if note else "rejected")
    dlq = [orjson.loads(v) for t, _, v in records if t == DLQ]
    assert len(dlq) == (1 if code else 0)
    if code:
        assert dlq[0]["reason_code"] == code and dlq[0]["severity"] == severity
        context = dlq[0]["context"]  # a warning is tallied: the places of its kind
        places = (context["places"] if severity == "warning"
                  else [p["place"] for p in context["problems"]])
        assert places == ["resource"]
        assert dlq[0]["payload"] == (SAMPLES / name).read_text()


def test_the_charge_item_sample_is_refused_for_its_euros_with_the_numbers() -> None:
    outcome = _run(_load("r4_chargeitem-example.json"))
    assert "priceOverride.currency 'EUR'" in outcome.rejected[0].rejection.detail
    assert "(USD)" in outcome.rejected[0].rejection.detail


def test_the_charge_item_sample_in_dollars_is_a_40_charge_on_account_example() -> None:
    doc = _load("r4_chargeitem-example.json")
    doc["priceOverride"]["currency"] = "USD"
    outcome = _run(doc)
    assert not outcome.rejected
    [(unit, event)] = outcome.events
    assert isinstance(event, ChargePosted)
    assert event.account == "example" and event.amount_cents == 4000 and event.quantity == 1
    assert event.event_id == "fhir:ChargeItem:http://myHospital.org/ChargeItems|654321"
    assert event.occurred_at == datetime(2017, 1, 25, 8, 0, tzinfo=CET)
    assert event.dimensions.encounter == "example"
    assert event.dimensions.department == "CARD_INTERMEDIATE_CARE"
    assert event.dimensions.procedure_code is None  # code 01510 has no system: not a CPT
    assert event.currency == "USD" and event.source == "fhir"
    # Entered in error: the reversal of that very charge, with its own key.
    doc["status"] = "entered-in-error"
    [(_, reversal)] = _run(doc).events
    assert isinstance(reversal, ChargeReversed)
    assert reversal.reverses_event_id == event.event_id
    assert reversal.event_id == event.event_id + ":entered-in-error"
    assert reversal.amount_cents == 4000


@pytest.mark.parametrize("status", ["planned", "not-billable", "aborted", "unknown"])
def test_a_charge_item_that_is_not_billable_moves_nothing_and_says_so(status: str) -> None:
    doc = _load("r4_chargeitem-example.json")
    doc["status"] = status
    outcome = _run(doc)
    assert outcome.events == []
    assert [(r.rejection.reason_code, r.rejection.severity)
            for r in outcome.rejected] == [("fhir_not_billable", "warning")]


def _patient_reconciliation() -> dict[str, Any]:
    """ER2500 as a patient's payment: no payer issuer, each detail names an account."""
    doc = _load("r4_paymentreconciliation-example.json")
    del doc["paymentIssuer"]
    for detail in doc["detail"]:
        detail["request"] = {"reference": "Account/A1001"}
    return doc


def test_the_reconciliation_sample_as_a_patients_does_not_add_up() -> None:
    outcome = _run(_patient_reconciliation())
    assert outcome.events == []
    [rejected] = outcome.rejected
    assert rejected.rejection.reason_code == "fhir_unbalanced"
    assert "paymentAmount 7000.00 != sum of detail amounts 6000.00" in rejected.rejection.detail


def test_the_reconciliation_sample_as_a_patients_payment_and_refund() -> None:
    doc = _patient_reconciliation()
    doc["paymentAmount"]["value"] = 6000
    outcome = _run(doc)
    # detail[2] is an "advance", not a payment: refused on its own, the others go through.
    assert [(r.rejection.reason_code, r.place, r.account) for r in outcome.rejected] == [
        ("fhir_detail_type", "resource detail[2]", None)]
    events = [e for _, e in outcome.events]
    assert [type(e) for e in events] == [PatientPayment, PatientPayment]
    assert [(e.account, e.amount_cents, e.reference) for e in events] == [
        ("A1001", 350000, "10-12345"), ("A1001", 400000, "10-12345")]
    assert [e.event_id for e in events] == [
        "fhir:PaymentReconciliation.detail:http://www.BenefitsInc.com/payment/2018/detail"
        "|10-12345-001",
        "fhir:PaymentReconciliation.detail:http://www.BenefitsInc.com/payment/2018/detail"
        "|10-12345-002"]
    assert [e.occurred_at.date().isoformat() for e in events] == ["2014-08-16", "2014-08-12"]
    assert all(e.correlation_id == "10-12345" for e in events)
    # The advance as a payment type with its -1500: a refund to the patient.
    doc["detail"][2]["type"]["coding"][0]["code"] = "payment"
    refund = _run(doc).events[2][1]
    assert isinstance(refund, Refund) and refund.amount_cents == 150000 and refund.to == "patient"


def test_a_bundle_of_every_sample_answers_each_entry_with_its_index() -> None:
    names = sorted(EXPECTED)
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{n}", "resource": _load(name)}
                        for n, name in enumerate(names)]}
    usd = copy.deepcopy(_load("r4_chargeitem-example.json"))
    usd["priceOverride"]["currency"] = "USD"
    bundle["entry"].append({"resource": usd})
    bundle["entry"].append({"request": {"method": "DELETE", "url": "ChargeItem/x"}})
    outcome = _run(bundle, "all.json")
    assert outcome.resources == len(names) + 2
    expected = {f"entry[{n}]": EXPECTED[name][1] for n, name in enumerate(names)
                if EXPECTED[name][1]}
    expected[f"entry[{len(names) + 1}]"] = "fhir_bundle_entry"
    assert {r.location: r.rejection.reason_code for r in outcome.rejected} == expected
    assert [(u.location, e.amount_cents) for u, e in outcome.events] == [
        (f"entry[{len(names)}]", 4000)]
    dlq = [orjson.loads(v) for t, _, v in outcome.records() if t == DLQ]
    # Errors: one record each, at its entry. Warnings (unsupported types): one record for the
    # file, counting them and naming their entries.
    errors = {k for k, code in expected.items() if code != "fhir_unsupported_resource"}
    assert {d["origin"]["offset"] for d in dlq if d["severity"] == "error"} == {
        int(k[6:-1]) for k in errors}
    (warned,) = [d for d in dlq if d["severity"] == "warning"]
    unsupported = sorted((k for k in expected if k not in errors), key=lambda k: int(k[6:-1]))
    assert warned["reason_code"] == "fhir_unsupported_resource"
    assert warned["context"]["count"] == len(unsupported)
    assert warned["context"]["places"] == unsupported
    assert len({d["dlq_id"] for d in dlq}) == len(dlq)
    # A re-read produces the same records (deterministic DLQ ids, same events).
    again = _run(bundle, "all.json").records()
    assert [r for r in again if r[0] != DLQ] == [r for r in outcome.records() if r[0] != DLQ]
    assert sorted(orjson.loads(v)["dlq_id"] for t, _, v in again if t == DLQ) == sorted(
        d["dlq_id"] for d in dlq)


def test_ndjson_of_every_sample_answers_each_line_with_its_number() -> None:
    names = sorted(EXPECTED)
    lines = [json.dumps(_load(name)) for name in names]
    lines.insert(3, "")  # blank lines are skipped, numbering stays the file's
    lines.append("{not json")
    outcome = _run("\n".join(lines).encode(), "all.ndjson")
    assert outcome.resources == len(names) + 1
    numbers = {name: n + (2 if n >= 3 else 1) for n, name in enumerate(names)}
    expected = {f"line {numbers[name]}": EXPECTED[name][1] for name in names
                if EXPECTED[name][1]}
    expected[f"line {len(lines)}"] = "fhir_invalid_json"
    assert {r.location: r.rejection.reason_code for r in outcome.rejected} == expected
    assert [u.location for u, _ in outcome.notes] == [
        f"line {numbers['r4_paymentnotice-example.json']}"]


def test_bundle_types_that_are_not_units_of_resources_are_refused_whole() -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": _load("r4_paymentnotice-example.json")}]}
    outcome = _run(bundle)
    assert placed(outcome.rejected) == [("file", "fhir_bundle")]
    assert "'searchset'" in outcome.rejected[0].rejection.detail


def test_events_go_to_rcm_events_keyed_by_account() -> None:
    doc = _load("r4_chargeitem-example.json")
    doc["priceOverride"]["currency"] = "USD"
    records = _run(doc).records()
    [(topic, key, value)] = [r for r in records if r[0] == EVENTS]
    assert key == b"example" and orjson.loads(value)["amount_cents"] == 4000


def test_limits_resources_and_resource_size() -> None:
    note = _load("r4_paymentnotice-example.json")
    lines = "\n".join(json.dumps(note | {"id": f"n{i}"}) for i in range(5)).encode()
    outcome = process_fhir(lines, name="n.ndjson", origin="file:n",
                           limits=FhirLimits(resources_max=3))
    assert outcome.resources == 3 and len(outcome.notes) == 3
    assert placed(outcome.rejected) == [("line 4", "fhir_resources_max")]
    big = note | {"text": {"status": "generated", "div": "<div>" + "x" * 5000 + "</div>"}}
    data = (json.dumps(big) + "\n" + json.dumps(note)).encode()
    outcome = process_fhir(data, name="n.ndjson", origin="file:n",
                           limits=FhirLimits(resource_bytes_max=4096))
    assert placed(outcome.rejected) == [("line 1", "fhir_too_large")]
    assert len(outcome.notes) == 1


def test_the_resource_limit_counts_refused_entries_too() -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{}] * 5}
    outcome = process_fhir(json.dumps(bundle).encode(), name="b.json", origin="file:b",
                           limits=FhirLimits(resources_max=3))
    assert outcome.resources == 3
    assert placed(outcome.rejected) == [
        ("entry[0]", "fhir_bundle_entry"), ("entry[1]", "fhir_bundle_entry"),
        ("entry[2]", "fhir_bundle_entry"), ("entry[3]", "fhir_resources_max")]


def test_the_same_resource_twice_in_a_file_is_refused_the_second_time() -> None:
    doc = _patient_reconciliation()
    doc["paymentAmount"]["value"] = 6000
    doc["detail"][2]["type"]["coding"][0]["code"] = "payment"
    twice = f"{json.dumps(doc)}\n{json.dumps(doc)}\n".encode()
    outcome = process_fhir(twice, name="t.ndjson", origin="file:t")
    assert len(outcome.events) == 3
    assert placed(outcome.rejected) == [("line 2", "fhir_duplicate")] * 3
    assert "already at line 1 (the same content)" in outcome.rejected[0].rejection.detail
    dlq = [orjson.loads(v) for t, _, v in outcome.records() if t == DLQ]
    assert len({d["dlq_id"] for d in dlq}) == 3


def test_reasons_never_echo_free_text_from_the_resource() -> None:
    """A name in a code, an amount, an account, a type or an element name stays out of the
    reasons (and so out of the console and `rcmflow dlq list`)."""
    name = "Chalmers"
    detail = {"type": {"coding": [{"code": name}]}, "request": {"reference": "Account/A"},
              "amount": {"value": 1, "currency": "USD"}}
    docs = [
        {"resourceType": "Patient", "id": "p", "birthDate": name},
        {"resourceType": "Patient", "id": "p", name: 1},
        {"resourceType": name},
        {"resourceType": "ChargeItem", "id": "c", "status": name, "code": {"text": "x"},
         "subject": {"reference": "Patient/x"}},
        {"resourceType": "ChargeItem", "id": "c", "status": "billable", "code": {"text": "x"},
         "subject": {"reference": "Patient/x"},
         "account": [{"identifier": {"system": "urn:rcmflow:account", "value": f"{name} P"}}]},
        {"resourceType": "ChargeItem", "id": "c", "status": "billable", "code": {"text": "x"},
         "subject": {"reference": "Patient/x"}, "account": [{"reference": "Account/A"}],
         "priceOverride": {"value": 1, "currency": name}},
        {"resourceType": "PaymentReconciliation", "id": "r", "status": "active",
         "created": "2026-01-01", "paymentDate": "2026-01-01",
         "paymentAmount": {"value": 1, "currency": "USD"}, "detail": [detail]},
        {"resourceType": "Bundle", "type": name, "entry": []},
    ]
    text = "\n".join(json.dumps(d) for d in docs)
    outcome = _run(text.encode(), "phi.ndjson")
    assert outcome.resources == len(docs) and len(outcome.rejected) == len(docs)
    for r in outcome.rejected:
        assert name not in r.rejection.detail and name not in str(r.resource_type), r
    dlq = [orjson.loads(v) for t, _, v in outcome.records() if t == DLQ]
    assert all(name not in d["reason"] and name not in json.dumps(d["context"]) for d in dlq)


def test_applied_resources_state_their_amounts_on_rcm_raw_fhir() -> None:
    """source_totals read priceOverride and each applied detail's amount from the resource,
    each attributed to its event; the refused detail (the advance) and a refused resource
    state nothing."""
    charge = _load("r4_chargeitem-example.json")
    charge["priceOverride"]["currency"] = "USD"
    voided = copy.deepcopy(charge) | {"status": "entered-in-error"}
    payment = _patient_reconciliation()
    payment["paymentAmount"]["value"] = 6000
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": charge}, {"resource": voided}, {"resource": payment},
        {"resource": _load("r4_chargeitem-example.json")}]}  # in EUR: refused
    raw = [orjson.loads(v) for t, _, v in _run(bundle).records() if t == RAW_FHIR]
    amounts = [r.get("source_totals", {}).get("amounts") for r in raw]
    # one amount per event (a ChargeItem, a PaymentReconciliation detail), labelled with it
    assert [[a.pop("event") for a in x] for x in amounts[:3]] == [
        [e for _, e in r["source_totals"]["events"]] for r in raw[:3]]
    assert [(r["status"], x) for r, x in zip(raw, amounts, strict=True)] == [
        ("applied", [{"account": "example", "day": "2017-01-25", "measure": "charges",
                      "cents": 4000}]),
        ("applied", [{"account": "example", "day": "2017-01-25", "measure": "charges",
                      "cents": -4000}]),
        ("partly", [{"account": "A1001", "day": "2014-08-16", "measure": "payments",
                     "cents": 350000},
                    {"account": "A1001", "day": "2014-08-12", "measure": "payments",
                     "cents": 400000}]),
        ("rejected", None)]
    assert [len(r["source_totals"]["events"]) for r in raw[:3]] == [1, 1, 2]
