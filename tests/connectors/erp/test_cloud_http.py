"""Money on the cloud ERP wire: cents -> JSON decimal literals -> cents, exact, never float."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rcmflow.connectors.erp.cloud_http import check, dumps, loads
from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError
from rcmflow.streams.money import AMOUNT_CENTS_MAX, cents_decimal, number_cents

CENTS = st.integers(min_value=-AMOUNT_CENTS_MAX, max_value=AMOUNT_CENTS_MAX)


@given(CENTS)
def test_cents_to_erp_decimal_and_back_is_exact(cents: int) -> None:
    value = cents_decimal(cents)
    assert value.as_tuple().exponent == -2
    assert number_cents(value) == cents
    # through the wire format: a JSON number literal, read back as Decimal, never a float
    wire = dumps({"debit": value, "lines": [value]})
    parsed = loads(wire)
    assert isinstance(parsed["debit"], Decimal)
    assert number_cents(parsed["debit"]) == number_cents(parsed["lines"][0]) == cents
    # a standard JSON reader sees the same digits
    assert json.loads(wire, parse_float=str)["debit"] == format(value, "f")


def test_float_is_refused_on_the_wire() -> None:
    with pytest.raises(TypeError):
        dumps({"debit": 12.5})


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
