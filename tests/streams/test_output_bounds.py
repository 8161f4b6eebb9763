"""Every record the worker writes fits its topic: an event whose delta would outgrow the limit
is refused with a DLQ record, an account's records stay small however many items it holds,
and DLQ payloads are cut to their bound.

Apache Kafka refuses a record over a topic's max.message.bytes; a batch holding one could
never be written, and the worker would crash on it for ever. Pure: no broker.
"""

from __future__ import annotations

import json
from typing import Any

from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables, head_records, item_records
from rcmflow.streams.processor import RECORD_OVERHEAD_BYTES, BatchResult, Message, Processor
from rcmflow.streams.topics import EVENTS
from tests.factories import charge, event_doc

CHART = load_chart()


def claim(account: str, n: int, lines: int) -> dict[str, Any]:
    """A submitted claim of ``lines`` service lines (its lines stay in the account's state)."""
    return event_doc("claim_submitted", account, event_id=f"{account}-CLM{n}",
                     claim_id=f"{account}-C{n}", total_charge_cents=100 * lines,
                     lines=[{"line_id": str(i + 1), "charge_cents": 100,
                             "procedure_code": "99213", "revenue_code": "0450"}
                            for i in range(lines)])


def messages(docs: list[dict[str, Any]], start: int = 0) -> list[Message]:
    return [Message(EVENTS, 0, start + i, d["account"].encode(), json.dumps(d).encode())
            for i, d in enumerate(docs)]


def run_batches(processor: Processor, docs: list[dict[str, Any]],
                size: int) -> tuple[MemoryTables, list[dict[str, Any]], list[BatchResult]]:
    """Apply ``docs`` in batches of ``size``, carrying the tables between them."""
    tables = MemoryTables()
    results = []
    for start in range(0, len(docs), size):
        result = processor.process(messages(docs[start:start + size], start), tables)
        tables.dedup.update(result.dedup_writes)
        tables.accounts.update({**head_records(result), **item_records(result)})
        results.append(result)
    dlq = [json.loads(v) for r in results for _, _, v in r.dlq]
    return tables, dlq, results


def test_an_accounts_records_stay_small_however_many_items_it_holds() -> None:
    processor = Processor(CHART)
    docs = [claim("A7", n, lines=40) for n in range(300)]  # ~5 KB of lines each
    tables, dlq, results = run_batches(processor, docs, 25)
    assert not dlq
    heads = [len(v) for r in results for v in head_records(r).values()]
    items = [len(v) for r in results for v in item_records(r).values()]
    # 300 claims of 40 lines (1.5 MB in one layout-1 snapshot): the head stays the size it
    # had at the first claim, and each item the size of its own claim.
    assert max(heads) - min(heads) <= 4 and max(heads) < 1_000, heads
    assert max(items) < 6_000 and len(items) == 301  # 300 claims, 1 transition (the first)
    assert tables.views()["A7"]["items"]["claim"] == 300


def test_a_delta_larger_than_rcm_postings_takes_is_refused() -> None:
    processor = Processor(CHART, output_bytes_max=RECORD_OVERHEAD_BYTES + 300)
    tables, dlq, results = run_batches(processor, [charge(10_000, "A8", event_id="CH1")], 1)
    assert "A8" not in tables.views()  # not applied: the account never existed
    assert [r["reason_code"] for r in dlq] == ["output_too_large"]
    assert not results[0].postings


def test_dlq_payloads_are_cut_to_their_bound_with_the_whole_size_said() -> None:
    processor = Processor(CHART, event_bytes_max=2048, dlq_payload_bytes_max=1024)
    big = charge(100, "A9", event_id="BIG") | {"note": "x" * 5000}  # too large, then invalid
    bad = charge(100, "A9", event_id="BAD") | {"amount_cents": 12.5}
    chatty = charge(100, "A9", event_id="CHATTY") | {"note": "y" * 1500}
    _, dlq, _ = run_batches(processor, [big, bad, chatty], 3)
    too_large, invalid, extra = dlq
    assert too_large["reason_code"] == "too_large"
    assert len(too_large["payload"]) == 1024
    assert too_large["context"]["payload_truncated"] is True
    assert too_large["context"]["payload_bytes"] == len(json.dumps(big))
    assert too_large["origin"] == {"topic": EVENTS, "partition": 0, "offset": 0, "key": "A9"}
    assert invalid["payload"] == json.dumps(bad)  # small payloads whole
    assert "payload_truncated" not in invalid["context"]
    # The reason quotes a bounded piece of the input (a 16 MiB field made a 16 MiB reason).
    assert extra["reason_code"] == "invalid_event"
    assert "(1502 chars)" in extra["reason"] and len(extra["reason"]) < 400
