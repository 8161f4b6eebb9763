"""Where a worker's CPU goes: a summary of the folded stacks ``--py-spy`` records.

    python -m bench.pipeline --broker kafka --systems rcmflow --py-spy
    python -m bench.profile_summary RUN_DIR/profiles/rcmflow-backlog-*.txt

py-spy samples only threads that are running (idle waits are not in the stacks), so a share
is of the worker's busy time. Prints the buckets the README names (Faust's consumption and the
event loop, rcmflow's processing and writing, producing) as shares of all samples, then the
children of the frames given with ``--expand`` (default: the pipeline's main steps).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

__all__ = ["load", "short", "inclusive", "children", "BUCKETS"]

#: Frame prefix -> bucket; a sample counts for the first bucket whose frame is on its stack
#: (from the innermost frame outwards), so nested buckets are not counted twice.
BUCKETS: dict[str, str] = {
    "state_json": "state snapshot JSON (state_records)",
    "AccountTables.state_records": "state snapshot JSON (state_records)",
    "AccountTables.store": "RocksDB writes (store)",
    "AccountTables.dedup_records": "dedup changelog records",
    "AccountTables.load_dedup": "dedup lookups (RocksDB get)",
    "AccountTables.load_state": "state lookups",
    "event_digest": "event digest (sha256 of the canonical event)",
    "Processor._decode": "decode + validate the event (pydantic)",
    "apply": "posting rules and state update (core.apply)",
    "Processor._one": "processor, other",
    "Outbox.send": "producing (outbox: record batches, acks)",
    "Outbox.commit": "producing (outbox: record batches, acks)",
    "Pipeline.handle": "pipeline, other",
    "Sender.": "producing (aiokafka sender)",
    "BatchBuilder": "producing (aiokafka sender)",
    "Fetcher.": "Faust/aiokafka consumer (fetch, drain, events)",
    "Consumer._drain_messages": "Faust/aiokafka consumer (fetch, drain, events)",
    "Conductor.": "Faust/aiokafka consumer (fetch, drain, events)",
    "Stream.": "Faust/aiokafka consumer (fetch, drain, events)",
    "Schema.compile": "Faust/aiokafka consumer (fetch, drain, events)",
    "App.create_event": "Faust/aiokafka consumer (fetch, drain, events)",
}


def load(paths: list[Path]) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    return stacks


def short(frame: str) -> str:
    """``function (path/inside/package.py)`` without site-packages or checkout prefixes."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    path = re.sub(r".*/site-packages/", "", path)
    path = re.sub(r".*/(rcmflow|streams|tables|bench)/", r"\1/", path)
    return f"{function} ({path})"


def _frames(stack: str) -> list[str]:
    return [short(f) for f in stack.split(";")]


def inclusive(stacks: Counter[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        for frame in set(_frames(stack)):
            out[frame] += n
    return out


def children(stacks: Counter[str], prefix: str) -> tuple[int, Counter[str]]:
    """Samples under the outermost frame starting with ``prefix``, split by its callee."""
    total = 0
    kids: Counter[str] = Counter()
    for stack, n in stacks.items():
        frames = _frames(stack)
        at = next((i for i, f in enumerate(frames) if f.startswith(prefix)), None)
        if at is None:
            continue
        total += n
        kids[frames[at + 1] if at + 1 < len(frames) else "(itself)"] += n
    return total, kids


def buckets(stacks: Counter[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        name = "other (event loop, startup, partial stacks)"
        for frame in reversed(_frames(stack)):
            hit = next((b for prefix, b in BUCKETS.items() if frame.startswith(prefix)), None)
            if hit:
                name = hit
                break
        out[name] += n
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--expand", action="append",
                        default=None, help="frame prefix whose callees to list")
    parser.add_argument("--events", type=int, default=0,
                        help="events processed in the profiled phase, with --cpu-s: µs/event")
    parser.add_argument("--cpu-s", type=float, default=0.0,
                        help="the process's CPU seconds in the phase (RESULTS.md Details)")
    args = parser.parse_args(argv)
    stacks = load(args.profiles)
    total = sum(stacks.values())
    per_event = args.cpu_s / args.events * 1e6 if args.events and args.cpu_s else None
    print(f"{total:,} samples (busy time only)"
          + (f"; {per_event:,.0f} µs of CPU per event" if per_event else ""))
    for name, n in buckets(stacks).most_common():
        extra = f"  ~{per_event * n / total:,.0f} µs/event" if per_event else ""
        print(f"{n / total:6.1%}  {name}{extra}")
    for prefix in args.expand or ["Pipeline.handle ", "Processor._one ",
                                  "Pipeline._write_in", "apply (streams"]:
        under, kids = children(stacks, prefix)
        if not under:
            continue
        print(f"\n{prefix.strip()}: {under / total:.1%}")
        for kid, n in kids.most_common(12):
            print(f"  {n / total:6.1%}  {kid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
