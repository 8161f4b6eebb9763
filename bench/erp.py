"""Journal entries per second into the ERP adapters: CSV and a real Tryton on PostgreSQL.

    python -m bench.erp                 # 2,000 deltas; ~1.5 min (the Tryton template: ~25 s)
    python -m bench.erp --deltas 300    # smoke run
    python -m bench.erp --no-results-md # print only

Two levels per ERP:
- ``adapter``: ``post_batch`` called directly with batches of B deltas (the ERP's own cost);
- ``connector``: the real consumer loop (``connectors/erp/runner.py``) from rcm.postings on
  an embedded broker, offsets committed per batch (what `rcmflow erp` sustains).
Deltas come from the real core (``tests.connectors.erp.feed.real_deltas``), posted once each: every
call creates moves (no "already there" shortcut), except the replay row, which sends the same
batches again to measure the duplicate path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rcmflow.connectors.erp.base import ErpAdapter
from rcmflow.connectors.erp.csv_journal import CsvJournal
from rcmflow.runtime.broker import EmbeddedBroker, ensure_topics
from rcmflow.streams.chart import load_chart
from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.topics import topic_specs
from tests.connectors.erp.conftest import adapter_for
from tests.connectors.erp.feed import publish_deltas, real_deltas, run_in_process
from tests.connectors.erp.tryton_server import TrytonSite

HERE = Path(__file__).parent
SECTION = "## ERP connectors (`python -m bench.erp`)"


def make_deltas(count: int) -> list[tuple[bytes, bytes]]:
    items: list[tuple[bytes, bytes]] = []
    seed = 1
    while len(items) < count:
        items += real_deltas(max(10, (count - len(items)) // 3 + 1), seed=seed)
        seed += 1
    return items[:count]


async def _adapter_rate(adapter: ErpAdapter, deltas: Sequence[PostingDelta], batch: int,
                        replay: bool = False) -> dict[str, Any]:
    await adapter.open()
    try:
        if replay:
            for start in range(0, len(deltas), batch):
                await adapter.post_batch(deltas[start:start + batch])
        started = time.perf_counter()
        kinds: dict[str, int] = {}
        for start in range(0, len(deltas), batch):
            for outcome in await adapter.post_batch(deltas[start:start + batch]):
                kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
        seconds = time.perf_counter() - started
    finally:
        await adapter.close()
    return {"entries": len(deltas), "lines": sum(len(d.lines) for d in deltas),
            "batch": batch, "seconds": round(seconds, 3),
            "entries_per_s": round(len(deltas) / seconds, 1), "outcomes": kinds}


def _connector_rate(adapter: ErpAdapter, items: list[tuple[bytes, bytes]],
                    batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(log_file=Path(tmp) / "broker.log").start()
        try:
            asyncio.run(ensure_topics(broker.connection, topic_specs("rcmflow"), 4, 1))
            publish_deltas(broker, items)
            started = time.perf_counter()
            progress = run_in_process(adapter, broker, group="bench-erp", batch_max=batch)
            # run_in_process waits idle_exit_s (1.5 s) with zero lag before it returns.
            seconds = time.perf_counter() - started - 1.5
        finally:
            broker.stop()
    assert progress.posted == len(items), progress.line()
    return {"entries": len(items), "batch": batch, "seconds": round(seconds, 3),
            "entries_per_s": round(len(items) / seconds, 1),
            "note": "includes the consumer group join (~1 s on Tansu)"}


def run(count: int) -> dict[str, Any]:
    items = make_deltas(count)
    deltas = [PostingDelta.model_validate_json(v) for _, v in items]
    chart = load_chart()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        def csv_adapter(name: str) -> CsvJournal:
            return CsvJournal(Path(tmp) / name, chart, today=lambda: date(2026, 11, 26))

        for batch in (1, 100, 1000):
            rows.append({"erp": "csv", "level": "adapter",
                         **asyncio.run(_adapter_rate(csv_adapter(f"a{batch}"), deltas,
                                                     batch))})
        rows.append({"erp": "csv", "level": "adapter, replay (all already there)",
                     **asyncio.run(_adapter_rate(csv_adapter("replay"), deltas, 1000,
                                                 replay=True))})
        rows.append({"erp": "csv", "level": "connector",
                     **_connector_rate(csv_adapter("conn"), items, 100)})

        site = TrytonSite.build(Path(tmp) / "tryton")
        template_s = site.build_s
        try:
            few = deltas[:min(200, len(deltas))]
            for batch, subset in ((1, few), (50, deltas), (200, deltas)):
                server = site.new_server()
                rows.append({"erp": "tryton", "level": "adapter",
                             **asyncio.run(_adapter_rate(adapter_for(server), subset, batch))})
                server.stop()
            server = site.new_server()
            rows.append({"erp": "tryton", "level": "adapter, replay (all already there)",
                         **asyncio.run(_adapter_rate(adapter_for(server), deltas, 200,
                                                     replay=True))})
            server.stop()
            server = site.new_server()
            rows.append({"erp": "tryton", "level": "connector",
                         **_connector_rate(adapter_for(server), items, 100)})
            server.stop()
        finally:
            site.close()
    return {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M UTC"),
            "commit": _git("rev-parse", "--short", "HEAD"), "cpus": os.cpu_count(),
            "python": platform.python_version(), "deltas": count,
            "tryton_template_s": round(template_s, 1), "rows": rows}


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE.parent)
    return done.stdout.strip()


def markdown(result: dict[str, Any]) -> str:
    lines = [
        SECTION, "",
        f"- Date: {result['date']}, {result['cpus']} cores, Python {result['python']}, "
        f"code at {result['commit']}; {result['deltas']:,} posting deltas from the real core "
        "(2-4 lines each); Tryton 8.2.1 + `rcmflow_ext` on embedded PostgreSQL 16 "
        "(pgserver), built-in werkzeug server; template "
        + (f"built in {result['tryton_template_s']} s" if result["tryton_template_s"]
           else "reused from the cache"),
        "",
        "| ERP | level | deltas per call | entries | seconds | entries/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['erp']} | {row['level']} | {row['batch']} | {row['entries']:,} "
                     f"| {row['seconds']} | {row['entries_per_s']:,} |")
    lines += ["", "`adapter` = `post_batch` called directly; `connector` = the `rcmflow erp` "
              "loop from rcm.postings on the embedded broker (group join included). CSV pays "
              "one fsync per call; Tryton one `post_external` transaction per call "
              "(all-or-nothing, so a rejection splits the batch)."]
    return "\n".join(lines) + "\n"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deltas", type=int, default=2000)
    parser.add_argument("--no-results-md", action="store_true")
    args = parser.parse_args()
    result = run(args.deltas)
    (HERE / "results").mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (HERE / "results" / f"{stamp}-erp.json").write_text(json.dumps(result, indent=2))
    section = markdown(result)
    print(section)
    if not args.no_results_md:
        write_results_md(HERE / "RESULTS.md", section)


if __name__ == "__main__":
    main()
