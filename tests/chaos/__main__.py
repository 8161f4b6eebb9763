"""`python -m tests.chaos --seeds 1-5 --broker tansu|kafka [--accounts N] [--keep]`."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.chaos.injector import KINDS, parse_schedule
from tests.chaos.run import DEFAULT_WINDOW_S, run_one
from tests.connectors.erp.tryton_server import TrytonSite

DESCRIPTION = """\
Whole-pipeline fault runs (issue 15). Each seed is one run: a fresh broker, two workers in
one group over 8 partitions, the MLLP listener, the drop-folder watcher, the Tryton ERP
connector on a fresh clone of the Tryton template (PostgreSQL), the FHIR facade. The seeded
workload is fed phase by phase (MLLP senders that resend until ACKed, atomic file drops,
`rcmflow ingest` run again on exit 3) while faults drawn from the same seed are injected:
kill -9 of a worker, the MLLP listener or the ERP connector; SIGSTOP of a worker past its
session timeout; a Tryton outage; on Apache Kafka a broker kill -9. Then everything is
brought back up and checked against the oracle: balances to the cent, posting ids, the
DLQ, one Tryton move per posting id, `rcmflow audit`, `rcmflow reconcile --erp tryton`, the
facade's balances, and two rebuilds + the live digest.

One line per run on stdout:
  seed=N broker=B faults=[KIND(TARGET)@AT+HOLD,...] inputs=I deliveries=D postings=P
  restarts=PROC:N,... SECONDS PASS | FAIL CHECK: FIRST DIFFERENCE [logs: DIR]
AT is seconds from the start of feeding, HOLD how long the fault lasted; restarts counts
processes that exited on their own and were started again. A failure replays with the
same --seeds and --broker. Exit 1 when any run fails."""


def seeds(text: str) -> list[int]:
    """``1-5``, ``7`` or ``1-3,9``."""
    found: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        found += list(range(int(first), int(last or first) + 1))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=seeds, default=[1], help="e.g. 1-5 or 3,8 (default 1)")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--accounts", type=int, default=20,
                        help="accounts in the generated workload (default 20)")
    parser.add_argument("--keep", action="store_true",
                        help="keep every run's directory (logs, data), not only failed ones")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the run directories go (default: a new temp dir)")
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_S,
                        help="faults are drawn over the first WINDOW seconds of feeding "
                             f"(default {DEFAULT_WINDOW_S:.0f})")
    parser.add_argument("--faults", default=None, metavar="SCHEDULE",
                        help="an explicit schedule instead of the drawn one: "
                             "AT:KIND[:TARGET][:HOLD],... with KIND one of "
                             f"{', '.join(KINDS)}; '' for none")
    parser.add_argument("--env", action="append", default=[], metavar="PROC:NAME=VALUE",
                        help="extra environment for one process (w1, w2, mllp, watch, erp, "
                             "facade, or * for all), e.g. "
                             "'w1:RCMFLOW_TEST_FAULTS=worker_kill_at=processed:2'")
    parser.add_argument("-v", "--verbose", action="store_true", help="say each step on stderr")
    args = parser.parse_args(argv)
    schedule = parse_schedule(args.faults) if args.faults is not None else None
    extra: dict[str, dict[str, str]] = {}
    for item in args.env:
        proc, _, assignment = item.partition(":")
        name, _, value = assignment.partition("=")
        if not name:
            parser.error(f"--env {item!r}: PROC:NAME=VALUE")
        extra.setdefault(proc, {})[name] = value
    base = args.dir or Path(tempfile.mkdtemp(prefix="rcmflow-chaos-"))
    base.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        if args.verbose:
            print(text, file=sys.stderr, flush=True)

    site = TrytonSite.build(base / "tryton")
    failed = 0
    try:
        for seed in args.seeds:
            result = run_one(seed, args.broker, site, base, accounts=args.accounts,
                             faults=schedule, window_s=args.window, extra_env=extra,
                             keep=args.keep, say=say)
            print(result.line(), flush=True)
            failed += not result.passed
    except KeyboardInterrupt:  # every process of the run in hand was stopped on the way out
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        site.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
