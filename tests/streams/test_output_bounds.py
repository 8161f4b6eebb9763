"""Every record the worker writes fits its topic: an event whose delta or account snapshot
would outgrow the limit is refused with a DLQ record, and DLQ payloads are cut to their bound.

Apache Kafka refuses a record over a topic's max.message.bytes; a batch holding one could
never be written, and the worker would crash on it for ever. Pure: no broker.
"""

from __future__ import annotations

import json
from typing import Any

from rcmflow.streams.chart import load_chart
from rcmflow.streams.processor import RECORD_OVERHEAD_BYTES, BatchResult, Message, Processor
from rcmflow.streams.state import AccountState
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
                size: int) -> tuple[dict[str, AccountState], list[dict[str, Any]],
                                    list[BatchResult]]:
    """Apply ``docs`` in batches of ``size``, carrying the state between them."""
    states: dict[tuple[int, str], AccountState] = {}
    dedup: dict[tuple[int, bytes], bytes] = {}
    results = []
    for start in range(0, len(docs), size):
        result = processor.process(messages(docs[start:start + size], start),
                                   lambda p, a: states.get((p, a)),
                                   lambda p, k: _entry(dedup.get((p, k))))
        states.update(result.state_writes)
        dedup.update(result.dedup_writes)
        results.append(result)
    dlq = [json.loads(v) for r in results for _, _, v in r.dlq]
    return {a: s for (_, a), s in states.items()}, dlq, results


def _entry(raw: bytes | None) -> Any:
    from rcmflow.streams.dedup import DedupEntry

    return DedupEntry.model_validate_json(raw) if raw is not None else None


def test_the_event_that_would_outgrow_the_snapshot_limit_is_refused() -> None:
    limit = 60_000
    processor = Processor(CHART, output_bytes_max=RECORD_OVERHEAD_BYTES + limit)
    docs = [claim("A7", n, lines=40) for n in range(30)]  # ~5 KB of state each
    for size in (1, 7, 30):  # however the stream falls into batches
        states, dlq, results = run_batches(processor, docs, size)
        refused = [r for r in dlq if r["reason_code"] == "account_too_large"]
        assert refused, "the snapshot never reached the limit"
        assert all(len(snap) <= limit for r in results for snap in r.snapshots.values())
        # Every claim up to the limit applied, every later one refused (each adds lines).
        assert states["A7"].version + len(refused) == len(docs)
        assert refused[0]["stage"] == "rules"
        assert f"largest record rcm.accounts takes is {limit} bytes" in refused[0]["reason"]
        assert refused[0]["context"]["account"] == "A7"
    # The same states whatever the batching: nothing depends on where a batch ends.
    assert run_batches(processor, docs, 1)[0] == run_batches(processor, docs, 30)[0]


def test_a_delta_larger_than_rcm_postings_takes_is_refused() -> None:
    processor = Processor(CHART, output_bytes_max=RECORD_OVERHEAD_BYTES + 300)
    states, dlq, results = run_batches(processor, [charge(10_000, "A8", event_id="CH1")], 1)
    assert "A8" not in states  # not applied: the account never existed
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
