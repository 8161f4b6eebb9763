"""FHIR JSON read exactly (no float, no NaN), written back with its digits, and FHIR Money
refused with the FHIR reason codes. The Money rules themselves (spellings, fractions of a cent,
range, currency) are tested in tests/streams/test_money.py."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rcmflow.connectors.inbound.fhir import FhirValueError, process_fhir, read_json
from rcmflow.connectors.inbound.fhir.values import account_from_reference, dumps
from rcmflow.streams.events import AMOUNT_CENTS_MAX

USD = frozenset({"USD"})
CENTS = st.integers(min_value=-AMOUNT_CENTS_MAX, max_value=AMOUNT_CENTS_MAX)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_are_not_numbers(constant: str) -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        read_json('{"value": ' + constant + "}")


def test_no_float_reaches_a_parsed_document() -> None:
    doc = read_json('{"a": [0.1, 1e-7, 12.340], "b": {"c": 3}}')
    assert doc == {"a": [Decimal("0.1"), Decimal("1e-7"), Decimal("12.340")], "b": {"c": 3}}
    assert all(isinstance(v, Decimal) for v in doc["a"])
    # ... and a written-out entry keeps the digits as sent (the raw topic and DLQ payloads).
    assert dumps(doc) == '{"a":[0.1,1E-7,12.340],"b":{"c":3}}'


@given(text=st.text(max_size=40))
def test_a_string_cannot_fake_a_decimal_when_written_out(text: str) -> None:
    doc = {"s": text, "n": Decimal("1.10")}
    assert json.loads(dumps(doc), parse_float=Decimal) == doc


def _charge(price: str, currency: str = '"USD"') -> bytes:
    return ('{"resourceType":"ChargeItem","id":"c1","status":"billable",'
            '"code":{"text":"x"},"subject":{"reference":"Patient/p"},'
            '"account":[{"reference":"Account/A1"}],"occurrenceDateTime":"2026-01-02",'
            '"priceOverride":{"value":' + price + ',"currency":' + currency + '}}').encode()


@given(cents=st.integers(min_value=1, max_value=AMOUNT_CENTS_MAX), zeros=st.integers(0, 5))
def test_a_charge_item_carries_exactly_its_price(cents: int, zeros: int) -> None:
    price = f"{cents // 100}.{cents % 100:02d}" + "0" * zeros
    outcome = process_fhir(_charge(price), name="c.json", origin="file:c")
    assert not outcome.rejected
    assert outcome.events[0][1].amount_cents == cents


@pytest.mark.parametrize("price, currency, code, says", [
    ("12.345", '"USD"', "fhir_invalid_amount", "priceOverride.value '12.345' has a fraction"),
    ("10000000000.01", '"USD"', "fhir_invalid_amount", "out of range"),
    ('"12.00"', '"USD"', "fhir_invalid_amount", "priceOverride.value is not a JSON number"),
    ("12", '"EUR"', "fhir_currency", "priceOverride.currency 'EUR' is not a currency"),
    ("12", "null", "fhir_currency", "priceOverride.currency is missing"),
    # 0e999999999 was 0 * 10**999999999 to the old reader: the connector hung on it.
    ("0e999999999", '"USD"', "fhir_invalid_amount", "is not more than 0"),
    ("1e999999999", '"USD"', "fhir_invalid_amount", "out of range"),
])
def test_money_refusals_keep_their_fhir_reason_codes(price: str, currency: str, code: str,
                                                     says: str) -> None:
    outcome = process_fhir(_charge(price, currency), name="c.json", origin="file:c")
    assert [(r.rejection.reason_code, says in r.rejection.detail)
            for r in outcome.rejected] == [(code, True)], outcome.rejected


@pytest.mark.parametrize("ref,expected", [
    ({"reference": "Account/A1001"}, "A1001"),
    ({"reference": "https://ehr.example/fhir/Account/A1001/_history/3"}, "A1001"),
    ({"identifier": {"system": "urn:rcmflow:account", "value": "A-77"}}, "A-77"),
    ({"identifier": {"system": "urn:other", "value": "A-77"}}, None),
    ({"reference": "Patient/A1001"}, None),
    ({"reference": "#acc"}, None),
    ("Account/A1", None),
])
def test_account_references(ref: object, expected: str | None) -> None:
    assert account_from_reference(ref, systems=("urn:rcmflow:account",)) == expected


def test_an_account_number_that_cannot_be_a_key_is_refused() -> None:
    with pytest.raises(FhirValueError) as caught:
        account_from_reference({"identifier": {"system": "urn:rcmflow:account",
                                                "value": "provider:1"}},
                               systems=("urn:rcmflow:account",))
    assert caught.value.code == "fhir_no_account"
