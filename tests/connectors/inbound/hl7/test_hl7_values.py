"""Exact HL7 quantities and timestamps: no float, no rounding, precise refusals (amounts:
tests/streams/test_money.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rcmflow.connectors.inbound.exceptions import ValueProblem
from rcmflow.connectors.inbound.hl7.values import parse_quantity, parse_timestamp


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
