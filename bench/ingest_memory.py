"""Memory and time of `rcmflow ingest` per input file size, up to each documented file limit.

For each kind (a payments CSV, a FHIR Bundle of ChargeItems, an X12 835 with one transaction
set of many claims) and each size, a file is generated, then the real ``rcmflow ingest KIND
FILE`` runs as a subprocess against a fresh embedded Tansu broker (the rcm.* topics created as
the tests do). Its peak RSS (the process and its children, sampled with psutil every 50 ms;
``wait4``'s ru_maxrss is kept beside it but not used: it also counts the bench's own pages at
the child's exec) and wall time are recorded, with the rows / claims /
entries of the file and its progress lines (periodic lines: the output is not a terminal).

Sizes run up to the file limits in rcmflow/runtime/settings.py (RCMFLOW_PAYMENTS_FILE_BYTES_MAX,
RCMFLOW_FHIR_FILE_BYTES_MAX, RCMFLOW_X12_FILE_BYTES_MAX) or ``--max-mb``. The count bounds
(rows, resources, segments per file) are raised to the file's count, so the whole file is
read: at their defaults reading stops there, with a DLQ record.

``python -m bench.ingest_memory --help``; ``--max-mb 0.05`` is a smoke run (seconds).
Writes bench/results/<stamp>-ingest_memory.json, and for a run reaching the limits
bench/runs/ingest_memory.json and its section of bench/RESULTS.md (``--results-md`` forces).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.growth import machine
from rcmflow.runtime.broker import EmbeddedBroker, ensure_topics
from rcmflow.runtime.settings import Settings
from rcmflow.streams.topics import topic_specs

__all__ = ["main", "run", "generate", "KINDS", "markdown"]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SECTION = "## Ingest memory per file size (bench.ingest_memory)"
MIB = 1024 * 1024
KINDS = ("payments", "fhir", "x12")
#: Sizes tried below a kind's limit (MiB); the limit itself is the last point.
STEPS_MIB = (1, 4, 16, 64)
SAMPLE_S = 0.05


# -- generated files ------------------------------------------------------------------------

def _payments(path: Path, size: int) -> int:
    rows = 0
    with path.open("w") as f:
        f.write("type,account,amount,date,reference,channel,batch\n")
        while f.tell() < size - 80:
            f.write(f"payment,A{rows % 100_000:07d},{1 + rows % 9_999}.{rows % 100:02d},"
                    f"2026-03-01,LB-{rows:09d},lockbox,DEP{rows // 500:06d}\n")
            rows += 1
    return rows


def _charge(n: int) -> str:
    return json.dumps({"fullUrl": f"urn:uuid:c{n}", "resource": {
        "resourceType": "ChargeItem", "id": f"c{n}", "status": "billable",
        "code": {"coding": [{"system": "https://www.nubc.org/CodeSystem/RevenueCodes",
                             "code": "0450"}]},
        "subject": {"reference": "Patient/p1"},
        "account": [{"reference": f"Account/A{n % 100_000:07d}"}],
        "occurrenceDateTime": "2026-03-01", "quantity": {"value": 1},
        "priceOverride": {"value": 125, "currency": "USD"}}}, separators=(",", ":"))


def _fhir(path: Path, size: int) -> int:
    entries = 0
    with path.open("w") as f:
        f.write('{"resourceType":"Bundle","type":"batch","entry":[')
        while f.tell() < size - 600:
            f.write(("," if entries else "") + _charge(entries))
            entries += 1
        f.write("]}")
    return entries


#: Claims per 835 transaction set in the generated files (50,000: a large payer's set).
X12_SET_CLAIMS = 50_000


def _x12_specs(count: int) -> list[Any]:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.connectors.inbound.x12.x12_build import ClaimSpec

    return [ClaimSpec(f"A{n % 100_000:07d}", 12500, 10000, pcn=f"P{n:09d}",
                      cas=[("CO", "45", 2500)]) for n in range(count)]


def x12_one_set(path: Path, claims: int, transaction: str = "835") -> int:
    """An 835 (or an 837P) whose ``claims`` claims are all in ONE transaction set (ST/SE), as
    a large payer (or a billing system's batch) sends it: the series that shows whether memory
    follows the set's size."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.connectors.inbound.x12.x12_build import claim_segments, envelope, remit_segments

    if transaction == "837":
        lines = [(f"A{n % 100_000:07d}-{n}", 12500, [("99213", 12500)]) for n in range(claims)]
        path.write_bytes(envelope(claim_segments(lines), functional_id="HC",
                                  version="005010X222A2"))
    else:
        path.write_bytes(envelope(remit_segments(_x12_specs(claims), trn02="EFT-ONE")))
    return claims


def _x12(path: Path, size: int) -> int:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.connectors.inbound.x12.x12_build import envelope, remit_segments

    specs = _x12_specs

    base = len(envelope(remit_segments([])))
    per_claim = (len(envelope(remit_segments(specs(100)))) - base) / 100
    claims = max(1, int((size - base) // per_claim))
    # A large payer's file: transaction sets of up to X12_SET_CLAIMS claims each (the set is
    # the unit of work, so memory follows the largest set, not the file).
    every = specs(claims)
    sets = [remit_segments(every[n:n + X12_SET_CLAIMS], trn02=f"EFT{n}")
            for n in range(0, claims, X12_SET_CLAIMS)]
    path.write_bytes(envelope(*sets))
    return claims


GENERATORS: dict[str, Callable[[Path, int], int]] = {
    "payments": _payments, "fhir": _fhir, "x12": _x12}
UNITS = {"payments": "rows", "fhir": "entries", "x12": "claims"}
SUFFIX = {"payments": ".csv", "fhir": ".json", "x12": ".835"}


def generate(kind: str, path: Path, size: int) -> int:
    """A file of about ``size`` bytes; returns its rows / entries / claims."""
    return GENERATORS[kind](path, size)


def limits() -> dict[str, int]:
    s = Settings()
    return {"payments": s.payments_file_bytes_max, "fhir": s.fhir_file_bytes_max,
            "x12": s.x12_file_bytes_max}


# -- one run --------------------------------------------------------------------------------

@dataclass
class Peak:
    rss: int = 0


def _sample(proc: psutil.Process, peak: Peak, done: threading.Event) -> None:
    while not done.is_set():
        try:
            rss = proc.memory_info().rss + sum(
                c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            rss = 0
        peak.rss = max(peak.rss, rss)
        done.wait(SAMPLE_S)


def run_ingest(kind: str, path: Path, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """``rcmflow ingest KIND PATH``: exit code, wall seconds, peak RSS, progress lines."""
    out = path.with_suffix(".log")
    started = time.monotonic()
    with out.open("wb") as log:
        child = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "ingest", kind, str(path)],
                                 env=env, stdout=log, stderr=subprocess.STDOUT,
                                 cwd=REPO_ROOT)
        peak, done = Peak(), threading.Event()
        sampler = threading.Thread(target=_sample, args=(psutil.Process(child.pid), peak, done),
                                   daemon=True)
        sampler.start()
        deadline = started + timeout_s
        maxrss_kib, timed_out = 0, False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                maxrss_kib = usage.ru_maxrss
                child.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                timed_out = True
                child.kill()
                child.wait()
                break
            time.sleep(SAMPLE_S)
        done.set()
        sampler.join()
    seconds = time.monotonic() - started
    text = out.read_text(errors="replace")
    progress = [line for line in text.splitlines() if line.startswith(f"publishing {path.name}")]
    return {"exit": child.returncode, "seconds": round(seconds, 2),
            # Sampled only: wait4's ru_maxrss also counts the parent's pages at exec time.
            "peak_rss_mb": round(peak.rss / 1e6, 1),
            "wait4_maxrss_mb": round(maxrss_kib * 1024 / 1e6, 1),
            "progress_lines": len(progress), "timed_out": timed_out,
            "last_lines": text.splitlines()[-3:]}


def points(limit: int, max_mb: float | None) -> list[int]:
    cap = limit if max_mb is None else min(limit, int(max_mb * MIB))
    sizes = [s * MIB for s in STEPS_MIB if s * MIB < cap]
    return sizes + [cap]


def _plan(kinds: list[str], max_mb: float | None, caps: dict[str, float] | None,
          x12_sets: list[int]) -> list[tuple[str, int, bool]]:
    """(kind, size in bytes or claims, one_set) to run, in order."""
    if x12_sets:
        return [("x12", claims, True) for claims in x12_sets]
    return [(kind, size, False) for kind in kinds
            for size in points(limits()[kind], (caps or {}).get(kind, max_mb))]


def run(kinds: list[str], max_mb: float | None, work: Path, timeout_s: float,
        log: Callable[[str], None], caps: dict[str, float] | None = None,
        x12_sets: list[int] | None = None, x12_transaction: str = "835") -> dict[str, Any]:
    broker = EmbeddedBroker(log_file=work / "broker.log").start()
    try:
        asyncio.run(ensure_topics(broker.connection, topic_specs("rcmflow"), 4, 1))
        rows: list[dict[str, Any]] = []
        for kind, size, one_set in _plan(kinds, max_mb, caps, x12_sets or []):
            suffix = f".{x12_transaction}" if one_set else SUFFIX[kind]
            path = work / f"{kind}-{size}{'-one-set' if one_set else ''}{suffix}"
            count = (x12_one_set(path, size, x12_transaction) if one_set
                     else generate(kind, path, size))
            env = {**os.environ, "RCMFLOW_BROKER": broker.connection.servers[0],
                   "RCMFLOW_DATA_DIR": str(work / "data"),
                   "RCMFLOW_PAYMENTS_ROWS_MAX": str(count + 10),
                   "RCMFLOW_FHIR_RESOURCES_MAX": str(count + 10),
                   "RCMFLOW_X12_SEGMENTS_MAX": str(max(1_000_000, 10 * count + 100))}
            env.pop("RCMFLOW_LOG_JSON", None)
            result = run_ingest(kind, path, env, timeout_s)
            real = path.stat().st_size
            row = {"kind": kind + (f" ({x12_transaction}, one set)" if one_set else ""),
                   "bytes": real,
                   "count": count, "unit": UNITS[kind],
                   **result, "mb_per_s": round(real / 1e6 / max(result["seconds"], 1e-3),
                                               2)}
            rows.append(row)
            log(f"{kind} {real / MIB:.2f} MiB ({count:,} {UNITS[kind]}): exit "
                f"{row['exit']}, peak {row['peak_rss_mb']} MB, {row['seconds']} s, "
                f"{row['progress_lines']} progress lines")
            path.unlink()
        return {"rows": rows, "limits": {k: limits()[k] for k in kinds}}
    finally:
        broker.stop()


# -- report ---------------------------------------------------------------------------------

def markdown(raw: dict[str, Any], shown_json: str) -> str:
    m = raw["machine"]
    lines = [
        SECTION, "",
        f"{raw['started_at']}, `{raw['command']}` on {m['cpu_model']}, {m['cores']} cores, "
        f"{m['ram_gib']} GiB, Python {m['python']}, commit {m['rcmflow_commit']}; the machine "
        "was shared with other work. The real `rcmflow ingest KIND FILE` against the embedded "
        "Tansu; peak RSS of the process and its children (psutil every 50 ms); count bounds "
        "raised to the file's count so the whole file is read. "
        f"Raw numbers: `{shown_json}`.", "",
        "| kind | file MiB | rows / entries / claims | peak RSS MB | seconds | MB/s | exit "
        "| progress lines |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in raw["rows"]:
        lines.append(f"| {r['kind']} | {r['bytes'] / MIB:.2f} | {r['count']:,} {r['unit']} "
                     f"| {r['peak_rss_mb']:,} | {r['seconds']} | {r['mb_per_s']} "
                     f"| {r['exit']}{' (timed out)' if r['timed_out'] else ''} "
                     f"| {r['progress_lines']} |")
    return "\n".join(lines + [""] + raw.get("notes", [])) + "\n"


def write_results_md(path: Path, section: str) -> None:
    """Replace this bench's section in RESULTS.md, keep every other one."""
    text = path.read_text() if path.exists() else "# rcmflow benchmark results\n"
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith("## "):
            skipping = line.startswith(SECTION)
        if not skipping:
            out.append(line)
    path.write_text("\n".join(out).rstrip("\n") + "\n\n" + section)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_memory", description=__doc__.split("\n\n")[0],
        epilog="Sizes: 1, 4, 16, 64 MiB below each kind's file limit, then the limit (or "
        "--max-mb). A run reaching every limit writes bench/runs/ingest_memory.json and the "
        "section of bench/RESULTS.md.")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="comma-separated subset of payments,fhir,x12 (default: all)")
    parser.add_argument("--max-mb", type=float, default=None,
                        help="largest file in MiB (default: each kind's documented limit)")
    parser.add_argument("--cap", action="append", default=[], metavar="KIND=MB",
                        help="largest file of one kind in MiB, e.g. x12=16 (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one ingest may take before it is killed (default 1800)")
    parser.add_argument("--out", type=Path, help="the JSON (default "
                        "bench/results/<stamp>-ingest_memory.json)")
    parser.add_argument("--results-md", action="store_true",
                        help="write bench/runs/ingest_memory.json and RESULTS.md even for a "
                        "run that does not reach the limits")
    parser.add_argument("--x12-one-set", default="", metavar="CLAIMS,...",
                        help="instead: 835s with all their claims in ONE transaction set, "
                        "e.g. 10000,50000,100000,200000 (memory per claims of one set)")
    parser.add_argument("--x12-transaction", choices=("835", "837"), default="835",
                        help="the one-set files' transaction: 835 (default) or 837P")
    parser.add_argument("--tmp", type=Path, help="where the files go (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown --kinds: {', '.join(sorted(unknown))}")
    caps = {k: float(v) for k, v in (c.split("=", 1) for c in args.cap)}
    started_at = datetime.now(UTC)
    raw: dict[str, Any] = {
        "bench": "ingest_memory",
        "command": "python -m bench.ingest_memory " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "started_at": started_at.isoformat(timespec="seconds"), "machine": machine(),
        "load_before": list(os.getloadavg()),
    }
    with tempfile.TemporaryDirectory(prefix="rcmflow-ingest-mem-", dir=args.tmp) as tmp:
        raw |= run(kinds, args.max_mb, Path(tmp), args.timeout,
                   lambda text: print(text, file=sys.stderr, flush=True), caps,
                   [int(n) for n in args.x12_one_set.split(",") if n.strip()],
                   args.x12_transaction)
    raw["load_after"] = list(os.getloadavg())
    full = args.max_mb is None and not caps and not args.x12_one_set
    out = args.out or (BENCH_DIR / "results"
                       / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}-ingest_memory.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw, indent=1) + "\n")
    if full or args.results_md:
        kept = BENCH_DIR / "runs" / "ingest_memory.json"
        kept.parent.mkdir(exist_ok=True)
        kept.write_text(out.read_text())
        section = markdown(raw, str(kept.relative_to(REPO_ROOT)))
        write_results_md(BENCH_DIR / "RESULTS.md", section)
    else:
        section = markdown(raw, str(out))
    print(section)
    return 0 if all(r["exit"] in (0, 1) and not r["timed_out"] for r in raw["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
