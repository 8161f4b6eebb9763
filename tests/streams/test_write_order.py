"""The worker's write order, step by step (``streams/write_order.py``, the code its agent runs).

The crash property test (``test_properties``) finds a wrong order by crashing at random calls;
these pin the order itself, deterministically: what each send carries, and that the commit
limit (the offset the consumer may commit) stays where it was until the batch's last write
is acknowledged — a commit any earlier would skip the batch after a crash.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rcmflow.streams.chart import load_chart
from rcmflow.streams.ordering import OffsetGuard
from rcmflow.streams.outgoing import Acked, OutRecord
from rcmflow.streams.processor import Processor
from rcmflow.streams.topics import ACCOUNTS, DLQ, POSTINGS
from rcmflow.streams.write_order import Batches
from tests.factories import adjudication, charge, messages
from tests.streams.memory_world import DEDUP, NEXT_OFFSET_KEY, MemoryShell, World

CHART = load_chart()


@dataclass
class Call:
    """One call of the write order into the shell, and the commit limit when it was made."""

    what: str
    #: The kinds of record sent or stored: postings, dlq, dedup, next-offset, transition,
    #: head, item.
    kinds: tuple[str, ...]
    limit: dict[int, int]
    #: send: the (topic, partition, key) of each record; store: the heads and acks it got.
    detail: object = None


def kind(record: OutRecord) -> str:
    if record.topic == POSTINGS:
        return "postings"
    if record.topic == DLQ:
        return "dlq"
    if record.topic == DEDUP:
        return "next-offset" if record.key == NEXT_OFFSET_KEY else "dedup"
    assert record.topic == ACCOUNTS
    if b"/transition/" in record.key:
        return "transition"
    return "item" if b"/" in record.key else "head"


class Recording(MemoryShell):
    """The in-memory shell, noting every call with the commit limit at that instant."""

    def __init__(self, world: World) -> None:
        super().__init__(world, rng=None)  # type: ignore[arg-type]  # never crashes
        self.calls: list[Call] = []
        self.batches: Batches | None = None
        #: What each send returned.
        self.sent_acks: list[list[Acked]] = []

    def note(self, what: str, records: list[OutRecord], detail: object = None) -> None:
        assert self.batches is not None
        kinds = tuple(dict.fromkeys(kind(r) for r in records))
        self.calls.append(Call(what, kinds, dict(self.batches.durable_next), detail))

    async def send(self, records: list[OutRecord]) -> list[Acked]:
        self.note("send", records, [(r.topic, r.partition, r.key) for r in records])
        acks = await super().send(records)
        self.sent_acks.append(acks)
        return acks

    async def commit(self, read_to: dict[int, int]) -> None:
        self.note("commit", [])
        await super().commit(read_to)

    async def reached(self, point: str) -> None:
        self.note(point, [])

    def store(self, records, heads, acks=()):  # type: ignore[no-untyped-def]
        records = list(records)
        self.note("store", records, (heads, list(acks)))
        super().store(records, heads, acks)


PARTITION = 2


def apply(world: World, docs: list[dict[str, object]]) -> Recording:
    shell = Recording(world)
    guard = OffsetGuard(shell.load_next_offset, lambda partition: 0)
    shell.batches = Batches(Processor(CHART), shell, shell, guard)
    asyncio.run(shell.batches.apply(messages(docs, partition=PARTITION)))
    return shell


BATCH = [charge(10_000), charge(5_000, account="A2"),
         adjudication(10_000, 8_000, [("CO", "45", 2_000)], claim_id="C1"),
         {"not": "an event", "account": "A3"}]


def test_at_least_once_sends_outputs_then_dedup_then_transitions_then_heads_then_items(
        ) -> None:
    """The adjudication's payment_posted transition depends on the head before it: it is
    durable before the head, which a redelivery judges by."""
    shell = apply(World(CHART), BATCH)
    sends = [c.kinds for c in shell.calls if c.what == "send"]
    assert sends == [("postings", "dlq"), ("dedup", "next-offset"), ("transition",), ("head",),
                     ("item",)]
    # The local store gets each write before it is sent (it may run ahead of its changelog,
    # never behind what the broker holds).
    stores = [c.kinds for c in shell.calls if c.what == "store" and c.kinds]
    assert stores == [("dedup", "next-offset"), ("transition",), ("head", "item")]


def test_at_least_once_moves_the_commit_limit_only_after_the_last_write() -> None:
    shell = apply(World(CHART), BATCH)
    assert [c.limit for c in shell.calls] == [{}] * len(shell.calls)
    assert shell.batches is not None and shell.batches.durable_next == {PARTITION: len(BATCH)}
    # And the next offset recorded with the dedup records is the batch's end.
    assert shell.world.log.dedup[(PARTITION, NEXT_OFFSET_KEY)] == str(len(BATCH)).encode()


def test_exactly_once_sends_everything_in_one_transaction_then_commits_then_stores() -> None:
    shell = apply(World(CHART, exactly_once=True), BATCH)
    assert [(c.what, c.kinds) for c in shell.calls if c.what in ("send", "commit", "store")] == [
        ("send", ("postings", "dlq", "dedup", "next-offset", "transition", "head", "item")),
        ("commit", ()),
        ("store", ("dedup", "next-offset", "transition", "head", "item")),
    ]
    limits = {c.what: c.limit for c in shell.calls}
    assert limits["commit"] == {} and limits["store"] == {PARTITION: len(BATCH)}
    assert shell.world.committed == len(BATCH)


def test_a_batch_whose_outputs_never_come_back_is_never_committable() -> None:
    """A send that blocks (a broker that does not answer): the limit does not move."""
    world = World(CHART)
    shell = Recording(world)
    guard = OffsetGuard(shell.load_next_offset, lambda partition: 0)
    batches = shell.batches = Batches(Processor(CHART), shell, shell, guard)
    answered = asyncio.Event()  # partition 0 here

    async def send_blocked(records: list[OutRecord]) -> list[Acked]:
        await answered.wait()
        return []

    shell.send = send_blocked  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(batches.apply(messages(BATCH)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert batches.durable_next == {} and not task.done()
        answered.set()
        await task
        assert batches.durable_next == {0: len(BATCH)}

    asyncio.run(scenario())


def test_outputs_go_to_the_source_partition_keyed_by_account() -> None:
    shell = apply(World(CHART), BATCH)
    (outputs, *_) = [c.detail for c in shell.calls if c.what == "send"]
    assert {partition for _, partition, _ in outputs} == {PARTITION}
    assert sorted(key for topic, _, key in outputs if topic == POSTINGS) == [b"A1", b"A1", b"A2"]
    assert [key for topic, _, key in outputs if topic == DLQ] == [b"A3"]  # the invalid event


def test_each_step_is_named_for_the_fault_hooks() -> None:
    """``worker_kill_at`` and ``worker_hold_at`` name these points (rcmflow/runtime/faults.py)."""
    steps = ("send", "commit", "store")
    at_least_once = apply(World(CHART), BATCH)
    assert [c.what for c in at_least_once.calls if c.what not in steps] == \
        ["processed", "outputs-acked", "dedup-acked"]
    exactly_once = apply(World(CHART, exactly_once=True), BATCH)
    assert [c.what for c in exactly_once.calls if c.what not in steps] == \
        ["processed", "outputs-acked", "committed"]


def test_the_stores_get_the_heads_for_the_cache_and_the_acks_recovery_resumes_from() -> None:
    for exactly_once in (False, True):
        shell = apply(World(CHART, exactly_once=exactly_once), BATCH)
        stores = [c.detail for c in shell.calls if c.what == "store"]
        acks = [a for a in stores if a[1]]
        changelog_acks = [a for a in shell.sent_acks
                          if any(ack.topic != POSTINGS and ack.topic != DLQ for ack in a)]
        assert [a[1] for a in acks] == changelog_acks and changelog_acks
        with_heads = [heads for heads, _ in stores if heads]
        assert len(with_heads) == 1 and set(with_heads[0]) == {(PARTITION, "A1"),
                                                               (PARTITION, "A2")}
        assert all(isinstance(heads, dict) for heads, _ in stores)


def test_the_commit_limit_never_moves_back() -> None:
    """A batch read again after a seek back (below what is durable) leaves the limit."""
    shell = apply(World(CHART), BATCH)
    batches = shell.batches
    assert batches is not None
    batches.guard.sought(PARTITION, 1)
    asyncio.run(batches.apply(messages(BATCH, partition=PARTITION)[1:3]))
    assert batches.durable_next == {PARTITION: len(BATCH)}
