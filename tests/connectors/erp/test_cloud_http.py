"""Money on the cloud ERP wire: cents -> JSON decimal literals -> cents, exact, never float."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rcmflow.connectors.erp.base import AdapterConfigError, TransientError
from rcmflow.connectors.erp.cloud_http import cents_decimal, check, decimal_cents, dumps, loads

CENTS = st.integers(min_value=-(10**15), max_value=10**15)


@given(CENTS)
def test_cents_to_erp_decimal_and_back_is_exact(cents: int) -> None:
    value = cents_decimal(cents)
    assert value.as_tuple().exponent == -2
    assert decimal_cents(value) == cents
    # through the wire format: a JSON number literal, read back as Decimal, never a float
    wire = dumps({"debit": value, "lines": [value]})
    parsed = loads(wire)
    assert isinstance(parsed["debit"], Decimal)
    assert decimal_cents(parsed["debit"]) == decimal_cents(parsed["lines"][0]) == cents
    # a standard JSON reader sees the same digits
    assert json.loads(wire, parse_float=str)["debit"] == format(value, "f")


@given(CENTS)
def test_erp_strings_and_short_decimals_read_exactly(cents: int) -> None:
    text = format(cents_decimal(cents), "f")
    assert decimal_cents(text) == cents
    assert decimal_cents(Decimal(text).normalize()) == cents  # "12.5", "1E+2" forms


@pytest.mark.parametrize("bad", ["1.005", "0.001", "NaN", "Infinity", "abc"])
def test_fractions_of_a_cent_and_junk_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        decimal_cents(bad)


def test_float_is_refused_both_ways() -> None:
    with pytest.raises(TypeError):
        dumps({"debit": 12.5})
    with pytest.raises(TypeError):
        decimal_cents(12.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "error"), [
    (500, TransientError), (502, TransientError), (503, TransientError), (504, TransientError),
    (408, TransientError), (429, TransientError), (401, AdapterConfigError),
    (403, AdapterConfigError)])
def test_status_sorting(status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        check(httpx.Response(status, text="x"), "test")


@pytest.mark.parametrize("status", [200, 204, 400, 404, 409, 417, 422])
def test_statuses_left_to_the_adapter(status: int) -> None:
    assert check(httpx.Response(status, text="x"), "test").status_code == status
