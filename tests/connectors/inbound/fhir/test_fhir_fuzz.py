"""Fuzzing the FHIR path: mutated real samples, random JSON, random bytes, huge values.

Whatever comes in, ``process_fhir`` does not raise, every resource it read is answered (an
event, a notice or a DLQ record at its place), and every record it would publish is valid:
events parse as canonical events, DLQ records carry a reason.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcmflow.connectors.inbound.fhir import FhirOutcome, process_fhir
from rcmflow.streams.events import EVENT_ADAPTER
from rcmflow.streams.topics import DLQ, EVENTS, RAW_FHIR

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "fhir"
DOCS = [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))]
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: Money-moving shapes to mutate, beside the samples: a USD charge and a patient's payment.
CHARGE = {"resourceType": "ChargeItem", "id": "c1", "status": "billable",
          "code": {"coding": [{"system": "https://www.nubc.org/CodeSystem/RevenueCodes",
                               "code": "0450"}]},
          "subject": {"reference": "Patient/p1"}, "account": [{"reference": "Account/F1"}],
          "occurrenceDateTime": "2026-03-01T10:00:00Z", "quantity": {"value": 2},
          "priceOverride": {"value": 125.5, "currency": "USD"}}
PAYMENT = {"resourceType": "PaymentReconciliation", "id": "p1", "status": "active",
           "created": "2026-03-02", "paymentDate": "2026-03-02", "outcome": "complete",
           "paymentAmount": {"value": 30, "currency": "USD"},
           "detail": [{"type": {"coding": [{"code": "payment"}]},
                       "request": {"reference": "Account/F1"},
                       "amount": {"value": 40.0, "currency": "USD"}},
                      {"type": {"coding": [{"code": "payment"}]},
                       "request": {"reference": "Account/F1"},
                       "amount": {"value": -10, "currency": "USD"}}]}
SEEDS = DOCS + [CHARGE, PAYMENT]

#: Text with anything in it, lone surrogates too (JSON can escape them: "\ud800").
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), any_text,
                      st.decimals(allow_nan=False, allow_infinity=False, places=None))
json_values = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=20)
#: Values that keep a resource close to valid, so mutations reach the money and key rules.
plausible = st.sampled_from(["USD", "EUR", "", "Account/A1", "Account/provider:1",
                             "Patient/pat.A2", "Organization/9", "2026-01-01",
                             "2026-01-01T10:00:00", "billable", "entered-in-error", "planned",
                             "payment", "advance", "active", "cancelled", Decimal("0.005"),
                             Decimal("-3"), Decimal("1E+3"), 0, -1, 10**13, 2.5])
mutation = st.one_of(json_values, plausible)
huge = st.one_of(st.integers(min_value=10**15, max_value=10**300).map(str),
                 st.integers(min_value=1, max_value=10**6).map(lambda e: f"1E+{e}"),
                 st.integers(min_value=1, max_value=10**6).map(lambda e: f"-1E-{e}"),
                 st.just("9" * 4000), st.just("0." + "0" * 3000 + "1"))


def check(outcome: FhirOutcome) -> None:
    """The invariants: every resource answered, every record well-formed."""
    answered = ({u.location for u, _ in outcome.events} | {u.location for u, _ in outcome.notes}
                | {r.location for r in outcome.rejected if r.location != "file"})
    assert len(answered) == outcome.resources
    assert outcome.resources > 0 or outcome.rejected
    for topic, key, value in outcome.records():
        if topic == EVENTS:
            event = EVENT_ADAPTER.validate_json(value)
            assert key == event.account.encode()
        elif topic == DLQ:
            record = orjson.loads(value)
            assert record["reason_code"].startswith("fhir_") and record["reason"]
        else:
            assert topic == RAW_FHIR and key


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _without(doc: Any, path: tuple[Any, ...]) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return ({k: v for k, v in doc.items() if k != head} if not rest
                else {**doc, head: _without(doc[head], rest)})
    copied = list(doc)
    if rest:
        copied[head] = _without(doc[head], rest)
    else:
        del copied[head]
    return copied


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    copied = list(doc)
    copied[head] = _replace(doc[head], rest, value)
    return copied


@FUZZ
@given(data=st.data(), seed=st.sampled_from(SEEDS + [CHARGE, PAYMENT] * 8))
def test_mutated_resources_are_answered(data: st.DataObject, seed: dict[str, Any]) -> None:
    doc: Any = seed
    for _ in range(data.draw(st.integers(1, 2))):
        paths = _paths(doc)[1:]  # not the root: keep a resource to map most of the time
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        if data.draw(st.booleans()):
            doc = _replace(doc, path, data.draw(mutation))
        else:
            doc = _without(doc, path)
    text = json.dumps(doc, default=str)
    check(process_fhir(text.encode(), name="m.json", origin="file:m"))


@FUZZ
@given(seed=st.sampled_from([CHARGE, PAYMENT]), number=huge,
       where=st.sampled_from(["price", "detail", "quantity", "total"]))
def test_huge_and_tiny_numbers_are_answered(seed: dict[str, Any], number: str,
                                            where: str) -> None:
    marker = '"__N__"'
    doc = json.loads(json.dumps(seed))
    if seed is CHARGE:
        doc["priceOverride" if where != "quantity" else "quantity"]["value"] = "__N__"
    elif where == "total":
        doc["paymentAmount"]["value"] = "__N__"
    else:
        doc["detail"][0]["amount"]["value"] = "__N__"
    text = json.dumps(doc).replace(marker, number)
    outcome = process_fhir(text.encode(), name="h.json", origin="file:h")
    check(outcome)
    assert not outcome.events or all(abs(e.amount_cents) <= 10**12 for _, e in outcome.events)


@FUZZ
@given(entries=st.lists(st.one_of(st.sampled_from(SEEDS), json_values), max_size=6),
       kind=st.sampled_from(["batch", "transaction", "collection", "searchset", None]))
def test_bundles_of_anything_are_answered(entries: list[Any], kind: str | None) -> None:
    bundle = {"resourceType": "Bundle", "type": kind,
              "entry": [{"resource": e} if n % 3 else e for n, e in enumerate(entries)]}
    check(process_fhir(json.dumps(bundle, default=str).encode(), name="b.json",
                       origin="file:b"))


@FUZZ
@given(lines=st.lists(st.one_of(st.sampled_from(SEEDS).map(json.dumps),
                                json_values.map(lambda v: json.dumps(v, default=str)),
                                st.text(max_size=40)), max_size=8))
def test_ndjson_of_anything_is_answered(lines: list[str]) -> None:
    text = "\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines)
    check(process_fhir(text.encode(), name="x.ndjson", origin="file:x"))


@FUZZ
@given(data=st.binary(max_size=2000), name=st.sampled_from(["a.json", "a.ndjson", "a"]))
def test_random_bytes_are_answered(data: bytes, name: str) -> None:
    check(process_fhir(data, name=name, origin="file:r"))


@FUZZ
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 4000))
def test_truncated_samples_are_answered(seed: dict[str, Any], cut: int) -> None:
    text = json.dumps(seed)
    check(process_fhir(text[:cut].encode(), name="t.json", origin="file:t"))


def test_nesting_bombs_are_answered() -> None:
    for text in ("[" * 100_000,
                 '{"resourceType":"ChargeItem","code":' + "[" * 50_000 + "]" * 50_000 + "}",
                 '{"a":' * 30_000 + "1" + "}" * 30_000):
        check(process_fhir(text.encode(), name="bomb.json", origin="file:bomb"))


def test_the_money_shapes_map() -> None:
    charge = process_fhir(json.dumps(CHARGE).encode(), name="c.json", origin="file:c")
    assert [(e.kind, e.amount_cents) for _, e in charge.events] == [("charge_posted", 12550)]
    assert charge.events[0][1].quantity == 2  # type: ignore[union-attr]
    payment = process_fhir(json.dumps(PAYMENT).encode(), name="p.json", origin="file:p")
    assert [(e.kind, e.amount_cents) for _, e in payment.events] == [
        ("patient_payment", 4000), ("refund", 1000)]
