"""The deterministic benchmark workload: canonical events for many accounts, with replays.

Per account, one or more billing cycles: a few ``charge_posted``, a ``claim_submitted``, a
``claim_adjudicated`` (processed; charge - paid == CO-45 + PR-1 + PR-2) and one or two
``patient_payment``s. A share of the stream (``replay_ratio``) are byte-identical re-sends of an
earlier event of the same account, placed later in the stream. Money is integer cents only.

``python -m bench.workload --quick --check`` validates every event with the canonical schema and
runs the pure rcmflow processor over the workload to confirm the expected delta count.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "WorkloadSpec",
    "Workload",
    "generate",
    "validate",
    "MONEY_KINDS",
    "account_name",
    "encode",
    "payment_doc",
    "DEFAULT_EVENTS",
    "DEFAULT_ACCOUNTS",
    "DEFAULT_REPLAY_RATIO",
    "QUICK_EVENTS",
    "QUICK_ACCOUNTS",
    "WORKLOAD_ID_PREFIX",
]

DEFAULT_EVENTS = 200_000
DEFAULT_ACCOUNTS = 10_000
DEFAULT_REPLAY_RATIO = 0.20
QUICK_EVENTS = 20_000
QUICK_ACCOUNTS = 1_000
DEFAULT_SEED = 20261126
#: Every workload event id starts so (latency probes use "lat-<system>-").
WORKLOAD_ID_PREFIX = "ev-"

#: Every generated kind except claim_submitted moves money and so yields one posting delta.
MONEY_KINDS = frozenset({"charge_posted", "claim_adjudicated", "patient_payment"})
#: The fewest events one billing cycle needs: charge, submit, adjudicate, pay.
CYCLE_EVENTS_MIN = 4
CYCLE_EVENTS_MAX = 8

EST = timezone(timedelta(hours=-5))
BASE_TIME = datetime(2026, 1, 5, 8, 0, tzinfo=EST)
REVENUE_CODES = ("0450", "0300", "0120", "0320", "0250")
PROCEDURES = {"0450": "99284", "0300": "80053", "0120": "99223", "0320": "71046",
              "0250": "J1885"}
PAYERS = {"COMMERCIAL": ("ACME", 10), "MEDICARE": ("CMS", 20)}  # payer, coinsurance %


@dataclass(frozen=True)
class WorkloadSpec:
    events: int = DEFAULT_EVENTS
    accounts: int = DEFAULT_ACCOUNTS
    replay_ratio: float = DEFAULT_REPLAY_RATIO
    seed: int = DEFAULT_SEED

    @property
    def replays(self) -> int:
        return round(self.events * self.replay_ratio)

    @property
    def new_events(self) -> int:
        return self.events - self.replays


@dataclass
class Workload:
    spec: WorkloadSpec
    #: (key, value) in stream order; key = account (utf-8), value = canonical event JSON.
    records: list[tuple[bytes, bytes]]
    #: New events that move money: the number of posting deltas every system must emit.
    expected_deltas: int
    kinds: dict[str, int] = field(default_factory=dict)
    replays: int = 0
    #: Per account: how many new events it receives (= its final account_version).
    expected_versions: dict[str, int] = field(default_factory=dict)
    #: Per account: charges - payer paid - CO adjustments - patient payments, in cents.
    expected_balances: dict[str, int] = field(default_factory=dict)

    @property
    def bytes_total(self) -> int:
        return sum(len(k) + len(v) for k, v in self.records)


def account_name(index: int) -> str:
    return f"ACC{index:07d}"


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _when(cycle: int, step: int) -> str:
    return (BASE_TIME + timedelta(days=7 * cycle, hours=6 * step)).isoformat()


def _cycle(rng: random.Random, acct_index: int, cycle: int, size: int, payer_class: str,
           next_id: Iterator[int]) -> tuple[list[dict[str, Any]], int]:
    """One billing cycle of ``size`` events; returns them and their balance effect."""
    account = account_name(acct_index)
    payer, coinsurance_pct = PAYERS[payer_class]
    payments = 1 if size <= 5 else rng.choice((1, 2))
    charges = size - 2 - payments
    encounter = f"V{acct_index:07d}{cycle:02d}"
    claim_id = f"CLM{acct_index:07d}{cycle:02d}"
    dims = {"entity": "01", "payer": payer, "payer_class": payer_class, "encounter": encounter}
    docs: list[dict[str, Any]] = []
    step = 0

    def base(kind: str, source: str) -> dict[str, Any]:
        nonlocal step
        step += 1
        event_id = f"{WORKLOAD_ID_PREFIX}{acct_index:07d}-{next(next_id):04d}"
        return {"schema_version": 1, "event_id": event_id,
                "account": account, "kind": kind, "occurred_at": _when(cycle, step),
                "source": source}

    lines: list[dict[str, Any]] = []
    for n in range(charges):
        code = rng.choice(REVENUE_CODES)
        amount = rng.randint(2_500, 250_000)
        doc = base("charge_posted", "hl7")
        doc.update(amount_cents=amount, dimensions={**dims, "revenue_code": code,
                                                   "procedure_code": PROCEDURES[code]})
        docs.append(doc)
        lines.append({"line_id": str(n + 1), "charge_cents": amount, "revenue_code": code,
                      "procedure_code": PROCEDURES[code]})
    total = sum(line["charge_cents"] for line in lines)
    doc = base("claim_submitted", "x12-837")
    doc.update(claim_id=claim_id, total_charge_cents=total, lines=lines,
               dimensions={**dims, "claim_id": claim_id})
    docs.append(doc)

    allowed = total * rng.randint(55, 85) // 100
    contractual = total - allowed
    deductible = rng.randint(0, allowed // 4)
    coinsurance = (allowed - deductible) * coinsurance_pct // 100
    paid = allowed - deductible - coinsurance
    adjustments = [{"group": "CO", "reason": "45", "amount_cents": contractual}]
    if deductible:
        adjustments.append({"group": "PR", "reason": "1", "amount_cents": deductible})
    if coinsurance:
        adjustments.append({"group": "PR", "reason": "2", "amount_cents": coinsurance})
    doc = base("claim_adjudicated", "x12-835")
    doc.update(claim_id=claim_id, outcome="processed", status_code="1",
               payer_claim_control_number=f"PCN{acct_index:07d}{cycle:02d}",
               charge_cents=total, paid_cents=paid,
               patient_responsibility_cents=deductible + coinsurance, adjustments=adjustments,
               correlation_id=f"TRN-{rng.randint(10**8, 10**9 - 1)}",
               dimensions={**dims, "claim_id": claim_id})
    docs.append(doc)

    patient_share = deductible + coinsurance
    pay_total = max(payments, patient_share * rng.choice((100, 100, 75, 50)) // 100)
    first = pay_total // payments
    amounts = [first] * (payments - 1) + [pay_total - first * (payments - 1)]
    for amount in amounts:
        doc = base("patient_payment", "lockbox")
        doc.update(amount_cents=amount, channel=rng.choice(("portal", "lockbox", "pos")),
                   reference=f"R{rng.randint(10**6, 10**7 - 1)}")
        docs.append(doc)
    balance = total - paid - contractual - pay_total
    return docs, balance


def _account_events(rng: random.Random, acct_index: int,
                    budget: int) -> tuple[list[dict[str, Any]], int]:
    payer_class = rng.choice(tuple(PAYERS))
    next_id = iter(range(1, 10**6))
    docs: list[dict[str, Any]] = []
    balance = 0
    remaining, cycle = budget, 0
    while remaining:
        if remaining <= CYCLE_EVENTS_MAX:
            size = remaining
        else:
            size = rng.randint(CYCLE_EVENTS_MIN, CYCLE_EVENTS_MAX)
            if remaining - size < CYCLE_EVENTS_MIN:
                size = remaining - CYCLE_EVENTS_MIN
        cycle_docs, cycle_balance = _cycle(rng, acct_index, cycle, size, payer_class, next_id)
        docs += cycle_docs
        balance += cycle_balance
        remaining -= size
        cycle += 1
    return docs, balance


def generate(spec: WorkloadSpec) -> Workload:
    if spec.accounts < 1 or not 0 <= spec.replay_ratio < 1:
        raise ValueError("need at least one account and a replay ratio in [0, 1)")
    if spec.new_events < CYCLE_EVENTS_MIN * spec.accounts:
        raise ValueError(f"{spec.new_events} new events are too few for {spec.accounts} "
                         f"accounts (at least {CYCLE_EVENTS_MIN} each)")
    rng = random.Random(spec.seed)
    base_budget, extra = divmod(spec.new_events, spec.accounts)
    per_account: list[list[bytes]] = []
    keys: list[bytes] = []
    kinds: dict[str, int] = {}
    versions: dict[str, int] = {}
    balances: dict[str, int] = {}
    expected = 0
    for index in range(spec.accounts):
        budget = base_budget + (1 if index < extra else 0)
        docs, balance = _account_events(rng, index + 1, budget)
        name = account_name(index + 1)
        keys.append(name.encode())
        per_account.append([encode(doc) for doc in docs])
        versions[name] = len(docs)
        balances[name] = balance
        for doc in docs:
            kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
            expected += doc["kind"] in MONEY_KINDS
    # Interleave accounts at random while keeping each account's own order.
    slots = [i for i, values in enumerate(per_account) for _ in values]
    rng.shuffle(slots)
    cursors = [0] * spec.accounts
    stream: list[tuple[bytes, bytes]] = []
    for slot in slots:
        stream.append((keys[slot], per_account[slot][cursors[slot]]))
        cursors[slot] += 1
    # Replays: byte-identical re-sends of an earlier event, placed somewhere after it.
    n_new = len(stream)
    ordered: list[tuple[float, int, tuple[bytes, bytes]]] = [
        (float(i), i, record) for i, record in enumerate(stream)]
    for r in range(spec.replays):
        original = rng.randrange(n_new)
        position = original + 0.5 + rng.random() * (n_new - original)
        ordered.append((position, n_new + r, stream[original]))
    ordered.sort(key=lambda item: (item[0], item[1]))
    return Workload(spec=spec, records=[record for _, _, record in ordered],
                    expected_deltas=expected, kinds=kinds, replays=spec.replays,
                    expected_versions=versions, expected_balances=balances)


def payment_doc(account: str, event_id: str, amount_cents: int) -> dict[str, Any]:
    """A fresh patient payment (latency probes): moves money, so it yields one delta."""
    return {"schema_version": 1, "event_id": event_id, "account": account,
            "kind": "patient_payment", "occurred_at": _when(60, 0), "source": "bench",
            "amount_cents": amount_cents, "channel": "portal"}


def validate(values: list[bytes]) -> int:
    """Validate each distinct event once with the canonical schema; returns how many."""
    from rcmflow.streams.events import EVENT_ADAPTER

    seen: set[bytes] = set()
    for value in values:
        if value not in seen:
            event = EVENT_ADAPTER.validate_json(value)
            assert event.account.encode() == json.loads(value)["account"].encode()
            seen.add(value)
    return len(seen)


def check_with_processor(workload: Workload) -> dict[str, int]:
    """Run rcmflow's pure processor over the workload (no broker): deltas, DLQ records."""
    from rcmflow.streams.chart import load_chart
    from rcmflow.streams.memory_tables import MemoryTables
    from rcmflow.streams.processor import Message, Processor
    from rcmflow.streams.topics import EVENTS

    processor = Processor(load_chart(None))
    tables = MemoryTables()

    totals = {"postings": 0, "dlq": 0, "replays": 0, "applied": 0}
    batch_size = 1000
    for start in range(0, len(workload.records), batch_size):
        chunk = workload.records[start:start + batch_size]
        messages = [Message(EVENTS, 0, start + i, k, v) for i, (k, v) in enumerate(chunk)]
        result = processor.process(messages, tables)
        tables.write(result)
        totals["postings"] += len(result.postings)
        totals["dlq"] += len(result.dlq)
        totals["replays"] += result.counts.replays
        totals["applied"] += result.counts.applied
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--accounts", type=int, default=DEFAULT_ACCOUNTS)
    parser.add_argument("--replay-ratio", type=float, default=DEFAULT_REPLAY_RATIO)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--quick", action="store_true", help="20,000 events, 1,000 accounts")
    parser.add_argument("--check", action="store_true",
                        help="also run rcmflow's pure processor over it (slow at full size)")
    args = parser.parse_args(argv)
    events, accounts = args.events, args.accounts
    if args.quick:
        events, accounts = QUICK_EVENTS, QUICK_ACCOUNTS
    t0 = time.perf_counter()
    workload = generate(WorkloadSpec(events, accounts, args.replay_ratio, args.seed))
    t1 = time.perf_counter()
    distinct = validate([v for _, v in workload.records])
    t2 = time.perf_counter()
    print(f"{len(workload.records)} events ({distinct} distinct, {workload.replays} replays), "
          f"{workload.bytes_total / 1e6:.1f} MB, kinds {workload.kinds}, expected deltas "
          f"{workload.expected_deltas}; generated in {t1 - t0:.1f}s, validated in {t2 - t1:.1f}s")
    if args.check:
        totals = check_with_processor(workload)
        print(f"rcmflow processor: {totals} ({time.perf_counter() - t2:.1f}s)")
        ok = totals["postings"] == workload.expected_deltas and totals["dlq"] == 0
        print("OK" if ok else "MISMATCH")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
