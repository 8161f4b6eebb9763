"""An amount posted to suspense for an unmapped dimension moves to the mapped GL account once
the chart has the mapping: a balanced delta, no bucket moves, applied once however often it
is sent (the work queue's `dlq replay` / `resolve` of an ``unmapped_dimension`` item)."""

from __future__ import annotations

import json
from pathlib import Path

from rcmflow.ops.items import replay_plan
from rcmflow.streams.chart import load_chart
from rcmflow.streams.core import Applied
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import DLQ, EVENTS
from tests.factories import charge, parse
from tests.streams.accounts import AccountView

SHIPPED = load_chart()


def fixed_chart(tmp_path: Path) -> Path:
    """The shipped chart with revenue codes 099x mapped to the lab."""
    text = (Path(__file__).resolve().parents[2] / "streams" / "chart_of_accounts.yaml"
            ).read_text()
    path = tmp_path / "chart.yaml"
    path.write_text(text.replace('  "030": LAB\n', '  "030": LAB\n  "099": LAB\n'))
    return path


def test_a_reclassification_moves_the_suspense_line_to_the_mapped_account_once(
        tmp_path: Path) -> None:
    # The charge posts its revenue to suspense: revenue code 0999 has no department.
    account = AccountView.new("R1")
    charged, account = account.applied(parse(charge(5_000, "R1", revenue_code="0999",
                                                    event_id="R1-CH")), SHIPPED)
    assert isinstance(charged, Applied) and charged.delta is not None
    [line] = charged.unmapped
    assert (line.gl_account, line.amount_cents, line.role, line.bucket) == (
        "2900", -5_000, "gross_revenue", "gross_charges")
    item = dlq_record(
        Rejection(stage="posting", reason_code="unmapped_dimension", severity="warning",
                  detail="no GL account"),
        origin=Origin(topic=EVENTS, partition=0, offset=0, key="R1"),
        payload=line.model_dump_json().encode(),
        received_at=parse(charge(1, "R1")).occurred_at,
        context={"account": "R1", "event_id": "R1-CH", "entity": "01"},
    ).model_dump(mode="json")
    plan = replay_plan(item, DLQ, app_id="rcmflow")
    assert plan.topic == EVENTS and plan.key == b"R1"
    assert plan.event_id == f"reclass:{item['dlq_id']}"
    event = parse(json.loads(plan.value))

    # Still unmapped: refused, nothing moves.
    refused, _ = account.applied(event, SHIPPED)
    assert isinstance(refused, Rejection) and refused.reason_code == "still_unmapped"

    # The chart fixed: Dr suspense / Cr the lab's revenue, balances unchanged.
    fixed = load_chart(fixed_chart(tmp_path))
    before = account.balances
    moved, after = account.applied(event, fixed)
    assert isinstance(moved, Applied) and moved.delta is not None
    delta = PostingDelta.model_validate_json(moved.delta)
    assert [(ln.gl_account, ln.debit_cents, ln.credit_cents) for ln in delta.lines] == [
        ("4010-LAB", 0, 5_000), ("2900", 5_000, 0)]
    assert moved.unmapped == ()
    assert after.balances == before and after.version == account.version + 1

    # Through the worker's processor: the charge under the shipped chart, the
    # reclassification under the fixed one, then sent again (a second replay, a resolve).
    tables = MemoryTables()
    raw_charge = json.dumps(charge(5_000, "R1", revenue_code="0999", event_id="R1-CH"))
    tables.write(Processor(SHIPPED).process(
        [Message(EVENTS, 0, 0, b"R1", raw_charge.encode())], tables))
    processor = Processor(fixed)
    once = processor.process([Message(EVENTS, 0, 1, b"R1", plan.value, retry=True)], tables)
    tables.write(once)
    twice = processor.process([Message(EVENTS, 0, 2, b"R1", plan.value, retry=True)], tables)
    assert (once.counts.applied, len(once.postings)) == (1, 1)
    assert (twice.counts.replays, twice.postings) == (1, [])
