"""Exact HL7 money, quantities and timestamps: no float, no rounding, precise refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rcmflow.connectors.inbound.hl7.values import (
    ValueProblem,
    parse_cents,
    parse_quantity,
    parse_timestamp,
)


@given(st.integers(min_value=-10**13, max_value=10**13),
       st.sampled_from(["{}", "+{}", "{}0", "{}000"]))
def test_any_amount_in_cents_reads_back_exactly(cents: int, shape: str) -> None:
    text = f"{Decimal(cents) / 100:.2f}"
    if text.startswith("-"):
        shape = shape.replace("+", "")
    assert parse_cents(shape.format(text)) == cents


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=9))
def test_fractions_of_a_cent_are_refused_not_rounded(cents: int, extra: int) -> None:
    with pytest.raises(ValueProblem, match="fractions of a cent"):
        parse_cents(f"{cents // 100}.{cents % 100:02d}{extra}")


@pytest.mark.parametrize("text, cents", [
    ("100", 10000), ("100.5", 10050), ("0.01", 1), (".5", 50), ("-12.34", -1234),
    ("  7.00 ", 700), ("00012", 1200), ("1.", 100),
])
def test_amount_shapes_real_feeds_send(text: str, cents: int) -> None:
    assert parse_cents(text) == cents


@pytest.mark.parametrize("text", ["", "1,000.00", "$5", "1e3", "12.3.4", "abc", "NaN",
                                  "Infinity", "1" * 25, "- 5"])
def test_non_numbers_are_refused_with_the_field_name(text: str) -> None:
    with pytest.raises(ValueProblem, match="FT1-11"):
        parse_cents(text, "FT1-11")


@pytest.mark.parametrize("text, units", [("", 1), ("2", 2), ("2.0", 2), ("-1", -1)])
def test_quantities(text: str, units: int) -> None:
    assert parse_quantity(text) == units


def test_fractional_quantity_is_refused() -> None:
    with pytest.raises(ValueProblem, match="whole number"):
        parse_quantity("2.5")


@pytest.mark.parametrize("text, expected", [
    ("20191122", datetime(2019, 11, 22, tzinfo=UTC)),
    ("202108181126+0215", datetime(2021, 8, 18, 11, 26,
                                   tzinfo=timezone(timedelta(hours=2, minutes=15)))),
    ("20210817151943.4+0200", datetime(2021, 8, 17, 15, 19, 43, 400_000,
                                       tzinfo=timezone(timedelta(hours=2)))),
    ("20201231145045", datetime(2020, 12, 31, 14, 50, 45, tzinfo=UTC)),
    ("2019-0500", datetime(2019, 1, 1, tzinfo=timezone(-timedelta(hours=5)))),
])
def test_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["20191322", "2019112", "yesterday", "20191122T1000"])
def test_bad_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueProblem):
        parse_timestamp(text)
