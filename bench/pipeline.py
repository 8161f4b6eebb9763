"""``python -m bench.pipeline``: the whole benchmark on a fresh embedded broker.

1. generate the deterministic workload (``bench.workload``) and validate every distinct event
   with the canonical schema;
2. start a fresh embedded Tansu broker, create the rcm.* topics and the references' output
   topics with 4 partitions, pre-produce the workload to rcm.events (acks=all);
3. run the systems one after another, each in a fresh process with its own consumer group
   from the start of rcm.events: the two bare Faust ceilings (they time themselves and exit),
   then plain aiokafka, Quix Streams, the rcmflow worker and the Faust echo diagnostic; each
   producing system first works off the backlog (throughput from its output records'
   timestamps, output checks), then, still running, gets fresh events at a steady rate
   (event -> delta latency) before it is stopped;
4. print the table, write bench/RESULTS.md (full runs) and the raw numbers to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.kafkautil import OutputWatch, Record, create_topics, produce_all, read_from
from bench.latency import Collector, LatencyResult, send_steady, summarize
from bench.load import LoadSampler
from bench.procs import REPO_ROOT, SystemProcess
from bench.report import (
    SystemResult,
    format_table,
    load_note,
    machine_info,
    ratio,
    write_results_md,
)
from bench.systems import DISPLAY_ORDER, SYSTEM_ORDER, SYSTEMS, System, parse_output
from bench.workload import (
    DEFAULT_ACCOUNTS,
    DEFAULT_EVENTS,
    DEFAULT_REPLAY_RATIO,
    QUICK_ACCOUNTS,
    QUICK_EVENTS,
    WORKLOAD_ID_PREFIX,
    Workload,
    WorkloadSpec,
    encode,
    generate,
    payment_doc,
    validate,
)
from rcmflow.broker import EmbeddedBroker, ensure_topics
from rcmflow.kafka_connection import KafkaConnection
from rcmflow.streams.topics import DLQ, EVENTS, topic_specs

BENCH_DIR = Path(__file__).resolve().parent
FIRST_OUTPUT_TIMEOUT_S = 120.0
STALL_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0
PROFILE_BUCKET_MS = 5_000
QUIET_FOR_S = 30.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Context:
    kafka: KafkaConnection
    run_dir: Path
    partitions: int
    workload: Workload
    #: Steady rates of the latency phases, events/s; the first is the table's main one.
    latency_rates: list[float]
    latency_seconds: float
    seed: int
    results: dict[str, SystemResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Events the harness added to rcm.events after the workload (warm-up and latency
    #: payments), per account: [count, cents]. Systems that run later consume them too.
    extra: dict[str, list[int]] = field(default_factory=dict)
    load: LoadSampler = field(default_factory=LoadSampler)

    @property
    def bootstrap(self) -> str:
        return self.kafka.servers[0]

    @property
    def extra_events(self) -> int:
        return sum(count for count, _ in self.extra.values())

    def add_extra(self, sent: dict[tuple[str, str], int], amounts: dict[str, int]) -> None:
        for (account, _event_id) in sent:
            entry = self.extra.setdefault(account, [0, 0])
            entry[0] += 1
        for account, cents in amounts.items():
            self.extra.setdefault(account, [0, 0])[1] += cents

    def workdir(self, system: System) -> Path:
        path = self.run_dir / system.key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def process(self, system: System, phase: str) -> SystemProcess:
        expected = len(self.workload.records) + self.extra_events
        argv, env = system.command(self.bootstrap, self.workdir(system), expected,
                                   self.partitions)
        return SystemProcess(system.key, argv, env,
                             self.run_dir / "logs" / f"{system.key}-{phase}.log")


# --------------------------------------------------------------------------- throughput


async def _wait_for_outputs(watch: OutputWatch, proc: SystemProcess, target: int) -> str | None:
    """Poll the output topic's high watermark until ``target``; an error text on failure."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    last_total, last_change = -1, started
    while True:
        await asyncio.sleep(0.5)
        if proc.exited() is not None:
            return f"process exited with code {proc.exited()} before its outputs were complete"
        total = await watch.total()
        now = loop.time()
        if total >= target:
            return None
        if total != last_total:
            last_total, last_change = total, now
        limit = FIRST_OUTPUT_TIMEOUT_S if total == 0 else STALL_TIMEOUT_S
        if now - last_change > limit:
            return (f"no progress for {limit:.0f} s: {total} of {target} output records "
                    "(see the log tail)")


def _check_outputs(ctx: Context, system: System, records: list[Record],
                   res: SystemResult, extra_expected: dict[str, list[int]]) -> None:
    """Every output of the run: exactly one distinct delta per new money-moving event."""
    workload = ctx.workload
    if system.echoes:  # one output per input record, replays included
        expected = res.events_in + sum(int(lat.get("sent") or 0) for lat in res.latencies)
        res.outputs, res.outputs_expected = len(records), expected
        res.check_ok = len(records) == expected
        res.check_notes.append(f"{len(records):,} records echoed of {expected:,} consumed")
        return
    keys: set[tuple[str, str]] = set()
    workload_keys = 0
    posting_ids: set[str] = set()
    versions: dict[str, int] = {}
    balances: dict[str, int | None] = {}
    wrong_key = unbalanced = 0
    for record in records:
        doc = parse_output(record.value)
        account, event_id = doc["account"], doc["event_id"]
        if (account, event_id) not in keys:
            keys.add((account, event_id))
            workload_keys += event_id.startswith(WORKLOAD_ID_PREFIX)
        if record.key != account.encode():
            wrong_key += 1
        if system.key == "rcmflow":
            posting_ids.add(doc["posting_id"])
            lines = doc.get("lines", [])
            if sum(x["debit_cents"] for x in lines) != sum(x["credit_cents"] for x in lines):
                unbalanced += 1
        version = int(doc["account_version"])
        if version > versions.get(account, 0):
            versions[account] = version
            balances[account] = doc.get("balance_cents")
    extra_total = sum(count for count, _ in extra_expected.values())
    expected_total = workload.expected_deltas + extra_total
    res.outputs = len(records)
    res.outputs_distinct = len(keys)
    res.outputs_expected = expected_total
    notes = res.check_notes
    ok = workload_keys == workload.expected_deltas and len(keys) == expected_total
    notes.append(f"{workload_keys:,} distinct deltas of {workload.expected_deltas:,} expected for "
                 f"the workload, {len(keys) - workload_keys:,} of {extra_total:,} for latency "
                 "events")
    if len(records) != len(keys):
        notes.append(f"{len(records) - len(keys):,} duplicate output records")
    if system.key == "rcmflow":
        notes.append(f"{len(posting_ids):,} distinct posting_ids")
        ok &= len(posting_ids) == len(keys)
        if unbalanced:
            notes.append(f"{unbalanced} unbalanced deltas")
            ok = False
    if wrong_key:
        notes.append(f"{wrong_key} records not keyed by their account")
        ok = False
    bad_versions = sum(
        1 for a, v in workload.expected_versions.items()
        if versions.get(a) != v + extra_expected.get(a, [0, 0])[0])
    notes.append(f"final account_version wrong for {bad_versions} accounts")
    ok &= bad_versions == 0
    if system.key != "rcmflow":
        bad_balances = sum(
            1 for a, b in workload.expected_balances.items()
            if balances.get(a) != b - extra_expected.get(a, [0, 0])[1])
        notes.append(f"final balance wrong for {bad_balances} accounts")
        ok &= bad_balances == 0
    res.check_ok = ok


async def run_producing(ctx: Context, system: System) -> SystemResult:
    """Throughput over the pre-produced workload, then the latency phase, in one process."""
    assert system.output_topic is not None
    backlog_extra = ctx.extra_events
    res = SystemResult(system.key, system.label,
                       events_in=len(ctx.workload.records) + backlog_extra,
                       backlog_extra=backlog_extra)
    proc = ctx.process(system, "run")
    async with OutputWatch(ctx.kafka, system.output_topic, ctx.partitions) as watch:
        start = await watch.highwaters()
        # The echo emits every record it consumes; the others one delta per new money event.
        outputs = res.events_in if system.echoes else \
            ctx.workload.expected_deltas + backlog_extra
        target = sum(start.values()) + outputs
        started_wall = time.time()
        proc.start()
        log(f"{system.label}: started pid {proc.pid}; waiting for "
            f"{outputs:,} outputs on {system.output_topic}"
            + (f" ({backlog_extra:,} of them for earlier latency events)" if backlog_extra
               else ""))
        error = await _wait_for_outputs(watch, proc, target)
    proc.read_vmhwm()
    res.peak_rss_mb = proc.peak_rss_mb
    if error:
        res.error = error
        res.log_tail = proc.log_tail()
        log(f"{system.label}: FAILED: {error}\n{res.log_tail}")
        res.exit_code = await proc.stop()
    else:
        # Everything on the output topic now is the backlog's output (the latency phase has
        # not begun): its first and last CreateTime bound the run over the backlog.
        records = await read_from(ctx.kafka, system.output_topic, start)
        if records:
            stamps = [r.timestamp_ms for r in records]
            res.window_s = (max(stamps) - min(stamps)) / 1000
            res.events_per_s = res.events_in / res.window_s if res.window_s > 0 else None
            res.first_output_after_start_s = min(stamps) / 1000 - started_wall
            res.rate_method = "backlog events / (last - first output record CreateTime)"
            first = min(stamps)
            profile = [0] * ((max(stamps) - first) // PROFILE_BUCKET_MS + 1)
            for stamp in stamps:
                profile[(stamp - first) // PROFILE_BUCKET_MS] += 1
            res.output_profile = profile
        log(f"{system.label}: {_fmt(res.events_per_s)} events/s over {_fmt(res.window_s, 2)} s,"
            f" peak RSS {_fmt(res.peak_rss_mb, 1)} MB; latency phase next")
        # Lowest rate first: a phase that saturates the system must not delay the next one.
        for rate in sorted(ctx.latency_rates):
            res.latencies.append(await latency_phase(ctx, system, proc, rate))
        res.latency = next(lat for lat in res.latencies
                           if lat["rate_target"] == ctx.latency_rates[0])
        res.exit_code = await proc.stop()
        res.latency_peak_rss_mb = proc.peak_rss_mb
        if any(lat.get("error") for lat in res.latencies):
            res.log_tail = proc.log_tail()
    printed = proc.result()
    res.log_findings = proc.log_findings()
    if printed and printed.get("first_consumed_wall"):
        last = printed.get("last_acked_wall") or printed.get("last_processed_wall")
        first = printed["first_consumed_wall"]
        # Only meaningful over the backlog: the process ran on through the latency phase.
        if isinstance(last, (int, float)) and isinstance(first, (int, float)) and last > first:
            res.check_notes.append(
                f"self-reported {printed.get('consumed'):,} consumed, {printed.get('new'):,} "
                f"new, {printed.get('replays'):,} replays, {printed.get('deltas'):,} deltas")
    records = await read_from(ctx.kafka, system.output_topic, start)
    _check_outputs(ctx, system, records, res, {a: list(v) for a, v in ctx.extra.items()})
    if system.key == "rcmflow":
        dlq = await read_from(ctx.kafka, DLQ, {p: 0 for p in range(ctx.partitions)})
        res.check_notes.append(f"{len(dlq)} records on {DLQ}")
        if dlq:
            res.check_ok = False
    if res.exit_code not in (0, None):
        res.check_notes.append(f"exit code {res.exit_code} after SIGTERM")
    log(f"{system.label}: {res.outputs} outputs, check {'OK' if res.check_ok else 'FAIL'} "
        f"({'; '.join(res.check_notes)})")
    return res


async def throughput_ceiling(ctx: Context, system: System) -> SystemResult:
    expected = len(ctx.workload.records) + ctx.extra_events
    res = SystemResult(system.key, system.label, events_in=expected)
    proc = ctx.process(system, "run").start()
    log(f"{system.label}: started pid {proc.pid}; it exits after {expected:,} events")
    code = await proc.wait(FIRST_OUTPUT_TIMEOUT_S + expected / 1_000)
    if code is None:
        res.error = "did not count every event in time"
        res.log_tail = proc.log_tail()
    res.exit_code = await proc.stop()
    res.peak_rss_mb = proc.peak_rss_mb
    res.log_findings = proc.log_findings()
    printed = proc.result()
    if printed:
        res.events_per_s = printed.get("events_per_s")  # type: ignore[assignment]
        res.window_s = printed.get("elapsed_s")  # type: ignore[assignment]
        res.rate_method = "events / (perf_counter last consumed - first consumed), in-process"
        res.check_ok = printed.get("consumed") == expected
        res.check_notes.append(f"consumed {printed.get('consumed'):,} of {expected:,}")
    elif not res.error:
        res.error = "printed no result"
        res.log_tail = proc.log_tail()
    if res.error:
        log(f"{system.label}: FAILED: {res.error}\n{res.log_tail}")
    log(f"{system.label}: {_fmt(res.events_per_s)} events/s, peak RSS "
        f"{_fmt(res.peak_rss_mb, 1)} MB")
    return res


# --------------------------------------------------------------------------- latency


async def latency_phase(ctx: Context, system: System, proc: SystemProcess,
                        rate: float) -> dict[str, Any]:
    """Fresh events at a steady rate into the running, caught-up system."""
    assert system.output_topic is not None
    lat = LatencyResult(rate_target=rate)
    tag = f"{system.key}-r{rate:.0f}"
    accounts = list(ctx.workload.expected_versions)
    alive = lambda: proc.exited() is None  # noqa: E731
    try:
        async with OutputWatch(ctx.kafka, system.output_topic, ctx.partitions) as watch:
            start = await watch.highwaters()
        await asyncio.sleep(1.0)
        log(f"{system.label}: sending {rate:,.0f} events/s for {ctx.latency_seconds:.0f} s")
        sent, amounts, lat.rate_achieved = await send_steady(
            ctx.kafka, accounts, tag, rate, ctx.latency_seconds, ctx.seed)
        ctx.add_extra(sent, amounts)
        async with Collector(ctx.kafka, system.output_topic, start,
                             f"lat-{tag}-".encode()) as collector:
            complete = await collector.until(set(sent), DRAIN_TIMEOUT_S, alive)
            summarize(lat, sent, collector.seen)
        if not complete:
            lat.error = f"{lat.missing} of {lat.sent} events got no delta in time"
    except Exception as exc:  # a failed phase is reported, the run goes on
        lat.error = f"{type(exc).__name__}: {exc}"
    if lat.error:
        log(f"{system.label}: latency FAILED: {lat.error}")
    log(f"{system.label}: latency at {rate:,.0f}/s: p50 {_fmt(lat.p50_ms)} ms, p99 "
        f"{_fmt(lat.p99_ms)} ms, max "
        f"{_fmt(lat.max_ms)} ms ({lat.matched}/{lat.sent} matched, {lat.rate_achieved:,.0f}/s)")
    latency = asdict(lat)
    latency.pop("samples_ms")
    return latency


# --------------------------------------------------------------------------- main


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


async def run(ctx: Context, systems: list[System]) -> None:
    ctx.load.start()
    try:
        await _run(ctx, systems)
    finally:
        await ctx.load.stop()


async def _run(ctx: Context, systems: list[System]) -> None:
    specs = topic_specs("rcmflow")
    await ensure_topics(ctx.kafka, specs, ctx.partitions, 1)
    await create_topics(ctx.kafka, [s.output_topic for s in systems
                                      if s.output_topic and s.key != "rcmflow"], ctx.partitions)
    log(f"producing {len(ctx.workload.records):,} events to {EVENTS} (acks=all) ...")
    t0 = time.perf_counter()
    per_partition = await produce_all(ctx.kafka, EVENTS, ctx.workload.records)
    elapsed = time.perf_counter() - t0
    log(f"produced in {elapsed:.1f} s ({len(ctx.workload.records) / elapsed:,.0f}/s), per "
        f"partition {dict(sorted(per_partition.items()))}")
    for system in systems:
        mark = ctx.load.mark()
        if system.produces:
            ctx.results[system.key] = await run_producing(ctx, system)
        else:
            ctx.results[system.key] = await throughput_ceiling(ctx, system)
        ctx.results[system.key].foreign_cores = ctx.load.cores_between(mark, ctx.load.mark())


def _wait_quiet(timeout_s: float, quiet_for_s: float = QUIET_FOR_S) -> None:
    """Report the background load; with a timeout, first wait until other processes stayed
    below 0.1 cores for ``quiet_for_s`` in a row."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while True:
        busy_cores = psutil.cpu_percent(interval=5.0) / 100 * (os.cpu_count() or 1)
        now = time.monotonic()
        quiet_since = (quiet_since or now - 5.0) if busy_cores < 0.1 else None
        if (quiet_since is not None and now - quiet_since >= quiet_for_s) or now >= deadline:
            log(f"background load before the run: {busy_cores:.2f} cores")
            return
        if timeout_s > 0 and busy_cores >= 0.1:
            log(f"background load {busy_cores:.2f} cores; waiting for a quiet machine")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--accounts", type=int, default=DEFAULT_ACCOUNTS)
    parser.add_argument("--replay-ratio", type=float, default=DEFAULT_REPLAY_RATIO)
    parser.add_argument("--seed", type=int, default=WorkloadSpec().seed)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_EVENTS:,} events, {QUICK_ACCOUNTS:,} accounts, "
                        "8 s latency phases; writes no RESULTS.md")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--systems", default=",".join(SYSTEM_ORDER),
                        help=f"comma-separated subset of {','.join(SYSTEM_ORDER)}")
    parser.add_argument("--latency-rates", default="1500,300",
                        help="steady rates of the latency phases, events/s, comma-separated; "
                        "the first is the table's main one (default 1500,300)")
    parser.add_argument("--latency-seconds", type=float, default=None,
                        help="default 15 (8 with --quick)")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="default bench/RESULTS.md for full runs, none for --quick")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the machine to be quiet (other "
                        "processes below 0.1 cores for --quiet-for seconds in a row)")
    parser.add_argument("--quiet-for", type=float, default=QUIET_FOR_S, metavar="SECONDS",
                        help=f"with --wait-quiet (default {QUIET_FOR_S:.0f})")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, "
                        "state) even when everything passed")
    args = parser.parse_args(argv)
    events, accounts = args.events, args.accounts
    if args.quick:
        events, accounts = QUICK_EVENTS, QUICK_ACCOUNTS
    latency_seconds = args.latency_seconds or (8.0 if args.quick else 15.0)
    latency_rates = [float(r) for r in args.latency_rates.split(",") if r]
    results_md = args.results_md or (None if args.quick else BENCH_DIR / "RESULTS.md")
    try:
        # In the order given: the default order is the one the method describes.
        systems = [SYSTEMS[key] for key in args.systems.split(",") if key]
    except KeyError as exc:
        parser.error(f"unknown system {exc}")
    _wait_quiet(args.wait_quiet, args.quiet_for)
    started_at = datetime.now(UTC).astimezone()
    started = time.monotonic()

    spec = WorkloadSpec(events, accounts, args.replay_ratio, args.seed)
    workload = generate(spec)
    distinct = validate([v for _, v in workload.records])
    validate([encode(payment_doc("ACC0000001", "lat-check", 100))])
    log(f"workload: {len(workload.records):,} events ({distinct:,} distinct, "
        f"{workload.replays:,} replays), {workload.bytes_total / 1e6:.1f} MB, all valid; "
        f"expected deltas {workload.expected_deltas:,}")

    run_dir = Path(tempfile.mkdtemp(prefix="rcmflow-bench-"))
    (run_dir / "logs").mkdir()
    broker = EmbeddedBroker(log_file=run_dir / "logs" / "broker.log").start()
    log(f"embedded broker at {broker.bootstrap} (run dir {run_dir})")
    ctx = Context(broker.connection, run_dir, args.partitions, workload, latency_rates,
                  latency_seconds, args.seed)
    try:
        asyncio.run(run(ctx, systems))
    finally:
        broker.stop()
    wall_s = time.monotonic() - started

    results = [ctx.results[key] for key in DISPLAY_ORDER if key in ctx.results]
    rate = {k: r.events_per_s for k, r in ctx.results.items()}
    ratios = {"faust": ratio(rate.get("rcmflow"), rate.get("faust-plain")),
              "quix": ratio(rate.get("rcmflow"), rate.get("quix")),
              "aiokafka": ratio(rate.get("rcmflow"), rate.get("aiokafka"))}
    failed = [r.label for r in results if r.error or r.check_ok is False
              or any(lat.get("error") for lat in r.latencies)]
    for r in results:
        if r.outputs is not None and r.outputs_distinct is not None \
                and r.outputs > r.outputs_distinct:
            ctx.notes.append(f"{r.label} emitted {r.outputs - r.outputs_distinct:,} duplicate "
                             "output records in the throughput run")
    if failed:
        ctx.notes.append(f"failed checks: {', '.join(failed)}; logs kept in {run_dir}")
    load = ctx.load.summary()
    machine = machine_info(REPO_ROOT)
    workload_info = {"events": len(workload.records), "accounts": spec.accounts,
                     "replays": workload.replays, "replay_ratio": spec.replay_ratio,
                     "seed": spec.seed, "kinds": workload.kinds,
                     "expected_deltas": workload.expected_deltas,
                     "megabytes": workload.bytes_total / 1e6, "partitions": args.partitions}
    latency_cfg = {"rates": latency_rates, "seconds": latency_seconds}
    command = "python -m bench.pipeline" + (" " + shlex.join(argv if argv is not None
                                                           else sys.argv[1:])).rstrip()
    results_dir = BENCH_DIR / "results"
    results_dir.mkdir(exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%S")
    json_path = results_dir / f"{stamp}-{'quick' if args.quick else 'full'}.json"
    json_path.write_text(json.dumps({
        "started_at": started_at.isoformat(), "command": command, "wall_s": wall_s,
        "machine": machine, "workload": workload_info, "latency": latency_cfg,
        "ratios": ratios, "results": [asdict(r) for r in results], "notes": ctx.notes,
        "load": load,
    }, indent=2))

    print()
    print(format_table(results, latency_rates))
    print()
    print(f"ratio vs Faust ceiling: {ratios['faust']}")
    print(f"ratio vs Quix Streams: {ratios['quix']}")
    print(f"ratio vs plain aiokafka: {ratios['aiokafka']}")
    print(f"machine load: {load_note(load)}")
    for note in ctx.notes:
        print(f"note: {note}")
    print(f"\nraw numbers: {json_path}; bench wall time {wall_s:.0f} s")
    if results_md is not None:
        write_results_md(results_md, started=started_at, command=command, machine=machine,
                         workload=workload_info, results=results, ratios=ratios,
                         latency_cfg=latency_cfg, notes=ctx.notes, wall_s=wall_s,
                         json_path=json_path, load=load)
        print(f"wrote {results_md}")
    if failed or args.keep:
        print(f"run directory kept: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
