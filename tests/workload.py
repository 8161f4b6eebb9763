"""A deterministic stream for broker tests, and what the pure core says it must produce."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables, Records, merge, views
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import ACCOUNTS, DLQ, EVENTS, POSTINGS
from tests.factories import adjudication, charge, event_doc, payment


def account_stream(rng: random.Random, account: str) -> list[dict[str, Any]]:
    amount = rng.randrange(5_000, 500_000)
    paid = rng.randrange(0, amount)
    contractual = rng.randrange(0, amount - paid + 1)
    patient = amount - paid - contractual
    docs = [
        charge(amount, account, event_id=f"{account}-CH", revenue_code=rng.choice(
            ["0450", "0300", "0120", "0999"])),
        event_doc("claim_submitted", account, event_id=f"{account}-SUB", claim_id=f"{account}-C",
                  total_charge_cents=amount, dimensions={"payer_class": "COMMERCIAL"}),
        adjudication(amount, paid, [("CO", "45", contractual), ("PR", "2", patient)],
                     account, event_id=f"{account}-ADJ", claim_id=f"{account}-C"),
    ]
    if patient:
        docs.append(payment(rng.randrange(1, patient + 200), account, event_id=f"{account}-PAY"))
    return docs


@dataclass
class Workload:
    values: list[tuple[str, bytes]]

    @classmethod
    def build(cls, accounts: int, seed: int = 7, replay_ratio: float = 0.2,
              conflicts: int = 5, invalid: int = 5) -> Workload:
        rng = random.Random(seed)
        queues = [[(d["account"], json.dumps(d).encode()) for d in
                   account_stream(rng, f"T{n:05d}")] for n in range(accounts)]
        values: list[tuple[str, bytes]] = []
        while queues:
            queue = rng.choice(queues)
            values.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
        originals = len(values)
        for _ in range(int(originals * replay_ratio / (1 - replay_ratio))):
            at = rng.randrange(originals)
            values.insert(rng.randrange(at + 1, len(values) + 1), values[at])
        for n in range(conflicts):
            key, raw = values[rng.randrange(originals)]
            doc = json.loads(raw) | {"source": f"conflicting-{n}"}
            values.append((key, json.dumps(doc).encode()))
        for n in range(invalid):
            bad = charge(100, f"T{n:05d}", event_id=f"BAD{n}") | {"amount_cents": 12.5}
            values.insert(rng.randrange(len(values)), (bad["account"], json.dumps(bad).encode()))
        return cls(values)

    def publish(self, kafka: KafkaConnection, start: int = 0, end: int | None = None) -> None:
        chunk = self.values[start:end]
        asyncio.run(publish(kafka, [(EVENTS, k.encode(), v) for k, v in chunk]))

    def expected(self) -> Expected:
        """What the pure core produces for the whole stream (partitioning does not matter:
        an account's events share a partition, and deltas carry no offsets)."""
        messages = [Message(EVENTS, 0, i, k.encode(), v) for i, (k, v) in enumerate(self.values)]
        tables = MemoryTables()
        result = Processor(load_chart()).process(messages, tables)
        tables.write(result)
        return Expected(
            postings={json.loads(v)["posting_id"]: v for _, _, v in result.postings},
            states=tables.views(),
            dlq_reasons=Counter(json.loads(v)["reason_code"] for _, _, v in result.dlq),
            records=tables.accounts,
        )


@dataclass
class Expected:
    postings: dict[str, bytes]
    #: Account -> its head and items as one document (``layout.assemble``).
    states: dict[str, dict[str, Any]]
    dlq_reasons: Counter[str]
    #: The rcm.accounts records: (partition 0, key) -> value (heads and items).
    records: Records


@dataclass
class Observed:
    postings: dict[str, set[bytes]]
    states: dict[str, dict[str, Any]]
    dlq_ids: dict[str, str]

    @classmethod
    def read(cls, kafka: KafkaConnection) -> Observed:
        async def read_all() -> tuple[list[Any], list[Any], list[Any]]:
            return (await read_topic(kafka, POSTINGS),
                    await read_topic(kafka, ACCOUNTS), await read_topic(kafka, DLQ))

        postings, accounts, dlq = asyncio.run(read_all())
        by_id: dict[str, set[bytes]] = {}
        for record in postings:
            by_id.setdefault(json.loads(record.value)["posting_id"], set()).add(record.value)
        latest: Records = {}
        for record in sorted(accounts, key=lambda r: (r.partition, r.offset)):
            merge(latest, {(record.partition, record.key): record.value})
        states = views(latest)  # each account's head and items, as one document
        dlq_ids = {json.loads(r.value)["dlq_id"]: json.loads(r.value)["reason_code"] for r in dlq}
        return cls(by_id, states, dlq_ids)

    def dlq_reasons(self) -> Counter[str]:
        return Counter(self.dlq_ids.values())
