"""`rcmflow rebuild` and `rcmflow digest`: their rate, time and peak RSS over a generated
history.

Fills a fresh embedded broker (Tansu) as ``bench.reconcile_memory`` does (``fill``: the
``bench.workload`` events on rcm.events, the processor's heads and items on rcm.accounts),
then runs, each in a child process under ``/usr/bin/time -v``: ``rcmflow digest --json``,
``rcmflow rebuild --compare --json`` (RocksDB tables) and ``rcmflow rebuild --memory
--compare --json``. Prints one JSON line per command: exit code (0: the rebuilt digest equals
the live one), wall time, maximum RSS, the replay's events/s.

    python -m bench.rebuild --events 200000 --accounts 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.procs import run_timed
from bench.reconcile_memory import fill
from rcmflow.runtime.broker import EmbeddedBroker

__all__ = ["main", "measure"]

COMMANDS = {
    "digest": ["digest", "--json"],
    "rebuild (RocksDB)": ["rebuild", "--compare", "--json"],
    "rebuild --memory": ["rebuild", "--memory", "--compare", "--json"],
}


def measure(bootstrap: str, run_dir: Path, name: str, args: list[str]) -> dict[str, Any]:
    env = os.environ | {"RCMFLOW_BROKER": f"kafka://{bootstrap}",
                        "RCMFLOW_DATA_DIR": str(run_dir / "data")}
    out_file, log_file = run_dir / "out.json", run_dir / "time.log"
    command = [str(Path(sys.executable).with_name("rcmflow")), *args]
    run = run_timed(command, out_file, log_file, env)
    doc = run.output if run.output is not None else {"unreadable": run.log[-2000:]}
    compare = doc.get("compare") or {}
    return {"command": name, "exit": run.exit, "wall_s": round(run.wall_s, 1),
            "max_rss_mib": round(run.max_rss_kb / 1024) if run.max_rss_kb else None,
            "events": doc.get("events"), "replay_s": doc.get("seconds"),
            "events_per_s": doc.get("events_per_s"), "accounts": doc.get("accounts"),
            "sha256": doc.get("sha256"), "equal_to_live": compare.get("equal")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--replay-ratio", type=float, default=0.2)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_dir = Path(tempfile.mkdtemp(prefix="rcmflow-rebuild-bench-"))
    broker = EmbeddedBroker(log_file=run_dir / "broker.log").start()
    try:
        asyncio.run(fill(broker.connection, args.events, args.accounts, args.replay_ratio))
        for name, command in COMMANDS.items():
            result = measure(broker.bootstrap, run_dir, name, command)
            result |= {"workload_events": args.events, "workload_accounts": args.accounts,
                       "python": platform.python_version(), "cpus": os.cpu_count()}
            print(json.dumps(result), flush=True)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
