"""The exception work queue over the topics: list, show, assign, replay and resolve DLQ items.

The items are the records of rcm.dlq and rcm.postings.dlq; their states are the records of
the compacted rcm.dlq.state (``ops/items.py`` says what they hold). The command line and the
operations page call these functions; neither holds any logic of its own.

A replay re-sends the item's original input through the normal path (an event the worker
refused to rcm.events, marked as a retry so the dedup table judges it again; a delta an ERP
refused to rcm.postings, where the ERP's own guard by posting id drops a second copy), then
waits, up to a bound, for the process that reads it to go past it (its consumer group's
committed offset), and reads what it produced: a DLQ record whose origin is the re-sent
record (still failing), a delta of the event (applied), or nothing new (a replay). Past the
wait the outcome is ``pending``: `dlq list` and `dlq show` read it from the topics whenever
they show the item, and the next change to the item stores it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rcmflow.ops.exceptions import BadCursor, NoSuchItem, ReplayRefused
from rcmflow.ops.items import (
    RECLASSIFIABLE,
    Filters,
    ItemState,
    Replay,
    ReplayPlan,
    Step,
    add_step,
    item_view,
    queue_topics,
    replay_plan,
)
from rcmflow.ops.log_pages import Cursor, PageOf, picked_between, read_page
from rcmflow.runtime.broker import ensure_topics
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import (
    Record,
    committed_offsets,
    log_ends,
    publish,
    read_topic,
    topic_partitions,
)
from rcmflow.streams.topics import DLQ_STATE, EVENTS, POSTINGS, topic_specs

__all__ = ["QueueCursor", "Found", "StateBook", "read_states", "page", "every_item", "find",
           "show", "assign", "resolve", "replay", "replay_matching", "replay_items", "settle",
           "ensure_state_topic",
           "REPLAY_MATCHING_MAX", "POLL_S"]

#: Items one `dlq replay --reason` re-sends at most (oldest first; run it again for more).
REPLAY_MATCHING_MAX = 1000
#: How often a replay looks for its outcome while it waits.
POLL_S = 0.5


@dataclass(frozen=True)
class QueueCursor:
    """Where the next page of the queue starts, per DLQ topic (None: that topic is done)."""

    parts: dict[str, Cursor | None]

    def encode(self) -> str:
        return "/".join(c.encode() if (c := self.parts.get(t)) is not None else "-"
                        for t in queue_topics())

    @classmethod
    def decode(cls, text: str) -> QueueCursor:
        pieces = text.split("/")
        if len(pieces) != len(queue_topics()):
            raise BadCursor(f"--after {text[:80]!r} is not a cursor `dlq list` printed "
                            "(partition:offset:end,.../partition:offset:end,...)")
        return cls({t: None if piece == "-" else Cursor.decode(piece)
                    for t, piece in zip(queue_topics(), pieces, strict=True)})


@dataclass(frozen=True)
class Found:
    """A DLQ record: the topic it is on, the record as JSON, when it was queued."""

    topic: str
    doc: dict[str, Any]
    queued_ms: int


class StateBook:
    """The newest state record of each item (read whole: the topic is compacted and holds
    only items someone acted on), parsed when first asked for."""

    def __init__(self, raw: dict[str, bytes]) -> None:
        self._raw = raw
        self._parsed: dict[str, ItemState] = {}

    def get(self, dlq_id: str) -> ItemState | None:
        state = self._parsed.get(dlq_id)
        if state is None and dlq_id in self._raw:
            state = self._parsed[dlq_id] = ItemState.model_validate_json(self._raw[dlq_id])
        return state

    def __len__(self) -> int:
        return len(self._raw)


async def read_states(kafka: KafkaConnection, dlq_id: str | None = None) -> StateBook:
    """The state topic's newest record per item (one item's only, with ``dlq_id``)."""
    wanted = None if dlq_id is None else dlq_id.encode()
    records = await read_topic(kafka, DLQ_STATE,
                               keep=None if wanted is None else lambda key: key == wanted)
    raw: dict[str, bytes] = {}
    for record in records:  # offset order per partition; a key stays in one partition
        if record.key is None:
            continue
        if record.value is None:
            raw.pop(record.key.decode(), None)
        else:
            raw[record.key.decode()] = record.value
    return StateBook(raw)


def _doc(record: Record) -> dict[str, Any] | None:
    if record.value is None:
        return None
    try:
        doc = json.loads(record.value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("dlq_id"), str) else None


def _dlq_id(record: Record) -> str | None:
    doc = _doc(record)
    return None if doc is None else str(doc["dlq_id"])


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def page(kafka: KafkaConnection, filters: Filters, *, limit: int,
               after: QueueCursor | None, now: datetime | None = None,
               states: StateBook | None = None,
               ) -> tuple[list[dict[str, Any]], QueueCursor | None]:
    """One page of the items ``filters`` keeps, newest first over both DLQ topics, and the
    cursor of the next page (None: the last). Each topic is read back from its log end
    (``log_pages``), never whole; the state topic is read whole."""
    now = now or datetime.now(UTC)
    states = states if states is not None else await read_states(kafka)
    async def one_topic(topic: str, start: Cursor | None
                        ) -> tuple[str, Cursor | None, PageOf, dict[tuple[int, int], Any]]:
        docs: dict[tuple[int, int], dict[str, Any]] = {}
        # An item is shown at its newest record: ids earlier pages covered are not shown
        # again (a record written twice: a crash, a retry refused alike). A later page reads
        # those ids first, so deeper pages cost more, as `accounts list`'s do.
        ids: set[str] = set() if start is None else await picked_between(
            kafka, topic, start, _dlq_id)

        def keep(record: Record) -> bool:
            doc = _doc(record)
            if doc is None or not filters.matches(doc, _moment(record.timestamp_ms),
                                                  states.get(doc["dlq_id"])):
                return False
            docs[(record.partition, record.offset)] = doc
            return True

        def shown(record: Record) -> bool:
            dlq_id = docs[(record.partition, record.offset)]["dlq_id"]
            if dlq_id in ids:
                return False  # an older record of an item already shown
            ids.add(dlq_id)
            return True

        got = await read_page(kafka, topic, limit=limit, after=start, keep=keep, shown=shown)
        return topic, start, got, docs

    # Both topics at once (each its own clients): the page waits for the slower one only.
    wanted = [(t, None if after is None else after.parts.get(t)) for t in queue_topics()]
    read = await asyncio.gather(*(one_topic(t, start) for t, start in wanted
                                  if after is None or start is not None))
    picked = [(r.timestamp_ms, topic, r, docs[(r.partition, r.offset)])
              for topic, _, got, docs in read for r in got.records]
    pages = {topic: (start, got.next, got.records) for topic, start, got, _ in read}
    picked.sort(key=lambda p: (p[0], p[2].offset), reverse=True)
    shown_now = picked[:limit]
    taken = {(t, r.partition, r.offset) for _, t, r, _ in shown_now}
    parts: dict[str, Cursor | None] = {}
    for topic, (start, following, records) in pages.items():
        left = [r for r in records if (topic, r.partition, r.offset) not in taken]
        parts[topic] = following if not left else _cut(start, following, records, left)
    items = []
    for _, topic, r, doc in shown_now:
        state = states.get(doc["dlq_id"])
        if state is not None:  # a pending replay's outcome, read now (shown, not stored)
            state = await _settled(kafka, state, doc)
        items.append(item_view(doc, topic, r.timestamp_ms, state, now))
    if all(c is None for c in parts.values()):
        return items, None
    return items, QueueCursor({t: parts.get(t) for t in queue_topics()})


def _cut(start: Cursor | None, following: Cursor | None, records: list[Record],
         left: list[Record]) -> Cursor:
    """The cursor after a topic's page of which only some records were shown (the other
    topic's were newer): each partition with records left over stands at its oldest shown
    record, or where the page began."""
    if following is not None:
        ends = dict(following.positions)
    else:  # the page read the topic to its start: every partition done, but for ``left``
        ends = {p: (0, end) for p, (_, end) in (start.positions if start else {}).items()}
    positions = dict(ends)
    for partition in {r.partition for r in left}:
        shown = [r.offset for r in records if r.partition == partition and r not in left]
        read = [r.offset for r in records if r.partition == partition]
        # Where the log ended when paging began; a topic read to its start on this page has
        # no cursor left to say it: past the newest record read is enough (later pages
        # read only before the cursor's position).
        end = max(ends.get(partition, (0, 0))[1], max(read) + 1)
        began = start.positions[partition][0] if start is not None else end
        positions[partition] = (min(shown) if shown else began, end)
    return Cursor(positions)


async def _every_record(kafka: KafkaConnection) -> list[Found]:
    """Every DLQ record of both topics, the newest per dlq_id, newest first."""
    newest: dict[str, Found] = {}
    for topic in queue_topics():
        records = await read_topic(kafka, topic)
        for record in sorted(records, key=lambda r: (r.timestamp_ms, r.offset)):
            doc = _doc(record)
            if doc is not None:
                newest[doc["dlq_id"]] = Found(topic, doc, record.timestamp_ms)
    return sorted(newest.values(), key=lambda f: f.queued_ms, reverse=True)


async def every_item(kafka: KafkaConnection, filters: Filters,
                     now: datetime | None = None) -> list[dict[str, Any]]:
    """Every item ``filters`` keeps, newest first (both topics read whole)."""
    now = now or datetime.now(UTC)
    states = await read_states(kafka)
    return [item_view(f.doc, f.topic, f.queued_ms, states.get(f.doc["dlq_id"]), now)
            for f in await _every_record(kafka)
            if filters.matches(f.doc, _moment(f.queued_ms), states.get(f.doc["dlq_id"]))]


async def find(kafka: KafkaConnection, prefix: str) -> list[Found]:
    """The items whose dlq_id starts with ``prefix``; an exact id alone if there is one."""
    found = [f for f in await _every_record(kafka) if f.doc["dlq_id"].startswith(prefix)]
    exact = [f for f in found if f.doc["dlq_id"] == prefix]
    return exact or found


async def _one(kafka: KafkaConnection, prefix: str) -> Found:
    found = await find(kafka, prefix)
    if len(found) == 1:
        return found[0]
    if not found:
        raise NoSuchItem(f"no DLQ record {prefix!r}")
    names = ", ".join(f.doc["dlq_id"] for f in found[:20])
    more = f" (and {len(found) - 20} more)" if len(found) > 20 else ""
    raise NoSuchItem(f"{len(found)} DLQ records start with {prefix!r}: {names}{more}; give "
                     "more of the id")


async def show(kafka: KafkaConnection, prefix: str, now: datetime | None = None
               ) -> dict[str, Any]:
    """One item in full: the DLQ record with its payload, its state and history; a pending
    replay's outcome is read from the topics now (shown, stored by the next change)."""
    item = await _one(kafka, prefix)
    state = (await read_states(kafka, item.doc["dlq_id"])).get(item.doc["dlq_id"])
    state = await _settled(kafka, state, item.doc) if state is not None else None
    return item_view(item.doc, item.topic, item.queued_ms, state, now or datetime.now(UTC),
                     history=True)


async def _settled(kafka: KafkaConnection, state: ItemState, doc: dict[str, Any]
                   ) -> ItemState:
    """``state`` with its pending replay's outcome read now, if there is one yet (as a new
    step by the replay's operator; not written)."""
    replay = state.last_replay
    if state.state != "replayed" or replay is None or replay.outcome != "pending":
        return state
    outcome = await settle(kafka, replay, doc)
    if outcome is None:
        return state
    last = state.history[-1]
    return add_step(state, state.dlq_id, state.topic, Step(
        state="replayed", at=datetime.now(UTC), by=last.by,
        note=f"outcome: {outcome.outcome}", replay=outcome))


async def _write(kafka: KafkaConnection, state: ItemState) -> None:
    await publish(kafka, [(DLQ_STATE, state.dlq_id.encode(),
                           state.model_dump_json().encode())])


async def ensure_state_topic(kafka: KafkaConnection, partitions: int,
                             replication_factor: int) -> None:
    """Create rcm.dlq.state if the worker has not (it creates every rcm.* topic it may)."""
    specs = [s for s in topic_specs("rcmflow") if s.name == DLQ_STATE]
    await ensure_topics(kafka, specs, partitions, replication_factor, needed=[DLQ_STATE])


async def _change(kafka: KafkaConnection, prefix: str, step: Step) -> ItemState:
    item = await _one(kafka, prefix)
    dlq_id = item.doc["dlq_id"]
    current = (await read_states(kafka, dlq_id)).get(dlq_id)
    if current is not None:
        current = await _settled(kafka, current, item.doc)
    state = add_step(current, dlq_id, item.topic, step)
    await _write(kafka, state)
    return state


async def assign(kafka: KafkaConnection, prefix: str, *, user: str, assignee: str,
                 note: str = "") -> ItemState:
    """Take an item (or give it to ``assignee``): state ``assigned``."""
    return await _change(kafka, prefix, Step(state="assigned", at=datetime.now(UTC), by=user,
                                             note=note, assignee=assignee))


async def resolve(kafka: KafkaConnection, prefix: str, *, user: str, note: str,
                  app_id: str = "rcmflow", reclassify: bool = True,
                  wait_s: float = 30.0) -> ItemState:
    """Close an item by hand: who, when and why are kept (the note is required). An
    ``unmapped_dimension`` item first has its reclassification out of suspense sent, as
    `replay` does (once however often: its event id is the item's), unless ``reclassify``
    is off (it was posted by hand)."""
    if not note.strip():
        raise ReplayRefused("a resolve needs a note: why the item is closed")
    if reclassify:
        item = await _one(kafka, prefix)
        current = (await read_states(kafka, item.doc["dlq_id"])).get(item.doc["dlq_id"])
        if item.doc.get("reason_code") == RECLASSIFIABLE and (
                current is None or current.state != "resolved"):
            await replay_items(kafka, [item], user=user, app_id=app_id, note=note,
                               wait_s=wait_s)
    return await _change(kafka, prefix, Step(state="resolved", at=datetime.now(UTC), by=user,
                                             note=note))


async def replay(kafka: KafkaConnection, prefix: str, *, user: str, app_id: str,
                 note: str = "", wait_s: float = 30.0) -> ItemState:
    """Re-send one item's original input (``items.replay_plan``: refused before anything is
    sent where it cannot be), record it, and wait up to ``wait_s`` for its outcome."""
    item = await _one(kafka, prefix)
    states = await replay_items(kafka, [item], user=user, app_id=app_id, note=note,
                                wait_s=wait_s)
    return states[0]


async def replay_matching(kafka: KafkaConnection, filters: Filters, *, user: str,
                          app_id: str, note: str = "", wait_s: float = 30.0,
                          items_max: int = REPLAY_MATCHING_MAX,
                          ) -> tuple[list[ItemState], list[tuple[str, str]], int]:
    """Replay every item ``filters`` keeps (oldest first, at most ``items_max``): the states
    of those sent, (dlq_id, why) of those that cannot be, and how many matched in all."""
    states = await read_states(kafka)
    matching = [f for f in reversed(await _every_record(kafka))
                if filters.matches(f.doc, _moment(f.queued_ms), states.get(f.doc["dlq_id"]))]
    refused: list[tuple[str, str]] = []
    sendable: list[Found] = []
    for found in matching[:items_max]:
        try:
            replay_plan(found.doc, found.topic, app_id=app_id)
        except ReplayRefused as exc:
            refused.append((found.doc["dlq_id"], str(exc)))
            continue
        sendable.append(found)
    sent = await replay_items(kafka, sendable, user=user, app_id=app_id, note=note,
                              wait_s=wait_s, states=states) if sendable else []
    return sent, refused, len(matching)


async def replay_items(kafka: KafkaConnection, items: list[Found], *, user: str, app_id: str,
                       note: str, wait_s: float, states: StateBook | None = None,
                       ) -> list[ItemState]:
    """Send the items' inputs, record each as replayed (pending), then wait up to
    ``wait_s`` for their outcomes, storing each one found. A resolved item may still be
    re-sent (its cause was fixed after all)."""
    plans = [(item, replay_plan(item.doc, item.topic, app_id=app_id)) for item in items]
    currents: dict[str, ItemState | None] = {}
    for item, _ in plans:
        dlq_id = item.doc["dlq_id"]
        current = (states or await read_states(kafka, dlq_id)).get(dlq_id)
        # An earlier replay's outcome is read (and kept) before this one is sent.
        currents[dlq_id] = (await _settled(kafka, current, item.doc)
                            if current is not None else None)
    watch = await _log_ends(kafka, {t for _, p in plans for t in p.watch})
    sent = await _send(kafka, [p for _, p in plans])
    now = datetime.now(UTC)
    pending: list[ItemState] = []
    for (item, plan), (partition, offset) in zip(plans, sent, strict=True):
        dlq_id = item.doc["dlq_id"]
        current = currents[dlq_id]
        record = Replay(topic=plan.topic, partition=partition, offset=offset,
                        group=plan.group, watch={t: watch[t] for t in plan.watch},
                        event_id=plan.event_id)
        state = add_step(current, dlq_id, item.topic,
                         Step(state="replayed", at=now, by=user, note=note, replay=record))
        await _write(kafka, state)
        pending.append(state)
    docs = {item.doc["dlq_id"]: item.doc for item, _ in plans}
    deadline = time.monotonic() + wait_s
    done: dict[str, ItemState] = {}
    while True:
        for state in pending:
            if state.dlq_id in done:
                continue
            settled = await _settled(kafka, state, docs[state.dlq_id])
            if settled is not state:
                await _write(kafka, settled)
                done[state.dlq_id] = settled
        if len(done) == len(pending) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_S)
    return [done.get(s.dlq_id, s) for s in pending]


async def _log_ends(kafka: KafkaConnection, topics: Iterable[str]) -> dict[str, dict[int, int]]:
    ends: dict[str, dict[int, int]] = {}
    for topic in sorted(topics):
        partitions = await topic_partitions(kafka, topic)
        ends[topic] = await log_ends(kafka, topic, partitions) if partitions else {}
    return ends


async def _send(kafka: KafkaConnection, plans: list[ReplayPlan]) -> list[tuple[int, int]]:
    """Send each plan's record (acks=all); (partition, offset) of each, in order."""
    from aiokafka import AIOKafkaProducer

    from rcmflow.runtime.kafka_io import PUBLISH_REQUEST_BYTES_MAX

    producer = AIOKafkaProducer(**kafka.client_options(), acks="all",
                                max_request_size=PUBLISH_REQUEST_BYTES_MAX)
    await producer.start()
    try:
        futures = [await producer.send(p.topic, key=p.key, value=p.value,
                                       headers=list(p.headers)) for p in plans]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


async def settle(kafka: KafkaConnection, replay: Replay, doc: dict[str, Any]) -> Replay | None:
    """The replay with its outcome, once the process that reads the re-sent record has
    committed past it; None while it has not (the worker or the ERP connector not running,
    or behind)."""
    committed = await committed_offsets(kafka, replay.group, replay.topic, [replay.partition])
    if committed.get(replay.partition, 0) <= replay.offset:
        return None
    refusal: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None
    context = doc.get("context") or {}
    for topic, start in replay.watch.items():
        for record in await read_topic(kafka, topic, start=start):
            found = _doc(record) if topic != POSTINGS else None
            if found is not None:
                origin = found.get("origin") or {}
                if (origin.get("topic"), origin.get("partition"), origin.get("offset")) == (
                        replay.topic, replay.partition, replay.offset):
                    refusal = found
            elif topic == POSTINGS and record.value is not None and replay.topic == EVENTS:
                try:
                    posted = json.loads(record.value)
                except ValueError:
                    continue
                if isinstance(posted, dict) and posted.get("event_id") == (
                        replay.event_id or context.get("event_id")) and (
                        replay.event_id is not None
                        or posted.get("account") == context.get("account")):
                    delta = posted
    if refusal is not None:
        return replay.model_copy(update={
            "outcome": "failing", "new_dlq_id": refusal["dlq_id"],
            "detail": f"{refusal.get('reason_code')}: {str(refusal.get('reason'))[:300]}"})
    if replay.topic == POSTINGS:
        return replay.model_copy(update={
            "outcome": "applied", "detail": "the ERP connector took it (the ERP's guard by "
            "posting id drops a copy it already has)"})
    if delta is not None:
        return replay.model_copy(update={
            "outcome": "applied", "detail": f"posted {delta.get('posting_id')}"})
    return replay.model_copy(update={
        "outcome": "replay", "detail": "nothing new posted: it had been applied before "
        "(or it posts nothing)"})

