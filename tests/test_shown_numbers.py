"""Numbers in refusal messages are shown whole, or said to be cut (never cut silently)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rcmflow.connectors.inbound.hl7.values import ValueProblem
from rcmflow.connectors.inbound.hl7.values import parse_cents as hl7_cents
from rcmflow.connectors.inbound.payments.money import MoneyError
from rcmflow.connectors.inbound.payments.money import parse_cents as file_cents
from rcmflow.runtime.shown import SHOWN_CHARS_MAX

digits = st.text("0123456789", min_size=21, max_size=SHOWN_CHARS_MAX).filter(
    lambda t: t[0] != "0")


@given(digits)
def test_a_long_hl7_amount_is_repeated_whole(amount: str) -> None:
    with pytest.raises(ValueProblem) as refused:
        hl7_cents(amount)
    assert f"'{amount}'" in str(refused.value)
    assert "longer than the 20 characters" in str(refused.value)


@given(digits)
def test_a_long_file_amount_is_repeated_whole(amount: str) -> None:
    with pytest.raises(MoneyError) as refused:
        file_cents(amount)
    assert f"'{amount}'" in str(refused.value)


@pytest.mark.parametrize("parse", [hl7_cents, file_cents])
def test_a_value_past_the_bound_is_said_to_be_cut(parse: object) -> None:
    amount = "9" * 500
    with pytest.raises(ValueError) as refused:
        parse(amount)  # type: ignore[operator]
    message = str(refused.value)
    assert "cut; 500 characters" in message and "9" * SHOWN_CHARS_MAX in message
    assert "9" * (SHOWN_CHARS_MAX + 1) not in message
