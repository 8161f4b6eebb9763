"""FHIR Money read from the JSON text exactly: any spelling of a whole-cent amount is that
many cents; a fraction of a cent, a foreign or missing currency, a string or a huge value is
refused, never rounded."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rcmflow.connectors.inbound.fhir import FhirValueError, money_cents, process_fhir, read_json
from rcmflow.connectors.inbound.fhir.values import account_from_reference, dumps
from rcmflow.streams.events import AMOUNT_CENTS_MAX

USD = frozenset({"USD"})
CENTS = st.integers(min_value=-AMOUNT_CENTS_MAX, max_value=AMOUNT_CENTS_MAX)


def _spellings(cents: int, zeros: int, exponent: int) -> list[str]:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    out = [f"{sign}{whole}.{part:02d}" + "0" * zeros,
           # scientific: the digits of the cents with the point moved by an exponent
           f"{sign}{abs(cents)}E-2", f"{sign}{abs(cents)}e{-2 + 0}",
           f"{sign}{abs(cents) * 10**exponent}E-{2 + exponent}"]
    if part == 0:
        out.append(f"{sign}{whole}")  # a JSON integer
    return out


def _read(text: str) -> int:
    doc = read_json('{"value": ' + text + ', "currency": "USD"}')
    return money_cents(doc, where="m", currencies=USD)[0]


@given(cents=CENTS, zeros=st.integers(0, 20), exponent=st.integers(0, 30))
def test_every_spelling_of_whole_cents_is_exact(cents: int, zeros: int, exponent: int) -> None:
    for text in _spellings(cents, zeros, exponent):
        assert _read(text) == cents, text


@given(cents=CENTS, tail=st.integers(1, 9), more=st.integers(0, 40))
def test_a_fraction_of_a_cent_is_refused_even_past_28_digits(cents: int, tail: int,
                                                              more: int) -> None:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    text = f"{sign}{whole}.{part:02d}" + "0" * more + str(tail)
    with pytest.raises(FhirValueError, match="fraction of a cent") as caught:
        _read(text)
    assert caught.value.code == "fhir_invalid_amount"


@given(cents=st.integers(min_value=AMOUNT_CENTS_MAX + 1, max_value=10**40),
       negative=st.booleans())
def test_amounts_past_the_limit_are_refused(cents: int, negative: bool) -> None:
    sign = "-" if negative else ""
    for text in (f"{sign}{cents // 100}.{cents % 100:02d}", f"{sign}{cents}E-2"):
        with pytest.raises(FhirValueError, match="out of range"):
            _read(text)


@pytest.mark.parametrize("value", ['"12.00"', "true", "null", "[1]", "1e999999999",
                                   "-1E+400", "1E-999999999"])
def test_values_that_are_not_money(value: str) -> None:
    with pytest.raises(FhirValueError):
        _read(value)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_are_not_numbers(constant: str) -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        read_json('{"value": ' + constant + "}")


@pytest.mark.parametrize("money,code", [
    ({"value": 10}, "fhir_currency"),
    ({"value": 10, "currency": "EUR"}, "fhir_currency"),
    ({"value": 10, "currency": "usd"}, "fhir_currency"),
    ({"currency": "USD"}, "fhir_invalid_amount"),
    (None, "fhir_invalid_amount"),
])
def test_currency_and_value_are_required(money: object, code: str) -> None:
    with pytest.raises(FhirValueError) as caught:
        money_cents(money, where="m", currencies=USD)
    assert caught.value.code == code


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


@given(cents=st.integers(min_value=1, max_value=AMOUNT_CENTS_MAX), zeros=st.integers(0, 5))
def test_a_charge_item_carries_exactly_its_price(cents: int, zeros: int) -> None:
    price = f"{cents // 100}.{cents % 100:02d}" + "0" * zeros
    text = ('{"resourceType":"ChargeItem","id":"c1","status":"billable",'
            '"code":{"text":"x"},"subject":{"reference":"Patient/p"},'
            '"account":[{"reference":"Account/A1"}],"occurrenceDateTime":"2026-01-02",'
            '"priceOverride":{"value":' + price + ',"currency":"USD"}}')
    outcome = process_fhir(text.encode(), name="c.json", origin="file:c")
    assert not outcome.rejected
    assert outcome.events[0][1].amount_cents == cents


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
