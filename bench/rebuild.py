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
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    with open(out_file, "wb") as out, open(log_file, "wb") as log:
        done = subprocess.run(["/usr/bin/time", "-v", *command], stdout=out, stderr=log,
                              env=env, check=False)
    text = log_file.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    seconds = 0.0
    if wall:
        for part in wall.group(1).split(":"):
            seconds = seconds * 60 + float(part)
    try:
        doc = json.loads(out_file.read_text())
    except ValueError:
        doc = {"unreadable": text[-2000:]}
    compare = doc.get("compare") or {}
    return {"command": name, "exit": done.returncode, "wall_s": round(seconds, 1),
            "max_rss_mib": round(int(rss.group(1)) / 1024) if rss else None,
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
