"""Denial items in the pure core: made by the 835 that denies, moved by what follows.

Run through the worker's own ``Processor`` over in-memory tables (dedup included), as
``test_refunds.py`` does.
"""

from __future__ import annotations

import json
from typing import Any

from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Processor
from tests.factories import adjudication, charge, event_doc, messages


class Ledger:
    def __init__(self) -> None:
        self.tables = MemoryTables()
        self.processor = Processor(load_chart())
        self.offset = 0
        self.postings = 0
        self.refused: list[str] = []

    def feed(self, *docs: dict[str, Any]) -> None:
        result = self.processor.process(messages(list(docs), first_offset=self.offset),
                                        self.tables)
        self.offset += len(docs)
        self.tables.write(result)
        self.postings += len(result.postings)
        self.refused += [json.loads(v)["reason_code"] for _, _, v in result.dlq]

    def denials(self, account: str = "A1") -> dict[str, dict[str, Any]]:
        return {d["denial_id"]: d for d in self.tables.views()[account]["denials"]}

    def head(self, account: str = "A1") -> dict[str, Any]:
        return self.tables.views()[account]


PAYER = {"entity": "01", "payer": "ACME", "payer_class": "COMMERCIAL", "claim_id": "C1"}


def denied(event_id: str = "D1", **fields: Any) -> dict[str, Any]:
    return adjudication(50_000, 0, [("CO", "16", 50_000)], outcome="denied",
                        status_code="4", event_id=event_id, dimensions=PAYER,
                        remark_codes=["N14"], **fields)


def paid(event_id: str = "P1", cents: int = 40_000) -> dict[str, Any]:
    return adjudication(50_000, cents, [("CO", "45", 50_000 - cents)], event_id=event_id,
                        dimensions=PAYER, occurred_at="2026-12-20T10:00:00-05:00")


def appeal(event_id: str = "AP1", claim_id: str = "C1") -> dict[str, Any]:
    return event_doc("workflow_step", step="appeal_initiated", claim_id=claim_id,
                     event_id=event_id, occurred_at="2026-12-01T10:00:00-05:00")


def test_a_denied_claim_is_an_open_denial_with_its_codes() -> None:
    ledger = Ledger()
    ledger.feed(charge(50_000), denied())
    (item,) = ledger.denials().values()
    assert (item["denial_id"], item["state"], item["amount_cents"], item["carcs"],
            item["rarcs"], item["payer"], item["entity"], item["line_id"]) == (
        "C1", "open", 50_000, ["CO-16"], ["N14"], "ACME", "01", None)
    assert ledger.head()["items"]["denial"] == 1


def test_an_appeal_then_payment_overturns_it_and_posting_is_unchanged() -> None:
    plain, appealed = Ledger(), Ledger()
    plain.feed(charge(50_000, event_id="CH"), denied(), paid())
    appealed.feed(charge(50_000, event_id="CH"), denied(), appeal(), paid())
    item = appealed.denials()["C1"]
    assert (item["state"], item["paid_cents"]) == ("overturned", 40_000)
    assert [s["state"] for s in item["steps"]] == ["open", "appealed", "overturned"]
    assert item["appealed_at"] is not None and item["resolved_at"] is not None
    # Paid without an appeal: resolved, not overturned. Both post the same money.
    assert plain.denials()["C1"]["state"] == "resolved"
    assert plain.head()["balances"] == appealed.head()["balances"]
    assert plain.postings == appealed.postings == 2


def test_denied_again_after_an_appeal_is_upheld_then_written_off() -> None:
    ledger = Ledger()
    ledger.feed(charge(50_000), denied(), appeal(), denied("D2"))
    assert ledger.denials()["C1"]["state"] == "upheld"
    ledger.feed(event_doc("write_off", amount_cents=50_000, reason="denial",
                          dimensions={"entity": "01", "claim_id": "C1"}))
    item = ledger.denials()["C1"]
    assert (item["state"], item["written_off_cents"]) == ("written_off", 50_000)
    assert ledger.head()["items"]["denial"] == 1


def test_a_line_denied_in_a_paid_claim_is_a_line_denial() -> None:
    ledger = Ledger()
    lines = [
        {"line_id": "1", "charge_cents": 30_000, "paid_cents": 30_000, "adjustments": []},
        {"line_id": "2", "charge_cents": 20_000, "paid_cents": 0, "procedure_code": "97110",
         "adjustments": [{"group": "CO", "reason": "197", "amount_cents": 20_000}],
         "remark_codes": ["N386"]},
        # Paid nothing by the contract: not a denial.
        {"line_id": "3", "charge_cents": 5_000, "paid_cents": 0,
         "adjustments": [{"group": "CO", "reason": "45", "amount_cents": 5_000}]},
    ]
    ledger.feed(charge(55_000), adjudication(55_000, 30_000, [], lines=lines,
                                             dimensions=PAYER, event_id="P1"))
    denials = ledger.denials()
    assert list(denials) == ["C1/2"]
    line = denials["C1/2"]
    assert (line["claim_id"], line["line_id"], line["amount_cents"], line["carcs"],
            line["rarcs"], line["procedure_code"]) == ("C1", "2", 20_000, ["CO-197"],
                                                       ["N386"], "97110")
    # The appeal names the line; a later 835 pays it: overturned.
    ledger.feed(appeal(claim_id="C1/2"))
    repaid = [dict(ln, paid_cents=ln["charge_cents"], adjustments=[]) for ln in lines[:2]]
    ledger.feed(adjudication(50_000, 50_000, [], lines=repaid, dimensions=PAYER,
                             event_id="P2"))
    assert ledger.denials()["C1/2"]["state"] == "overturned"


def test_a_reversal_and_readjudication_move_the_item_never_duplicate_it() -> None:
    ledger = Ledger()
    ledger.feed(charge(50_000), denied())
    reversal = adjudication(-50_000, 0, [("CO", "16", -50_000)], outcome="reversal",
                            status_code="22", event_id="R1", dimensions=PAYER)
    ledger.feed(reversal, paid("P2"))
    (item,) = ledger.denials().values()
    assert item["state"] == "resolved"
    assert [(s["event_id"], s["state"]) for s in item["steps"]] == [
        ("D1", "open"), ("R1", "open"), ("P2", "resolved")]
    assert ledger.head()["items"]["denial"] == 1


def test_replays_and_steps_that_name_no_denial_change_nothing() -> None:
    ledger = Ledger()
    ledger.feed(charge(50_000, event_id="CH"), denied(), appeal())
    before = ledger.tables.views()
    ledger.feed(denied(), appeal())  # the same events again: replays
    assert ledger.tables.views() == before
    ledger.feed(appeal("AP2"))  # appealed already: the item does not move
    assert ledger.denials()["C1"]["steps"] == before["A1"]["denials"][0]["steps"]
    other = Ledger()
    other.feed(charge(50_000), appeal(claim_id="C9"), paid())
    assert other.denials() == {} and other.head()["items"]["denial"] == 0
