"""The exception work queue's items, without I/O: states, their history, filters, and what a
replay re-sends.

An item is a DLQ record (rcm.dlq or rcm.postings.dlq), named by its ``dlq_id``; the DLQ
records stay the only source of items. What operators did with an item is an ``ItemState``
on the compacted topic rcm.dlq.state, keyed by the dlq_id: the newest record of a key is
the item's state and carries its whole history (who, when, why; for a replay, where it was
re-sent and what it produced), so compaction loses nothing. No state record: the item is
open.

States: ``open`` -> (``assigned``) -> ``replayed`` or ``resolved``. A replay's outcome is
``pending`` until the process that reads the re-sent record has gone past it, then
``applied`` (posted; for a posting, the ERP took it), ``replay`` (nothing new was posted:
it had been applied before, or it posts nothing) or ``failing`` (refused again: the reason
and the DLQ record it made). An item is *done* when resolved, or replayed with an outcome
that needs nothing more (applied, replay, or failing under another reason, which is a new
item of its own); the default listing (``todo``) shows the others.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from rcmflow.ops.durations import age_text
from rcmflow.ops.exceptions import ReplayRefused
from rcmflow.runtime.kafka_access import erp_group
from rcmflow.streams.dedup import RETRY_HEADER
from rcmflow.streams.topics import DLQ, EVENTS, POSTINGS, POSTINGS_DLQ

__all__ = ["State", "Outcome", "Replay", "Step", "ItemState", "Filters", "ReplayPlan",
           "STATE_FILTERS", "HISTORY_MAX", "add_step", "is_done", "item_view", "replay_plan",
           "source_of", "account_of", "queue_topics", "reclassification_id", "RECLASSIFIABLE"]

State = Literal["open", "assigned", "replayed", "resolved"]
Outcome = Literal["pending", "applied", "replay", "failing"]
#: What ``--state`` takes: ``todo`` (not done: the default), ``all``, or one state.
STATE_FILTERS = ("todo", "all", "open", "assigned", "replayed", "resolved")
#: Steps an item's record keeps (the oldest are dropped past it, and counted): the record
#: must stay small however often an item is replayed.
HISTORY_MAX = 100
#: The reason code whose replay (and resolve) posts a reclassification out of suspense.
RECLASSIFIABLE = "unmapped_dimension"
#: Characters of a note kept.
NOTE_CHARS_MAX = 2000


def queue_topics() -> tuple[str, str]:
    """The DLQ topics whose records are the items, in listing order."""
    return DLQ, POSTINGS_DLQ


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Replay(_Frozen):
    """Where a replay re-sent an item's input, and what it produced."""

    #: The record sent: rcm.events (an event the worker refused) or rcm.postings (a delta
    #: the ERP refused), its partition and offset.
    topic: str
    partition: int
    offset: int
    #: The consumer group whose committed offset past ``offset`` says the record was read.
    group: str
    #: Per topic, per partition: the log end just before the record was sent; the outputs
    #: that answer it (a new DLQ record, a posting delta) are looked for from there.
    watch: dict[str, dict[int, int]]
    outcome: Outcome = "pending"
    #: What the outcome was read from: the posting id, the new reason.
    detail: str = ""
    #: Failing: the DLQ record the refusal made (this item's id when the reason is the same).
    new_dlq_id: str | None = None
    #: The event sent, where it is not the item's own (a reclassification).
    event_id: str | None = None


class Step(_Frozen):
    """One thing done to an item (an audit record)."""

    state: State
    at: datetime
    by: str
    note: str = ""
    assignee: str | None = None
    replay: Replay | None = None


class ItemState(_Frozen):
    """The value on rcm.dlq.state (key: the dlq_id)."""

    dlq_id: str
    #: The DLQ topic the item is on.
    topic: str
    history: tuple[Step, ...]
    #: Steps dropped past HISTORY_MAX (the oldest).
    dropped: int = 0

    @property
    def state(self) -> State:
        return self.history[-1].state

    @property
    def last_replay(self) -> Replay | None:
        for step in reversed(self.history):
            if step.replay is not None:
                return step.replay
        return None


def add_step(current: ItemState | None, dlq_id: str, topic: str, step: Step) -> ItemState:
    """The item's state after ``step``. A resolved item is closed: only a replay (an
    operator may still re-send it) changes it."""
    if current is not None and current.state == "resolved" and step.state != "replayed":
        last = current.history[-1]
        raise ReplayRefused(f"{dlq_id} was resolved by {last.by} at "
                            f"{last.at.isoformat(timespec='seconds')}: it is closed")
    step = step.model_copy(update={"note": step.note[:NOTE_CHARS_MAX]})
    history = (*(current.history if current else ()), step)
    dropped = (current.dropped if current else 0) + max(0, len(history) - HISTORY_MAX)
    return ItemState(dlq_id=dlq_id, topic=topic, history=history[-HISTORY_MAX:],
                     dropped=dropped)


def is_done(state: ItemState | None) -> bool:
    """Nothing more to do: resolved, or replayed with an outcome that needs no more work."""
    if state is None:
        return False
    if state.state == "resolved":
        return True
    if state.state != "replayed":
        return False
    replay = state.last_replay
    if replay is None or replay.outcome == "pending":
        return False
    return replay.outcome != "failing" or replay.new_dlq_id not in (None, state.dlq_id)


def source_of(doc: dict[str, Any]) -> str:
    """Where an item came from: the event's source, the connector's format, the ERP adapter,
    else the origin (``hl7:channel``, ``file:path``, a topic)."""
    context = doc.get("context") or {}
    for name in ("source", "format"):
        if isinstance(context.get(name), str):
            return str(context[name])
    if isinstance(context.get("adapter"), str):
        return f"erp:{context['adapter']}"
    return str((doc.get("origin") or {}).get("topic", ""))


def account_of(doc: dict[str, Any]) -> str:
    context = doc.get("context") or {}
    if isinstance(context.get("account"), str):
        return str(context["account"])
    key = (doc.get("origin") or {}).get("key")
    return str(key) if isinstance(key, str) else ""


def _source_matches(wanted: str, doc: dict[str, Any]) -> bool:
    wanted = wanted.lower()
    have = source_of(doc).lower()
    origin = str((doc.get("origin") or {}).get("topic", "")).lower()
    return wanted in (have, origin) or have.startswith(wanted + ":") or \
        origin.startswith(wanted + ":")


@dataclass(frozen=True)
class Filters:
    """What `dlq list` (and `dlq replay --reason`) keeps; None: any."""

    stage: str | None = None
    reason: str | None = None
    source: str | None = None
    entity: str | None = None
    account: str | None = None
    #: Queued at or after this moment.
    since: datetime | None = None
    #: Queued at or before this moment (older than the duration given).
    before: datetime | None = None
    state: str = "todo"

    def matches(self, doc: dict[str, Any], queued_at: datetime,
                state: ItemState | None) -> bool:
        context = doc.get("context") or {}
        checks = (
            self.stage is None or doc.get("stage") == self.stage,
            self.reason is None or doc.get("reason_code") == self.reason,
            self.source is None or _source_matches(self.source, doc),
            self.entity is None or context.get("entity") == self.entity,
            self.account is None or account_of(doc) == self.account,
            self.since is None or queued_at >= self.since,
            self.before is None or queued_at <= self.before,
        )
        if not all(checks):
            return False
        if self.state == "all":
            return True
        if self.state == "todo":
            return not is_done(state)
        return (state.state if state is not None else "open") == self.state


def item_view(doc: dict[str, Any], topic: str, queued_ms: int, state: ItemState | None,
              now: datetime, *, history: bool = False) -> dict[str, Any]:
    """The DLQ record as it is, with ``queue``: the topic it is on, when it was queued, its
    age, state, the last step (who, when, note) and the last replay's outcome; with
    ``history``, every step."""
    queued_at = datetime.fromtimestamp(queued_ms / 1000, tz=UTC)
    age_s = max(0.0, (now - queued_at).total_seconds())
    queue: dict[str, Any] = {
        "topic": topic, "queued_at": queued_at.isoformat(timespec="seconds"),
        "age_s": int(age_s), "age": age_text(age_s),
        "state": state.state if state is not None else "open",
        "done": is_done(state), "source": source_of(doc),
    }
    if state is not None:
        last = state.history[-1]
        queue |= {"by": last.by, "at": last.at.isoformat(timespec="seconds"),
                  "note": last.note, "assignee": _assignee(state)}
        replay = state.last_replay
        if replay is not None:
            queue["replay"] = replay.model_dump(mode="json", exclude={"watch"})
        if history:
            queue["history"] = [s.model_dump(mode="json", exclude_none=True)
                                for s in state.history]
            queue["history_dropped"] = state.dropped
    elif history:
        queue["history"] = []
    return doc | {"queue": queue}


def _assignee(state: ItemState) -> str | None:
    for step in reversed(state.history):
        if step.state == "assigned":
            return step.assignee
    return None


@dataclass(frozen=True)
class ReplayPlan:
    """The record a replay sends, and who reads it."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    group: str
    #: The topics whose new records answer it (a refusal's DLQ record, a delta).
    watch: tuple[str, ...]
    #: The event whose delta says it was applied (None: the item's own event).
    event_id: str | None = None


def replay_plan(doc: dict[str, Any], topic: str, *, app_id: str) -> ReplayPlan:
    """What replaying this DLQ record re-sends: the original input, to the topic it was read
    from, under its original key. ``ReplayRefused`` (nothing is sent) where that cannot be:
    a payload cut short, input a connector refused before it was an event, an exception that
    is not a refusal."""
    dlq_id = str(doc.get("dlq_id"))
    context = doc.get("context") or {}
    origin = doc.get("origin") or {}
    if context.get("payload_truncated"):
        raise ReplayRefused(
            f"{dlq_id}: its payload was cut to {len(str(doc.get('payload', '')))} characters "
            f"of the {context.get('payload_bytes', '?')} bytes received "
            "(RCMFLOW_DLQ_PAYLOAD_BYTES_MAX), so the original cannot be re-sent from the "
            f"queue; re-send it from its source (origin: {origin.get('topic')} partition "
            f"{origin.get('partition')} offset {origin.get('offset')}), then resolve this "
            "item with a note. Nothing was sent")
    if doc.get("reason_code") == RECLASSIFIABLE:
        return _reclassification(doc, app_id)
    if doc.get("severity") == "warning":
        raise ReplayRefused(f"{dlq_id}: a warning (input that carries no money for "
                            "rcmflow): there is nothing to re-send; resolve it with a note")
    try:
        value = (base64.b64decode(str(doc["payload"]))
                 if doc.get("payload_encoding") == "base64"
                 else str(doc["payload"]).encode("utf-8"))
    except (KeyError, ValueError) as exc:
        raise ReplayRefused(f"{dlq_id}: its payload cannot be read back ({exc})") from exc
    key = origin.get("key")
    key_bytes = key.encode("utf-8") if isinstance(key, str) else None
    if topic == POSTINGS_DLQ and origin.get("topic") == POSTINGS:
        adapter = context.get("adapter")
        if not isinstance(adapter, str):
            raise ReplayRefused(f"{dlq_id}: no ERP adapter named in its context")
        return ReplayPlan(POSTINGS, key_bytes, value, (), erp_group(app_id, adapter),
                          (POSTINGS_DLQ,))
    if topic == DLQ and origin.get("topic") == EVENTS:
        return ReplayPlan(EVENTS, key_bytes, value, ((RETRY_HEADER, dlq_id.encode()),),
                          app_id, (DLQ, POSTINGS))
    raise ReplayRefused(
        f"{dlq_id}: it was refused by the connector that read it (origin "
        f"{str(origin.get('topic'))[:120]}), before it became an event; replay re-sends "
        "only events the worker refused and postings an ERP refused. Re-send the corrected "
        "source (`rcmflow ingest ...`), then resolve this item with a note. Nothing was sent")


def reclassification_id(dlq_id: str) -> str:
    """The event id of the reclassification of an ``unmapped_dimension`` item: one per item,
    so replaying or resolving it again is a replay."""
    return f"reclass:{dlq_id}"


def _reclassification(doc: dict[str, Any], app_id: str) -> ReplayPlan:
    """An ``unmapped_dimension`` item's replay: not its event again (applied: a replay) but a
    ``suspense_reclassified`` event from the suspense line it records, with an id derived from
    the item's, dated when the record was made: the same event however often it is sent."""
    dlq_id = str(doc.get("dlq_id"))
    context = doc.get("context") or {}
    try:
        line = json.loads(str(doc.get("payload", "")))
    except ValueError:
        line = None
    if not isinstance(line, dict) or not all(
            isinstance(line.get(k), str) for k in ("role", "bucket", "posting_id",
                                                    "gl_account", "account")):
        raise ReplayRefused(
            f"{dlq_id}: its suspense line names no GL role (a CARC or PLB code the chart "
            "lacks: the treatment is unknown, not only the account, or a record an older "
            "rcmflow wrote), so it cannot be reclassified from the queue: post it by hand "
            "and resolve this item with a note. Nothing was sent")
    entity = context.get("entity")
    when = doc.get("received_at")
    if not isinstance(entity, str) or not isinstance(when, str):
        raise ReplayRefused(f"{dlq_id}: the record names no entity or time (an older "
                            "rcmflow wrote it): post it by hand and resolve it with a note")
    event_id = reclassification_id(dlq_id)
    event = {
        "schema_version": 1, "event_id": event_id, "account": line["account"],
        "kind": "suspense_reclassified", "occurred_at": when, "source": "rcmflow-dlq",
        "correlation_id": context.get("correlation_id"),
        "dimensions": {"entity": entity},
        "posting_id": line["posting_id"], "role": line["role"],
        "dimension": line.get("dimension"), "bucket": line["bucket"],
        "amount_cents": line.get("amount_cents"), "missing": str(line.get("missing", ""))[:200],
        "suspense_account": line["gl_account"],
    }
    value = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    return ReplayPlan(EVENTS, str(line["account"]).encode(), value,
                      ((RETRY_HEADER, dlq_id.encode()),), app_id, (DLQ, POSTINGS),
                      event_id=event_id)
