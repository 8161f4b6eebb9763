"""837 service-line units (SV104 / SV205) read by the amount rules: what is not a plain
decimal is counted as 1 with a warning, and never stops the file."""

from __future__ import annotations

import pytest

from rcmflow.connectors.inbound.x12 import X12Limits, process_x12
from rcmflow.streams.events import ClaimSubmitted
from tests.connectors.inbound.x12.x12_build import claim_segments, envelope


@pytest.mark.parametrize("units, counted, warned", [
    ("3", 3, False), ("2.0", 2, False), ("", 1, False), ("2.5", 1, True), ("0", 1, True),
    # NaN once raised decimal.InvalidOperation out of process_x12: the whole file stopped.
    ("NaN", 1, True), ("sNaN", 1, True), ("1e2", 1, True), ("1" * 21, 1, True),
])
def test_units_that_are_not_whole_count_as_one(units: str, counted: int, warned: bool) -> None:
    segs = claim_segments([("A1", 10000, [("99213", 10000)])])
    for seg in segs:
        if seg[0] == "SV1":
            seg[4] = units
    outcome = process_x12(envelope(segs, functional_id="HC", version="005010X222A1"),
                          origin="file:t", limits=X12Limits())
    (tset,) = outcome.sets
    assert not tset.problems
    (claim,) = tset.events
    assert isinstance(claim, ClaimSubmitted)
    assert [line.units for line in claim.lines] == [counted]
    assert any(f"units {units!r} counted as 1" in w for w in tset.warnings) is warned
