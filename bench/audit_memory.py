"""`rcmflow audit`'s bookkeeping at production size: peak RSS and time, without a broker.

Feeds ``audit/ledger.py`` what ``audit()`` reads from the topics, generated in-process: one
layout-2 head per account (into the digest's RocksDB ``HeadStore``, in batches, as
``read_live`` does), then ``--deltas-per-account`` balanced deltas per account in a shuffled
account order (``LedgerSums.delta``, the JSON bytes the worker writes), then the comparison
over every head. The Kafka reads themselves hold one batch of 10,000 records at a time and
are left out: what grows with the number of accounts and deltas is measured. Prints one JSON
line: accounts, deltas, seconds, peak RSS (``ru_maxrss``), mismatches (0 expected).

    python -m bench.audit_memory --accounts 1000000 --deltas-per-account 3
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import tempfile
import time
from array import array
from pathlib import Path

import orjson

from rcmflow.audit.digest import BUCKETS, HeadStore
from rcmflow.audit.ledger import LedgerSums

__all__ = ["main"]

CENTS = 1234


def name(i: int) -> str:
    return f"A{i:08d}"


def head(account: str, version: int) -> bytes:
    balances = dict.fromkeys(BUCKETS, 0)
    balances["patient_ar"] = balances["gross_charges"] = CENTS * version
    return orjson.dumps({"layout": 2, "account": account, "entity": "E1", "status": "open",
                         "version": version, "balances": balances})


def delta(account: str, version: int) -> bytes:
    return orjson.dumps({
        "posting_id": f"pst_{account}_{version}", "account": account, "entity": "E1",
        "effective_date": "2026-01-05", "currency": "USD",
        "lines": [{"gl_account": "1200", "debit_cents": CENTS, "credit_cents": 0,
                   "bucket": "patient_ar", "memo": "charge", "entity": "E1"},
                  {"gl_account": "4000", "debit_cents": 0, "credit_cents": CENTS,
                   "bucket": "gross_charges", "memo": "charge", "entity": "E1"}],
        "event_id": f"ev-{account}-{version}", "event_kind": "charge", "correlation_id": None,
        "account_version": version, "coa_version": "bench"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--deltas-per-account", type=int, default=3)
    args = parser.parse_args()
    n, per = args.accounts, args.deltas_per_account
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, HeadStore.scratch(Path(tmp)) as heads:
        for start in range(0, n, 10_000):
            heads.put_many((name(i).encode(), head(name(i), per))
                           for i in range(start, min(n, start + 10_000)))
        sums = LedgerSums(Path(tmp) / "ids")
        for state in heads.states():
            sums.head(state.account, state.version)
        order = array("l", range(n))  # each round: every account once, shuffled
        random.Random(7).shuffle(order)
        for version in range(1, per + 1):
            for i in order:
                sums.delta(delta(name(i), version))
        del order
        mismatches = sum(sums.check(k.decode(), orjson.loads(v)) is not None
                         for k, v in heads.db.items() if isinstance(k, bytes))
        sums.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump({"accounts": n, "deltas": n * per, "seconds": round(time.monotonic() - started, 1),
               "peak_rss_mib": round(peak_kib / 1024),
               "rss_before_mib": round(baseline_kib / 1024), "mismatches": mismatches,
               "python": platform.python_version()}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
