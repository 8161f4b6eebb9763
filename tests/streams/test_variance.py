"""Contract variance: fee schedule lookups, and the worker's variance records for 835 claims.

Pure: the schedule on its own, then claims through the worker's own ``Processor`` over
in-memory tables (dedup included), as in ``test_refunds.py``. The schedule: TEST PAYER pays
99213 at 95.00 a unit and revenue code 0450 at 62.5 % of charge; the COMMERCIAL class
pays 99213 at 90.00 and 80053 at 40.00; an entity 02 schedule for TEST PAYER pays 99213 at
97.00.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rcmflow.connectors.inbound.x12.reader import read_x12
from rcmflow.connectors.inbound.x12.remit import parse_835, remit_events
from rcmflow.streams.chart import load_chart
from rcmflow.streams.events import AdjudicatedLine
from rcmflow.streams.exceptions import FeeScheduleError
from rcmflow.streams.fee_schedule import FeeSchedule, load_fee_schedule
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Processor
from tests.connectors.inbound.x12.x12_build import ClaimSpec, LineSpec, envelope, remit_segments
from tests.factories import event_doc, messages

SCHEDULE: dict[str, Any] = {
    "version": "test-1",
    "schedules": [
        {"name": "test-payer-2026", "payer": "TEST PAYER", "effective_from": "2026-01-01",
         "effective_to": "2026-12-31",
         "procedures": {"99213": {"amount_cents": 9500}},
         "revenue_codes": {"0450": {"percent_of_charge": "62.5"}}},
        {"name": "test-payer-2027", "payer": "TEST PAYER", "effective_from": "2027-01-01",
         "procedures": {"99213": {"amount_cents": 9900}}},
        {"name": "test-payer-02", "payer": "TEST PAYER", "entity": "02",
         "effective_from": "2026-01-01", "procedures": {"99213": {"amount_cents": 9700}}},
        {"name": "commercial", "payer_class": "COMMERCIAL", "effective_from": "2020-01-01",
         "procedures": {"99213": {"amount_cents": 9000}, "80053": {"amount_cents": 4000}}},
    ],
}
FEES = FeeSchedule.model_validate(SCHEDULE)


def _price(code: str | None, *, payer: str | None = "TEST PAYER", entity: str = "01",
           day: date = date(2026, 6, 1), revenue: str | None = None, charge: int = 20_000,
           units: int = 1) -> tuple[int, str] | None:
    schedules = FEES.in_effect(payer=payer, payer_class="COMMERCIAL", entity=entity, day=day)
    price = FEES.price(schedules, procedure_code=code, revenue_code=revenue,
                       charge_cents=charge, units=units)
    return None if price is None else (price.expected_cents, price.schedule)


def test_the_payer_s_own_schedule_comes_before_its_class_and_an_entity_s_before_the_default(
) -> None:
    assert _price("99213") == (9500, "test-payer-2026")
    assert _price("99213", entity="02") == (9700, "test-payer-02")
    assert _price("99213", payer="OTHER PAYER") == (9000, "commercial")
    # A code the payer's schedule lacks falls through to its class's.
    assert _price("80053") == (4000, "commercial")
    assert _price("99213", units=3) == (28_500, "test-payer-2026")


def test_rates_are_in_effect_between_their_dates_both_inclusive() -> None:
    assert _price("99213", day=date(2026, 12, 31)) == (9500, "test-payer-2026")
    assert _price("99213", day=date(2027, 1, 1)) == (9900, "test-payer-2027")
    assert _price("99213", day=date(2019, 12, 31), payer="OTHER PAYER") is None


def test_a_percent_of_charge_is_exact_and_rounded_half_up_to_the_cent() -> None:
    assert _price(None, revenue="0450", charge=10_001) == (6251, "test-payer-2026")  # 6250.625
    assert _price(None, revenue="0450", charge=10_000) == (6250, "test-payer-2026")
    assert _price(None, revenue="0450", charge=2) == (1, "test-payer-2026")  # 1.25
    assert _price("99999") is None


@pytest.mark.parametrize("change, complaint", [
    ({"percent_of_charge": 62.5}, "never a float"),
    ({"amount_cents": 100, "percent_of_charge": "5"}, "exactly one"),
])
def test_a_rate_that_is_not_exact_or_not_one_basis_is_refused(change: dict[str, Any],
                                                               complaint: str) -> None:
    doc = json.loads(json.dumps(SCHEDULE))
    doc["schedules"][0]["procedures"]["99213"] = change
    with pytest.raises(ValueError, match=complaint):
        FeeSchedule.model_validate(doc)


def test_overlapping_schedules_for_one_payer_and_entity_are_refused(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(SCHEDULE))
    doc["schedules"][1]["effective_from"] = "2026-12-31"
    path = tmp_path / "fees.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    with pytest.raises(FeeScheduleError, match="overlap in dates"):
        load_fee_schedule(path)


def test_the_shipped_example_loads() -> None:
    assert load_fee_schedule().schedules


class Ledger:
    def __init__(self, fees: FeeSchedule | None = FEES, tolerance_cents: int = 100) -> None:
        self.tables = MemoryTables()
        self.processor = Processor(load_chart(), fee_schedule=fees,
                                   variance_tolerance_cents=tolerance_cents)
        self.offset = 0
        self.records: list[dict[str, Any]] = []
        self.postings: list[bytes] = []

    def feed(self, *docs: dict[str, Any]) -> None:
        result = self.processor.process(messages(list(docs), first_offset=self.offset),
                                        self.tables)
        self.offset += len(docs)
        self.tables.write(result)
        self.records += [json.loads(v) for _, _, v in result.dlq]
        self.postings += [v for _, _, v in result.postings]

    def contract(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["stage"] == "contract"]


def claim(lines: list[dict[str, Any]], *, entity: str = "01", outcome: str = "processed",
          payer: str = "TEST PAYER", event_id: str = "ERA1:A1", **fields: Any) -> dict[str, Any]:
    charge = sum(line["charge_cents"] for line in lines)
    paid = sum(line["paid_cents"] for line in lines)
    return event_doc("claim_adjudicated", event_id=event_id, claim_id="A1", outcome=outcome,
                     charge_cents=charge, paid_cents=paid, lines=lines,
                     occurred_at="2026-11-20T00:00:00+00:00",
                     dimensions={"entity": entity, "payer": payer,
                                 "payer_class": "COMMERCIAL", "claim_id": "A1"}, **fields)


def line(line_id: str, code: str | None, charge: int, paid: int, co: int, pr: int,
         **fields: Any) -> dict[str, Any]:
    adjustments = [{"group": g, "reason": r, "amount_cents": c}
                   for g, r, c in (("CO", "45", co), ("PR", "1", pr)) if c]
    return {"line_id": line_id, "procedure_code": code, "charge_cents": charge,
            "paid_cents": paid, "adjustments": adjustments, **fields}


def test_a_known_underpayment_is_exactly_one_variance_with_its_numbers() -> None:
    ledger = Ledger()
    # 99213 expected 95.00: allowed 80.00 paid + 5.00 PR = 85.00, underpaid by 10.00.
    # 99214 is priced by nobody: counted unpriced, not a variance.
    ledger.feed(claim([line("1", "99213", 15_000, 8000, 6500, 500),
                       line("2", "99214", 20_000, 12_000, 8000, 0)]))
    (variance, unpriced) = ledger.contract()
    assert (variance["reason_code"], variance["severity"]) == ("underpaid", "warning")
    ctx = variance["context"]
    assert (ctx["payer"], ctx["claim_id"], ctx["line_id"], ctx["procedure_code"]) == (
        "TEST PAYER", "A1", "1", "99213")
    assert (ctx["expected_cents"], ctx["allowed_cents"], ctx["line_paid_cents"],
            ctx["difference_cents"], ctx["schedule_version"]) == (9500, 8500, 8000, -1000,
                                                                   "test-1")
    assert json.loads(variance["payload"])["allowed_from"] == "paid+PR"
    assert unpriced["reason_code"] == "unpriced"
    assert unpriced["context"]["unpriced_lines"] == 1
    assert unpriced["context"]["lines"][0]["procedure_code"] == "99214"


def test_a_correct_payment_and_one_within_the_tolerance_make_none() -> None:
    ledger = Ledger(tolerance_cents=100)
    ledger.feed(claim([line("1", "99213", 15_000, 9000, 5500, 500)]),  # allowed 95.00
                claim([line("1", "99213", 15_000, 8900, 5600, 500)], event_id="ERA2:A1"))
    assert ledger.contract() == []
    strict = Ledger(tolerance_cents=0)
    strict.feed(claim([line("1", "99213", 15_000, 8999, 5501, 500)]))
    assert [r["context"]["difference_cents"] for r in strict.contract()] == [-1]


def test_an_overpayment_is_a_variance_too() -> None:
    ledger = Ledger()
    ledger.feed(claim([line("1", "99213", 15_000, 10_000, 5000, 0)], entity="02"))
    (record,) = ledger.contract()
    assert (record["reason_code"], record["context"]["expected_cents"],
            record["context"]["difference_cents"]) == ("overpaid", 9700, 300)


def test_the_payer_s_stated_allowed_amount_wins_over_paid_plus_pr() -> None:
    ledger = Ledger()
    # AMT*B6 95.00: a CO-253 sequestration cut the payment, the contract was kept.
    ledger.feed(claim([line("1", "99213", 15_000, 9310, 5690, 0, allowed_cents=9500)]))
    assert ledger.contract() == []


def test_a_claim_without_lines_is_compared_as_a_whole_by_its_codes() -> None:
    ledger = Ledger()
    doc = claim([line("1", "99213", 15_000, 8000, 6500, 500)])
    doc["adjustments"] = doc["lines"][0]["adjustments"]
    doc["lines"] = []
    doc["dimensions"]["procedure_code"] = "99213"
    ledger.feed(doc)
    (record,) = ledger.contract()
    assert record["context"]["line_id"] is None
    assert record["context"]["difference_cents"] == -1000


def test_reversals_denials_uncontracted_payers_and_no_schedule_make_no_records() -> None:
    ledger = Ledger()
    reversal = claim([line("1", "99213", -15_000, -8000, -6500, -500)], outcome="reversal",
                     status_code="22")
    other = claim([line("1", "99213", 15_000, 1000, 14_000, 0)], payer="NOBODY",
                  event_id="ERA3:A1")
    other["dimensions"]["payer_class"] = "MEDICAID"
    ledger.feed(reversal, other,
                claim([line("1", "99213", 15_000, 0, 15_000, 0)], outcome="denied",
                      event_id="ERA4:A1"))
    assert ledger.contract() == []
    off = Ledger(fees=None)
    off.feed(claim([line("1", "99213", 15_000, 8000, 6500, 500)]))
    assert off.records == []


def test_a_replay_makes_nothing_new_and_the_postings_do_not_change() -> None:
    ledger, plain = Ledger(), Ledger(fees=None)
    doc = claim([line("1", "99213", 15_000, 8000, 6500, 500)])
    ledger.feed(doc)
    plain.feed(doc)
    assert len(ledger.contract()) == 1
    assert ledger.postings == plain.postings
    ledger.feed(doc)
    assert len(ledger.records) == 1 and len(ledger.postings) == 1


def test_a_redelivered_claim_sends_its_variance_under_the_same_id() -> None:
    first, second = Ledger(), Ledger()
    doc = claim([line("1", "99213", 15_000, 8000, 6500, 500)])
    first.feed(doc)
    second.offset = 7  # read at another offset: the same item
    second.feed(doc)
    assert first.contract()[0]["dlq_id"] == second.contract()[0]["dlq_id"]


def test_a_line_without_the_new_fields_serialises_as_before() -> None:
    plain = AdjudicatedLine(line_id="1", charge_cents=100, paid_cents=100)
    assert set(json.loads(plain.model_dump_json())) == {
        "line_id", "charge_cents", "paid_cents", "procedure_code", "adjustments"}


def test_the_835_reader_carries_allowed_amount_units_and_service_date() -> None:
    segs = remit_segments([ClaimSpec("A1", 15_000, 8000, lines=[
        LineSpec("99213", 15_000, 8000, [("CO", "45", 6500), ("PR", "1", 500)])])])
    at = next(i for i, s in enumerate(segs) if s[0] == "SVC")
    segs[at] = [*segs[at], "", "2"]  # SVC04 empty, SVC05 units paid
    segs[at + 1:at + 1] = [["DTM", "472", "20260214"], ["AMT", "B6", "85.00"]]
    (tset,) = read_x12(envelope(segs), segments_max=10_000).sets
    (event, ) = remit_events(parse_835(tset), entity="01")
    assert event.kind == "claim_adjudicated"
    (adjudicated,) = event.lines
    assert (adjudicated.units, adjudicated.allowed_cents, adjudicated.service_date) == (
        2, 8500, date(2026, 2, 14))
