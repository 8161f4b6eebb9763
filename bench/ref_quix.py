"""The peer a user would pick: a Quix Streams Application with RocksDB state.

At-least-once (its default; the transactional producer of exactly-once needs InitProducerId,
which the embedded Tansu broker lacks), producer idempotence off for the same reason. State
per account key in Quix's RocksDB store (changelogged): ``v`` version, ``b`` balance in cents,
``e:<event_id>`` the content digest of each applied event. One JSON delta per new money-moving
event to its own output topic; the output record's timestamp is set to the processing wall
clock (Quix would otherwise copy the input record's timestamp). Runs until SIGTERM, then prints
its own counters (``BENCH_RESULT {...}``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from quixstreams import Application, State

from bench.reference import (
    MONEY_KINDS,
    balance_effect,
    delta_json,
    digest,
    emit_result,
    reference_arguments,
)

COUNTS = {"consumed": 0, "new": 0, "replays": 0, "conflicts": 0, "deltas": 0}
TIMES: dict[str, float | None] = {"first_consumed_wall": None, "last_processed_wall": None}


def process(value: bytes, state: State) -> bytes | None:
    COUNTS["consumed"] += 1
    now = time.time()
    if TIMES["first_consumed_wall"] is None:
        TIMES["first_consumed_wall"] = now
    TIMES["last_processed_wall"] = now
    doc = json.loads(value)
    seen_key = "e:" + doc["event_id"]
    content = digest(value)
    known = state.get(seen_key)
    if known is not None:
        COUNTS["replays" if known == content else "conflicts"] += 1
        return None
    state.set(seen_key, content)
    COUNTS["new"] += 1
    version = int(state.get("v", 0)) + 1
    effect = balance_effect(doc)
    balance = int(state.get("b", 0)) + effect
    state.set("v", version)
    state.set("b", balance)
    if doc["kind"] not in MONEY_KINDS:
        return None
    COUNTS["deltas"] += 1
    return delta_json(doc, version, effect, balance)


def wall_clock_ms(value: Any, key: Any, timestamp: int, headers: Any) -> int:
    return int(time.time() * 1000)


def main() -> None:
    parser = reference_arguments(__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        processing_guarantee="at-least-once",
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000},
        producer_extra_config={"enable.idempotence": False, "acks": "all"},
    )
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    sink = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
    sdf = app.dataframe(source)
    sdf = sdf.apply(process, stateful=True).filter(lambda delta: delta is not None)
    sdf = sdf.set_timestamp(wall_clock_ms)
    sdf.to_topic(sink)
    try:
        app.run()
    finally:
        emit_result(system="quix", **TIMES, **COUNTS)


if __name__ == "__main__":
    main()
