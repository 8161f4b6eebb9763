"""``python -m bench.pipeline [--broker tansu|kafka]``: the whole benchmark on a fresh broker.

1. generate the deterministic workload (``bench.workload``) and validate every distinct event
   with the canonical schema;
2. start a fresh broker (``bench.brokers``: embedded Tansu, or a single-node Apache Kafka in the
   run directory), create the rcm.* topics and the references' output topics with 4
   partitions, pre-produce the workload to rcm.events (acks=all);
3. run the systems one after another, each in a fresh process (or processes: rcmflow-2w) with
   its own consumer group from the start of rcm.events: the two bare Faust ceilings (they time
   themselves and exit), then plain aiokafka, Quix Streams, the rcmflow worker (on Kafka also
   with exactly_once, and two workers) and the Faust echo diagnostic; each producing system
   first works off the backlog (throughput from its output records' timestamps, output
   checks), then, still running, gets fresh events at a steady rate (event -> delta latency)
   before it is stopped; the rcmflow variants share the rcm.* output topics, which are
   deleted and created again between them;
4. print the table, write the raw numbers to bench/results/; a full run also keeps them as
   bench/runs/<broker>.json (committed) and writes that broker's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.brokers import BROKERS, BenchBroker, BrokerKind, start_broker
from bench.kafkautil import (
    CommittedCount,
    OutputWatch,
    Record,
    create_topics,
    delete_topics,
    produce_all,
    read_from,
)
from bench.latency import Collector, LatencyResult, VisibleProbe, send_steady, stats, summarize
from bench.load import LoadSampler
from bench.procs import REPO_ROOT, ProcessGroup, SystemProcess
from bench.report import (
    RUNS_DIR,
    SystemResult,
    compute_ratios,
    format_table,
    load_note,
    machine_info,
    ratio_lines,
    write_results_md,
)
from bench.systems import (
    DEFAULT_SYSTEMS,
    DISPLAY_ORDER,
    SYSTEM_ORDER,
    SYSTEMS,
    System,
    parse_output,
)
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
from rcmflow.runtime.broker import ensure_topics
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.topics import ACCOUNTS, DLQ, EVENTS, POSTINGS, dedup_changelog, topic_specs

BENCH_DIR = Path(__file__).resolve().parent
FIRST_OUTPUT_TIMEOUT_S = 120.0
STALL_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0
PROFILE_BUCKET_MS = 5_000
QUIET_FOR_S = 30.0
#: --wait-quiet: before each system, wait (up to --wait-quiet-system seconds) until other
#: processes used less than QUIET_BELOW_CORES over the last SYSTEM_QUIET_FOR_S seconds.
QUIET_BELOW_CORES = 0.1
SYSTEM_QUIET_FOR_S = 15.0


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
    broker: BrokerKind = "tansu"
    results: dict[str, SystemResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Events the harness added to rcm.events after the workload (warm-up and latency
    #: payments), per account: [count, cents]. Systems that run later consume them too.
    extra: dict[str, list[int]] = field(default_factory=dict)
    load: LoadSampler = field(default_factory=LoadSampler)
    #: With --wait-quiet: the longest wait for a quiet machine before each system.
    wait_quiet_s: float = 0.0
    #: Sample the rcmflow workers with py-spy (``--py-spy``; perturbs the numbers).
    py_spy: bool = False
    #: rcmflow variants that ran already (they share rcm.postings, rcm.accounts, rcm.dlq).
    rcmflow_ran: list[str] = field(default_factory=list)

    @property
    def visible_probe(self) -> bool:
        """Latency also as seen by a reader in its own process (bench.probe): on Kafka."""
        return self.broker == "kafka"

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

    def process(self, system: System, phase: str) -> SystemProcess | ProcessGroup:
        expected = len(self.workload.records) + self.extra_events
        argv, env = system.command(self.bootstrap, self.workdir(system), expected,
                                   self.partitions)
        if system.workers == 1:
            return SystemProcess(system.key, argv, env,
                                 self.run_dir / "logs" / f"{system.key}-{phase}.log")
        return ProcessGroup([
            SystemProcess(system.key, argv, env,
                          self.run_dir / "logs" / f"{system.key}-{phase}-w{n}.log")
            for n in range(1, system.workers + 1)])


# --------------------------------------------------------------------------- throughput


async def _wait_for_outputs(watch: OutputWatch | CommittedCount,
                            proc: SystemProcess | ProcessGroup, target: int) -> str | None:
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
        if system.is_rcmflow:
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
    if system.is_rcmflow:
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
    if not system.is_rcmflow:
        bad_balances = sum(
            1 for a, b in workload.expected_balances.items()
            if balances.get(a) != b - extra_expected.get(a, [0, 0])[1])
        notes.append(f"final balance wrong for {bad_balances} accounts")
        ok &= bad_balances == 0
    res.check_ok = ok


async def reset_rcmflow_topics(ctx: Context, system: System) -> None:
    """The rcmflow variants share rcm.postings, rcm.accounts (the accounts table's changelog:
    a later variant would restore an earlier one's accounts) and rcm.dlq: delete them and
    create them again, empty, before a second variant runs."""
    earlier = ctx.rcmflow_ran
    names = [POSTINGS, ACCOUNTS, DLQ, *(dedup_changelog(SYSTEMS[k].group) for k in earlier)]
    log(f"{system.label}: deleting {', '.join(names)} (written by {', '.join(earlier)}) and "
        "creating the rcm.* topics again")
    await delete_topics(ctx.kafka, names)
    await ensure_topics(ctx.kafka, topic_specs(system.group), ctx.partitions, 1)


class _Profiler:
    """py-spy on the rcmflow worker processes (``--py-spy``): raw folded stacks per phase."""

    def __init__(self, ctx: Context, system: System) -> None:
        self.enabled = ctx.py_spy and system.is_rcmflow
        self.dir = ctx.run_dir / "profiles"
        self.system = system
        #: The processes to sample (set once they started).
        self.pids: list[int] = []
        self.running: list[SystemProcess] = []

    def start(self, phase: str) -> None:
        if not self.enabled:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        for pid in self.pids:
            out = self.dir / f"{self.system.key}-{phase}-{pid}.txt"
            self.running.append(SystemProcess(
                "py-spy", [spy, "record", "--nonblocking", "--rate", "100", "--format", "raw",
                           "--pid", str(pid), "--output", str(out)],
                dict(os.environ), out.with_suffix(".log")).start())

    async def stop(self) -> None:
        for spy in self.running:
            if spy.exited() is None:
                spy.popen.send_signal(signal.SIGINT)  # type: ignore[union-attr]
                await spy.wait(30)
            await spy.stop()
        self.running.clear()


async def run_producing(ctx: Context, system: System) -> SystemResult:
    """Throughput over the pre-produced workload, then the latency phase, in one process."""
    assert system.output_topic is not None
    if system.is_rcmflow and ctx.rcmflow_ran:
        await reset_rcmflow_topics(ctx, system)
    if system.is_rcmflow:
        ctx.rcmflow_ran.append(system.key)
    backlog_extra = ctx.extra_events
    res = SystemResult(system.key, system.label,
                       events_in=len(ctx.workload.records) + backlog_extra,
                       backlog_extra=backlog_extra, workers=system.workers)
    proc = ctx.process(system, "run")
    async with OutputWatch(ctx.kafka, system.output_topic, ctx.partitions) as watch:
        start = await watch.highwaters()
    # The echo emits every record it consumes; the others one delta per new money event.
    outputs = res.events_in if system.echoes else ctx.workload.expected_deltas + backlog_extra
    target = sum(start.values()) + outputs
    progress: OutputWatch | CommittedCount = (
        CommittedCount(ctx.kafka, system.output_topic, start) if system.transactional
        else OutputWatch(ctx.kafka, system.output_topic, ctx.partitions))
    profiler = _Profiler(ctx, system)
    async with progress:
        started_wall = time.time()
        mark = ctx.load.mark()
        proc.start()
        profiler.pids = proc.pids if isinstance(proc, ProcessGroup) else [proc.pid]
        profiler.start("backlog")
        log(f"{system.label}: started pid {', '.join(map(str, profiler.pids))}; waiting for "
            f"{outputs:,} outputs on {system.output_topic}"
            + (f" ({backlog_extra:,} of them for earlier latency events)" if backlog_extra
               else ""))
        error = await _wait_for_outputs(progress, proc, target)
    await profiler.stop()
    res.cpu["backlog"] = ctx.load.split_between(mark, ctx.load.mark())
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
            mark = ctx.load.mark()
            profiler.start(f"r{rate:.0f}")
            res.latencies.append(await latency_phase(ctx, system, proc, rate))
            await profiler.stop()
            res.cpu[f"latency-{rate:.0f}"] = ctx.load.split_between(mark, ctx.load.mark())
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
        first_wall = printed["first_consumed_wall"]
        # Only meaningful over the backlog: the process ran on through the latency phase.
        if isinstance(last, (int, float)) and isinstance(first_wall, (int, float)) \
                and last > first_wall:
            res.check_notes.append(
                f"self-reported {printed.get('consumed'):,} consumed, {printed.get('new'):,} "
                f"new, {printed.get('replays'):,} replays, {printed.get('deltas'):,} deltas")
    records = await read_from(ctx.kafka, system.output_topic, start)
    _check_outputs(ctx, system, records, res, {a: list(v) for a, v in ctx.extra.items()})
    if system.is_rcmflow:
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
    mark = ctx.load.mark()
    proc = ctx.process(system, "run").start()
    log(f"{system.label}: started pid {proc.pid}; it exits after {expected:,} events")
    code = await proc.wait(FIRST_OUTPUT_TIMEOUT_S + expected / 1_000)
    res.cpu["backlog"] = ctx.load.split_between(mark, ctx.load.mark())
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


async def latency_phase(ctx: Context, system: System, proc: SystemProcess | ProcessGroup,
                        rate: float) -> dict[str, Any]:
    """Fresh events at a steady rate into the running, caught-up system.

    Tansu: the output is read after the sending, latency from the output records' CreateTime.
    Kafka: a reader in its own process (bench.probe, read_committed) runs while the events are
    sent and notes when each delta became visible too; a transactional system's latency is
    that (its CreateTime precedes the commit), the others' stays CreateTime, as on Tansu.
    """
    assert system.output_topic is not None
    lat = LatencyResult(rate_target=rate)
    tag = f"{system.key}-r{rate:.0f}"
    accounts = list(ctx.workload.expected_versions)
    alive = lambda: proc.exited() is None  # noqa: E731
    try:
        async with OutputWatch(ctx.kafka, system.output_topic, ctx.partitions) as watch:
            start = await watch.highwaters()
        if ctx.visible_probe:
            async with VisibleProbe(ctx.bootstrap, system.output_topic, start, f"lat-{tag}-",
                                    "read_committed", ctx.run_dir / "probes") as probe:
                await asyncio.sleep(1.0)
                log(f"{system.label}: sending {rate:,.0f} events/s for "
                    f"{ctx.latency_seconds:.0f} s")
                sent, amounts, lat.rate_achieved = await send_steady(
                    ctx.kafka, accounts, tag, rate, ctx.latency_seconds, ctx.seed)
                ctx.add_extra(sent, amounts)
                complete = await probe.until(set(sent), DRAIN_TIMEOUT_S, alive)
            lat.measure = "visible" if system.transactional else "created"
            summarize(lat, sent, probe.visible if system.transactional else probe.created)
            lat.created = stats(sent, probe.created)
            lat.visible = stats(sent, probe.visible)
        else:
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
    visible = (f"; visible p50 {_fmt(lat.visible.get('p50_ms'))} / p99 "
               f"{_fmt(lat.visible.get('p99_ms'))} ms" if lat.visible else "")
    log(f"{system.label}: latency at {rate:,.0f}/s ({lat.measure}): p50 {_fmt(lat.p50_ms)} ms, "
        f"p99 {_fmt(lat.p99_ms)} ms, max {_fmt(lat.max_ms)} ms ({lat.matched}/{lat.sent} "
        f"matched, {lat.rate_achieved:,.0f}/s){visible}")
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
                                    if s.output_topic and not s.is_rcmflow], ctx.partitions)
    log(f"producing {len(ctx.workload.records):,} events to {EVENTS} (acks=all) ...")
    t0 = time.perf_counter()
    per_partition = await produce_all(ctx.kafka, EVENTS, ctx.workload.records)
    elapsed = time.perf_counter() - t0
    log(f"produced in {elapsed:.1f} s ({len(ctx.workload.records) / elapsed:,.0f}/s), per "
        f"partition {dict(sorted(per_partition.items()))}")
    for system in systems:
        if ctx.wait_quiet_s > 0:
            load, waited = await ctx.load.wait_quiet(QUIET_BELOW_CORES, SYSTEM_QUIET_FOR_S,
                                                     ctx.wait_quiet_s)
            log(f"{system.label}: other processes used {_fmt(load, 2)} cores over the last "
                f"{SYSTEM_QUIET_FOR_S:.0f} s" + (f" (waited {waited:.0f} s)" if waited >= 1
                                                  else ""))
        mark = ctx.load.mark()
        if system.produces:
            ctx.results[system.key] = await run_producing(ctx, system)
        else:
            ctx.results[system.key] = await throughput_ceiling(ctx, system)
        if ctx.wait_quiet_s > 0:
            ctx.results[system.key].quiet_wait_s = round(waited, 1)
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
    parser.add_argument("--broker", choices=BROKERS, default="tansu",
                        help="embedded Tansu (default) or a fresh single-node Apache Kafka")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--accounts", type=int, default=DEFAULT_ACCOUNTS)
    parser.add_argument("--replay-ratio", type=float, default=DEFAULT_REPLAY_RATIO)
    parser.add_argument("--seed", type=int, default=WorkloadSpec().seed)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_EVENTS:,} events, {QUICK_ACCOUNTS:,} accounts, "
                        "8 s latency phases; writes no RESULTS.md")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--systems", default=None,
                        help=f"comma-separated subset of {','.join(SYSTEM_ORDER)}; default: "
                        f"tansu {','.join(DEFAULT_SYSTEMS['tansu'])}, kafka all")
    parser.add_argument("--latency-rates", default="1500,300",
                        help="steady rates of the latency phases, events/s, comma-separated; "
                        "the first is the table's main one (default 1500,300)")
    parser.add_argument("--latency-seconds", type=float, default=None,
                        help="default 15 (8 with --quick)")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="default bench/RESULTS.md for full runs (default workload, "
                        "systems and latency phases), none for quick or partial runs")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the machine to be quiet (other "
                        "processes below 0.1 cores for --quiet-for seconds in a row)")
    parser.add_argument("--quiet-for", type=float, default=QUIET_FOR_S, metavar="SECONDS",
                        help=f"with --wait-quiet (default {QUIET_FOR_S:.0f})")
    parser.add_argument("--wait-quiet-system", type=float, default=180.0, metavar="SECONDS",
                        help="with --wait-quiet, also wait up to SECONDS before each system "
                        f"until other processes used < {QUIET_BELOW_CORES} cores over "
                        f"{SYSTEM_QUIET_FOR_S:.0f} s (default 180; 0: off)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, "
                        "state) even when everything passed")
    parser.add_argument("--py-spy", action="store_true",
                        help="sample the rcmflow workers with py-spy (folded stacks per phase "
                        "in the run directory's profiles/; perturbs the numbers; implies --keep "
                        "and writes no RESULTS.md)")
    args = parser.parse_args(argv)
    broker_kind: BrokerKind = args.broker
    events, accounts = args.events, args.accounts
    if args.quick:
        events, accounts = QUICK_EVENTS, QUICK_ACCOUNTS
    latency_seconds = args.latency_seconds or (8.0 if args.quick else 15.0)
    latency_rates = [float(r) for r in args.latency_rates.split(",") if r]
    keys = args.systems.split(",") if args.systems else DEFAULT_SYSTEMS[broker_kind]
    # A full run (the one RESULTS.md and runs/<broker>.json keep): the default workload,
    # systems and latency phases. Anything else is a quick or partial run.
    full = (not args.quick and not args.py_spy and keys == DEFAULT_SYSTEMS[broker_kind]
            and (events, accounts) == (DEFAULT_EVENTS, DEFAULT_ACCOUNTS)
            and args.latency_seconds is None and latency_rates == [1500.0, 300.0])
    results_md = args.results_md or (BENCH_DIR / "RESULTS.md" if full else None)
    try:
        # In the order given: the default order is the one the method describes.
        systems = [SYSTEMS[key] for key in keys if key]
    except KeyError as exc:
        parser.error(f"unknown system {exc}")
    if broker_kind == "tansu" and any(s.transactional for s in systems):
        parser.error("rcmflow-eos needs Kafka transactions: use --broker kafka (Tansu's "
                     "InitProducerId fails)")
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

    run_dir = Path(tempfile.mkdtemp(prefix=f"rcmflow-bench-{broker_kind}-"))
    (run_dir / "logs").mkdir()
    broker: BenchBroker = start_broker(broker_kind, run_dir)
    log(f"{broker.description} at {broker.bootstrap}"
        + (f", started in {broker.started_in_s:.1f} s" if broker.started_in_s else "")
        + f" (run dir {run_dir})")
    ctx = Context(broker.connection, run_dir, args.partitions, workload, latency_rates,
                  latency_seconds, args.seed, broker=broker_kind, py_spy=args.py_spy,
                  wait_quiet_s=args.wait_quiet_system if args.wait_quiet > 0 else 0.0)
    if broker.pid:
        ctx.load.broker_pids.add(broker.pid)
    try:
        asyncio.run(run(ctx, systems))
    finally:
        broker.stop()
    wall_s = time.monotonic() - started

    results = [ctx.results[key] for key in DISPLAY_ORDER if key in ctx.results]
    ratios = compute_ratios({k: r.events_per_s for k, r in ctx.results.items()})
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
    machine = machine_info(REPO_ROOT, {"kind": broker_kind, "description": broker.description,
                                       "version": broker.version,
                                       "started_in_s": broker.started_in_s})
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
    kind = "full" if full else ("py-spy" if args.py_spy else "quick" if args.quick
                                else "partial")
    json_path = results_dir / f"{stamp}-{broker_kind}-{kind}.json"
    raw = {
        "started_at": started_at.isoformat(), "command": command, "wall_s": wall_s,
        "machine": machine, "workload": workload_info, "latency": latency_cfg,
        "ratios": ratios, "results": [asdict(r) for r in results], "notes": ctx.notes,
        "load": load,
    }
    json_path.write_text(json.dumps(raw, indent=2))

    print()
    print(format_table(results, latency_rates))
    print()
    for line in ratio_lines(ratios):
        print(line)
    print(f"machine load: {load_note(load)}")
    for note in ctx.notes:
        print(f"note: {note}")
    print(f"\nraw numbers: {json_path}; bench wall time {wall_s:.0f} s")
    if results_md is not None:
        runs: dict[str, Path] = {broker_kind: json_path}
        if full and not failed:
            # The run RESULTS.md quotes is kept (committed), so it can be rendered again.
            RUNS_DIR.mkdir(exist_ok=True)
            kept = RUNS_DIR / f"{broker_kind}.json"
            shutil.copyfile(json_path, kept)
            runs = {broker_kind: kept}
        write_results_md(results_md, runs)
        print(f"wrote {results_md}" + ("" if full and not failed
                                       else " (this run's JSON is not kept in bench/runs/)"))
    if failed or args.keep or args.py_spy:
        print(f"run directory kept: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
