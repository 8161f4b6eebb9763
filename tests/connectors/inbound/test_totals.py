"""SourceTotals in JSON: amounts attributed to an event, and records written before that."""

from __future__ import annotations

from datetime import date

from rcmflow.connectors.inbound.totals import SourceTotals

DAY = date(2026, 3, 2)


def test_attributed_amounts_round_trip_summed_per_event() -> None:
    totals = SourceTotals(event_ids=[("A1", "e1"), ("A1", "e2")])
    totals.add("A1", DAY, "payer_paid", 9000, "e1")
    totals.add("A1", DAY, "adjusted", 4000, "e1")
    totals.add("A1", DAY, "adjusted", 500, "e1")
    totals.add("A1", DAY, "payer_paid", 7000, "e2")
    doc = totals.to_json()
    assert doc["amounts"] == [
        {"account": "A1", "day": "2026-03-02", "measure": "payer_paid", "cents": 9000,
         "event": "e1"},
        {"account": "A1", "day": "2026-03-02", "measure": "adjusted", "cents": 4500,
         "event": "e1"},
        {"account": "A1", "day": "2026-03-02", "measure": "payer_paid", "cents": 7000,
         "event": "e2"}]
    back = SourceTotals.from_json(doc)
    assert back.by_event() == totals.by_event()
    assert back.summed() == {("A1", DAY, "payer_paid"): 16000, ("A1", DAY, "adjusted"): 4500}


def test_amounts_written_without_an_event_read_as_unattributed() -> None:
    """Records on rcm.raw.* written before amounts were attributed stay readable."""
    old = {"amounts": [{"account": "A1", "day": "2026-03-02", "measure": "payer_paid",
                        "cents": 9000}], "events": [["A1", "e1"]]}
    totals = SourceTotals.from_json(old)
    assert totals.by_event() == {("A1", DAY, "payer_paid", None): 9000}
    assert totals.to_json() == old
