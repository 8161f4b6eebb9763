"""Properties of the pure core over random streams with replays, conflicts and reversals.

- every posting delta balances;
- for every account, the sum of its deltas per bucket equals its state (the ledger = state);
- replaying any prefix changes nothing and emits nothing;
- money never touches float;
- a crash at any step of any batch, with any subset of in-flight records lost, ends with the
  same states and the same posting ids with the same contents as a run that never crashed:
  the steps are those of the worker's own write order (``streams/write_order.py``, run by
  ``memory_world``), at_least_once and exactly_once.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcmflow.streams.chart import load_chart
from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.processor import Processor
from rcmflow.streams.rules import bucket_effects, delta_amounts
from rcmflow.streams.state import LEDGER_BUCKETS
from tests.factories import adjudication, charge, event_doc
from tests.streams.memory_world import CALLS_MAX, World
from tests.streams.strategies import event_stream

CHART = load_chart()
PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def clean_run(values: list[tuple[str, bytes]], batch_size: int = 7) -> World:
    world = World(CHART)
    assert world.run(values, batch_size)
    return world


def deltas(world: World) -> dict[str, dict[str, Any]]:
    """Posting id -> delta; fails if one id was ever sent with two different contents."""
    by_id: dict[str, bytes] = {}
    for raw in world.postings:
        pid = json.loads(raw)["posting_id"]
        assert by_id.setdefault(pid, raw) == raw, f"{pid} sent with two contents"
    return {pid: json.loads(raw) for pid, raw in by_id.items()}


def states(world: World) -> dict[str, dict[str, Any]]:
    """Account -> head and items as on the changelog (``layout.assemble``)."""
    return world.log.views()


def walk_numbers(doc: Any) -> list[object]:
    if isinstance(doc, dict):
        return [n for v in doc.values() for n in walk_numbers(v)]
    if isinstance(doc, list):
        return [n for v in doc for n in walk_numbers(v)]
    return [doc] if isinstance(doc, (int, float)) and not isinstance(doc, bool) else []


@PROPERTY
@given(event_stream())
def test_every_delta_balances_and_the_ledger_equals_the_state(
    values: list[tuple[str, bytes]]
) -> None:
    world = clean_run(values)
    ledger: dict[str, Counter[str]] = defaultdict(Counter)
    for delta in deltas(world).values():
        debits = sum(line["debit_cents"] for line in delta["lines"])
        credits = sum(line["credit_cents"] for line in delta["lines"])
        assert debits == credits > 0
        parsed = PostingDelta.model_validate(delta)
        ledger[delta["account"]].update(bucket_effects(delta_amounts(parsed.lines)))
    for account, state in states(world).items():
        balances = state["balances"]
        for bucket in LEDGER_BUCKETS:
            assert ledger[account][bucket] == balances[bucket], (account, bucket)
        assert balances["balance"] == (balances["insurance_ar"] + balances["patient_ar"]
                                       - balances["unapplied_credit"])
        # The items agree with the head and the ledger: the counts, the money received
        # and paid back, the payers' answers.
        claims = state["claims"].values()
        adjudications = [a for c in claims for a in c["adjudications"]]
        assert state["items"] == {"charge": len(state["charges"]), "claim": len(claims),
                                  "adjudication": len(adjudications),
                                  "payment": len(state["payments"]),
                                  "refund": len(state["refunds"]),
                                  "transition": len(state["transitions"]),
                                  "denial": len(state["denials"])}
        paid = [p["amount_cents"] for p in state["payments"] if p["kind"] == "patient_payment"]
        refunded = [p["amount_cents"] for p in state["payments"] if p["kind"] == "refund"]
        assert (balances["patient_paid"], balances["refunds"]) == (sum(paid), sum(refunded))
        # Refunds: only an approved request posted, by distinct approvers, never its
        # requester; the pending figure is the requests still waiting.
        requests = {r["event_id"]: r for r in state["refunds"]}
        assert {p["event_id"] for p in state["payments"] if p["kind"] == "refund"} == {
            r for r, req in requests.items() if req["state"] == "posted"}
        for req in requests.values():
            approvers = [a["by"] for a in req["approvals"]]
            assert len(set(approvers)) == len(approvers)
            assert req["requested_by"] not in approvers
            if req["state"] == "posted":
                assert len(approvers) == req["approvals_needed"]
        pending = [r["amount_cents"] for r in requests.values() if r["state"] == "pending"]
        assert state["refunds_pending"] == {"count": len(pending), "cents": sum(pending)}
        # Denied charges: a denial adds its charge, a reversal of a denial (negative amounts)
        # takes it back.
        denied = 0
        for claim in claims:
            answers = sorted(claim["adjudications"], key=lambda a: a["version"])
            for n, answer in enumerate(answers):
                if answer["outcome"] == "denied" or (answer["outcome"] == "reversal" and n
                                                     and answers[n - 1]["outcome"] == "denied"):
                    denied += answer["charge_cents"]
        assert balances["denied"] == denied
        for item in [*state["charges"], *claims, *adjudications, *state["payments"],
                     *state["refunds"]]:
            assert 1 <= item["version"] <= state["version"]
    # Versions count applied events, and every delta knows the version it produced.
    for delta in deltas(world).values():
        assert 1 <= delta["account_version"] <= states(world)[delta["account"]]["version"]


@PROPERTY
@given(event_stream(), st.integers(0, 10**6))
def test_replaying_any_prefix_changes_nothing(values: list[tuple[str, bytes]],
                                              cut: int) -> None:
    world = clean_run(values)
    before_states, before_postings, before_dlq = states(world), len(world.postings), \
        len(world.dlq)
    prefix = values[: cut % (len(values) + 1)]
    assert world.run(values + prefix, batch_size=5)
    assert states(world) == before_states
    assert len(world.postings) == before_postings
    # Replays of applied events emit nothing; input rejected before (a conflict, an invalid
    # event) is answered again in the DLQ, with the same reason.
    reasons_before = {(json.loads(r)["payload"], json.loads(r)["reason_code"])
                      for r in world.dlq[:before_dlq]}
    for raw in world.dlq[before_dlq:]:
        record = json.loads(raw)
        assert (record["payload"], record["reason_code"]) in reasons_before


@PROPERTY
@given(event_stream())
def test_money_never_touches_float(values: list[tuple[str, bytes]]) -> None:
    world = clean_run(values)
    documents = [json.loads(raw) for raw in world.postings] + \
        list(states(world).values())
    for doc in documents:
        for number in walk_numbers(doc):
            assert isinstance(number, int), f"{number!r} is not integer cents"


def clock_run(values: list[tuple[str, bytes]], batch_size: int, world: World,
              crash: tuple[int, int, int] | None = None) -> bool:
    """Run with the dedup horizon at work: rcm.events timestamps three days apart from the
    events' date, a ten-day horizon (so records are purged and old events refused)."""
    start = datetime(2026, 11, 20, tzinfo=UTC)
    world.timestamps = {n: int((start + timedelta(days=3 * n)).timestamp() * 1000)
                        for n in range(len(values))}
    processor = Processor(CHART, dedup_horizon_days=10,
                          clock=lambda: (start + timedelta(days=3 * len(values))).timestamp())
    return world.run(values, batch_size, crash, processor)


@PROPERTY
@given(event_stream(), st.data())
def test_crashes_lose_nothing_and_double_nothing(values: list[tuple[str, bytes]],
                                                 data: st.DataObject) -> None:
    batch_size = data.draw(st.integers(1, 9), label="batch size")
    horizon = data.draw(st.booleans(), label="dedup horizon at work")
    exactly_once = data.draw(st.booleans(), label="exactly_once")
    reference = World(CHART, exactly_once)
    run = clock_run if horizon else lambda v, b, w, c=None: w.run(v, b, c)
    assert run(values, batch_size, reference)
    world = World(CHART, exactly_once)
    for _ in range(data.draw(st.integers(1, 4), label="crashes")):
        batches = (len(values) - world.committed + batch_size - 1) // batch_size
        if batches == 0:
            break
        crash = (data.draw(st.integers(0, batches - 1), label="batch"),
                 data.draw(st.integers(0, CALLS_MAX), label="call into the shell"),
                 data.draw(st.integers(0, 10**6), label="which records landed"))
        run(values, batch_size, world, crash)
        world.recover(keep_local_store=data.draw(st.booleans(), label="keep local store"))
    assert run(values, batch_size, world)
    assert states(world) == states(reference)
    assert deltas(world) == deltas(reference)
    dlq_ids = {json.loads(r)["dlq_id"] for r in world.dlq}
    if not horizon:
        assert dlq_ids == {json.loads(r)["dlq_id"] for r in reference.dlq}
    # With the horizon at work a crash can move a purge past a replay of what it deletes:
    # the replay is then refused (DLQ) instead of dropped, or the other way round; money
    # and state are the same either way, which is what the two lines above hold.


def test_a_crash_at_every_call_of_a_batch_that_changes_existing_items() -> None:
    """Every call of the write order, every recovery, both guarantees, for the events that
    change an item an earlier batch wrote (a reversal, a claim's answer): items lost in the
    crash are derived again on redelivery (found by the mutation run: random crashes rarely
    cut exactly these batches)."""
    docs = [charge(1_000, event_id="CH1"),
            event_doc("claim_submitted", claim_id="C1", total_charge_cents=1_000,
                      dimensions={"entity": "01", "payer": "ACME", "payer_class": "COMMERCIAL"}),
            event_doc("charge_reversed", amount_cents=400, reverses_event_id="CH1"),
            adjudication(600, 600, [])]
    values = [("A1", json.dumps(doc).encode()) for doc in docs]
    for exactly_once in (False, True):
        reference = World(CHART, exactly_once)
        assert reference.run(values, 1)
        for batch in (2, 3):
            for call in range(CALLS_MAX + 1):
                for seed, keep in ((0, False), (1, False), (0, True)):
                    world = World(CHART, exactly_once)
                    world.run(values, 1, (batch, call, seed))
                    world.recover(keep_local_store=keep)
                    assert world.run(values, 1)
                    assert states(world) == states(reference), (exactly_once, batch, call, seed)
                    assert deltas(world) == deltas(reference)


def test_after_a_clean_run_the_changelogs_hold_exactly_the_local_stores() -> None:
    """Recovery rebuilds a store from its changelog: every write of the store, the dedup
    horizon's purges too, must have reached it (else a rebuilt store keeps what the purge
    deleted, and grows for ever)."""
    values = [(f"A{n % 3}", json.dumps(charge(100 + n, f"A{n % 3}", event_id=f"E{n}")).encode())
              for n in range(12)]
    for exactly_once in (False, True):
        world = World(CHART, exactly_once)
        assert clock_run(values, 2, world)
        assert any(key[1].startswith(b"\x00purged") for key in world.log.dedup), "no purge"
        assert dict(world.log.dedup) == dict(world.local.dedup)
        assert world.log.accounts == world.local.accounts
