"""The facade at scale: catch-up speed of the read model and search latency at 1M resources.

    python -m bench.facade_scale catchup --accounts 20000 --payments 8   # ~1-2 min
    python -m bench.facade_scale searches --accounts 100000 --payments 6 # 1M resources

Both build real rcm.accounts records (heads and items) with the real core (``Processor`` on
``MemoryTables``) as a worker writes them: events in worker batches
(``WORKER_BATCH_EVENTS``), each batch writing the heads and items it touched. Per account: a
charge, a claim, its 835 adjudication (a check shared with ~100 other accounts) and
``--payments`` patient payments, the payments in random account order as a bulk payment file
brings them. Resources per account: 4 + payments.

``catchup``: the records go through ``Store.apply`` in the batches the feed hands it
(``feed.BATCH_RECORDS_MAX``, the default FHIR validation setting): the store's records/s, which
is the facade's catch-up rate less the consumer's own cost (``--broker tansu`` adds the real
path: the records on rcm.accounts of an embedded broker, a ``Feeder`` reading them until its
lag is 0).

``searches``: fills a store (in large batches, no validation: loading is not what is measured),
then times every search parameter of ``params.RESOURCES`` the way the app answers a search
(``parse_search``, ``Store.count``, ``Store.search`` for a page and one more row), with random
values, and pages deep in the largest set by the ``_after`` cursor: p50/p99 per search.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.facade import _events, _percentile
from bench.procs import REPO_ROOT

__all__ = ["main", "worker_batches"]

#: Events per worker batch: each batch writes its accounts' heads once, and the items it touched.
WORKER_BATCH_EVENTS = 500
#: Accounts whose events are generated together (their payments shuffled among them).
ACCOUNT_GROUP = 2_000
#: Records per store transaction when filling the 1M store (the load is not measured).
FILL_APPLY_RECORDS = 20_000
#: Timed searches per kind.
SEARCH_SAMPLES = 200
PAGE_SIZE = 20

Records = list[tuple[str, bytes | None]]


def worker_batches(accounts: int, payments: int, seed: int) -> Iterator[Records]:
    """rcm.accounts records as a worker writes them, one list per worker batch."""
    import orjson

    from rcmflow.streams.chart import load_chart
    from rcmflow.streams.memory_tables import MemoryTables, head_records, item_records
    from rcmflow.streams.processor import Message, Processor
    from rcmflow.streams.topics import EVENTS

    processor = Processor(load_chart())
    rng = random.Random(seed)
    for start in range(0, accounts, ACCOUNT_GROUP):
        per_account = [_events(n, rng, payments)
                       for n in range(start, min(accounts, start + ACCOUNT_GROUP))]
        setup = [doc for docs in per_account for doc in docs[:3]]
        paid = [doc for docs in per_account for doc in docs[3:]]
        rng.shuffle(paid)
        docs = setup + paid
        tables = MemoryTables()
        for first in range(0, len(docs), WORKER_BATCH_EVENTS):
            chunk = docs[first:first + WORKER_BATCH_EVENTS]
            result = processor.process([Message(EVENTS, 0, first + i, d["account"].encode(),
                                                orjson.dumps(d)) for i, d in enumerate(chunk)],
                                       tables)
            assert result.counts.applied == len(chunk), result.counts
            tables.write(result)
            written = {**head_records(result), **item_records(result)}
            yield [(key.decode(), value) for (_, key), value in written.items()]


def _machine() -> str:
    import platform

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}")


def catchup(args: argparse.Namespace) -> dict[str, Any]:
    from rcmflow.facade.feed import BATCH_RECORDS_MAX, samples_validation
    from rcmflow.facade.store import Store
    from rcmflow.runtime.settings import Settings

    validate_every = Settings().facade_validate_every
    all_records: Records = [r for batch in worker_batches(args.accounts, args.payments,
                                                          args.seed) for r in batch]
    events = args.accounts * (3 + args.payments)
    print(f"{len(all_records):,} records from {events:,} events "
          f"({len(all_records) / events:.2f} records/event); feed batches of "
          f"{BATCH_RECORDS_MAX}, validate_every={validate_every}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-facade-catchup-"))
    # Untimed: the FHIR models build their validators on first use (~1 s a process).
    warm = Store(work / "warm.sqlite", validate_every=1)
    warm.apply(all_records[:2_000], {0: 1})
    warm.close()
    store = Store(work / "read.sqlite", validate_every=validate_every)
    t0 = time.perf_counter()
    # As the feed decides (``samples_validation``), when the store can be told; the bench
    # feeds the whole backlog at once, so only the batch size decides here.
    told = "catching_up" in inspect.signature(store.apply).parameters
    cpu0 = time.process_time()
    # The full batches alone too: the rate while a backlog waits (the last, partial batch
    # empties it: sampled too if larger than live traffic brings).
    backlog_cpu_s, backlog_records = 0.0, 0
    for first in range(0, len(all_records), BATCH_RECORDS_MAX):
        batch = all_records[first:first + BATCH_RECORDS_MAX]
        batch_cpu0 = time.process_time()
        if told:
            store.apply(batch, {0: first + 1},
                        catching_up=samples_validation(len(batch), 0))  # type: ignore[call-arg]
        else:
            store.apply(batch, {0: first + 1})
        if len(batch) == BATCH_RECORDS_MAX:
            backlog_cpu_s += time.process_time() - batch_cpu0
            backlog_records += len(batch)
    seconds = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    resources = store.db.execute("SELECT count(*) FROM resources").fetchone()[0]
    store.close()
    out: dict[str, Any] = {
        "records": len(all_records), "events": events, "store_seconds": round(seconds, 2),
        "store_records_per_s": round(len(all_records) / seconds),
        # CPU per record: what other load on the machine disturbs least (one core's rate).
        "store_cpu_us_per_record": round(cpu_s * 1e6 / len(all_records), 1),
        "store_records_per_cpu_s": round(len(all_records) / cpu_s),
        "backlog_records": backlog_records,
        "backlog_cpu_us_per_record": round(backlog_cpu_s * 1e6 / max(backlog_records, 1), 1),
        "resources": resources, "feed_batch_records": BATCH_RECORDS_MAX,
        "validate_every": validate_every}
    if args.broker:
        from bench.brokers import start_broker

        (work / "broker" / "logs").mkdir(parents=True, exist_ok=True)
        broker = start_broker(args.broker, work / "broker")
        try:
            out["broker"] = asyncio.run(_feed_catchup(all_records, broker, work,
                                                      validate_every))
        finally:
            broker.stop()
    return out


async def _feed_catchup(records: Records, broker: Any, work: Path,
                        validate_every: int) -> dict[str, Any]:
    """The real path: records on rcm.accounts of a fresh broker, a Feeder until lag 0."""
    from rcmflow.facade.feed import Feeder
    from rcmflow.facade.store import Store
    from rcmflow.runtime.broker import ensure_topics
    from rcmflow.runtime.kafka_io import publish
    from rcmflow.streams.topics import ACCOUNTS, topic_specs

    await ensure_topics(broker.connection, topic_specs("rcmflow"), 4, 1)
    await publish(broker.connection, [(ACCOUNTS, k.encode(), v) for k, v in records])
    store = Store(work / "fed.sqlite", validate_every=validate_every)
    feeder = Feeder(store, broker.connection, source="bench")
    t0 = time.perf_counter()
    task = asyncio.create_task(feeder.run())
    first: float | None = None
    while feeder.status.lag() != 0 or feeder.status.applied_records < len(records):
        if first is None and feeder.status.applied_records:
            first = time.perf_counter()
        assert not task.done(), feeder.status
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - (first or t0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    store.close()
    return {"broker": broker.kind, "records": len(records), "seconds_from_first_apply":
            round(seconds, 2), "records_per_s": round(len(records) / seconds)}


def fill(path: Path, accounts: int, payments: int, seed: int) -> dict[str, Any]:
    from rcmflow.facade.store import Store

    store = Store(path, validate_every=0)
    t0 = time.perf_counter()
    store_s = 0.0
    pending: Records = []
    applied = 0
    last_print = t0

    def flush() -> None:
        nonlocal store_s, applied, pending
        s0 = time.perf_counter()
        applied += len(pending)
        store.apply(pending, {0: applied})
        store_s += time.perf_counter() - s0
        pending = []

    for batch in worker_batches(accounts, payments, seed):
        pending += batch
        if len(pending) >= FILL_APPLY_RECORDS:
            flush()
            if time.perf_counter() - last_print > 15:
                last_print = time.perf_counter()
                print(f"  {applied:,} records in {last_print - t0:.0f} s", flush=True)
    flush()
    resources = store.db.execute("SELECT count(*) FROM resources").fetchone()[0]
    store.close()
    return {"records": applied, "resources": resources,
            "fill_s": round(time.perf_counter() - t0, 1), "store_s": round(store_s, 1),
            "store_records_per_s": round(applied / store_s), "db_mb":
            round(path.stat().st_size / 1e6, 1)}


Search = Callable[[random.Random], list[tuple[str, str]]]


def _account(rng: random.Random, accounts: int) -> int:
    return rng.randrange(accounts)


def search_kinds(accounts: int, payments: int) -> dict[str, tuple[str, Search]]:
    """name -> (resource type, random query items): every parameter of params.RESOURCES."""
    def acct(r: random.Random) -> str:
        return f"P{r.randrange(accounts):06d}"

    def day(r: random.Random, month: int) -> str:
        return f"2026-{month:02d}-{1 + r.randrange(28):02d}"

    def trace(r: random.Random) -> str:
        return f"TRN{r.randrange(min(997, accounts))}"

    def pay_event(r: random.Random) -> str:
        p = r.randrange(payments)
        return f"{acct(r)}-P{p or ''}"

    return {
        "Account _id": ("Account", lambda r: [("_id", acct(r))]),
        "Account identifier system|value": ("Account", lambda r: [
            ("identifier", f"urn:rcmflow:account|{acct(r)}")]),
        "Account identifier value": ("Account", lambda r: [("identifier", acct(r))]),
        "Account patient": ("Account", lambda r: [("patient", f"Patient/pat.{acct(r)}")]),
        "Account status (all match)": ("Account", lambda r: [("status", "active")]),
        "Account status (none match)": ("Account", lambda r: [("status", "inactive")]),
        "Account _lastUpdated day": ("Account", lambda r: [("_lastUpdated", day(r, 11))]),
        "Account _lastUpdated ge (all)": ("Account", lambda r: [("_lastUpdated", "ge2026-01-01")]),
        "Account no parameter": ("Account", lambda r: []),
        "Claim identifier": ("Claim", lambda r: [("identifier", f"K{r.randrange(accounts)}")]),
        "Claim patient": ("Claim", lambda r: [("patient", f"pat.{acct(r)}")]),
        "Claim created day": ("Claim", lambda r: [("created", day(r, 10))]),
        "Claim created ge (all)": ("Claim", lambda r: [("created", "ge2026-01-01")]),
        "Claim status": ("Claim", lambda r: [("status", "active")]),
        "ClaimResponse request": ("ClaimResponse", lambda r: [
            ("request", f"Claim/{(a := acct(r))}.K{int(a[1:])}")]),
        "ClaimResponse patient": ("ClaimResponse", lambda r: [("patient", f"pat.{acct(r)}")]),
        "ClaimResponse outcome": ("ClaimResponse", lambda r: [("outcome", "complete")]),
        "ClaimResponse created lt": ("ClaimResponse", lambda r: [
            ("created", f"lt{day(r, 11)}")]),
        "ClaimResponse identifier + _include": ("ClaimResponse", lambda r: [
            ("identifier", f"{acct(r)}-R"), ("_include", "ClaimResponse:request")]),
        "PaymentReconciliation identifier (check, ~100 accounts)": (
            "PaymentReconciliation", lambda r: [("identifier", trace(r))]),
        "PaymentReconciliation identifier system|value (check)": (
            "PaymentReconciliation", lambda r: [
                ("identifier", f"urn:rcmflow:payment-trace|{trace(r)}")]),
        "PaymentReconciliation identifier (payment event)": (
            "PaymentReconciliation", lambda r: [("identifier", pay_event(r))]),
        "PaymentReconciliation identifier system| (all)": (
            "PaymentReconciliation", lambda r: [("identifier", "urn:rcmflow:event|")]),
        "PaymentReconciliation identifier system| (checks, 1 in 7)": (
            "PaymentReconciliation", lambda r: [("identifier", "urn:rcmflow:payment-trace|")]),
        "PaymentReconciliation identifier system| (none)": (
            "PaymentReconciliation", lambda r: [
                ("identifier", "urn:rcmflow:payment-reference|")]),
        "PaymentReconciliation identifier system| _summary=count": (
            "PaymentReconciliation", lambda r: [("identifier", "urn:rcmflow:event|"),
                                                ("_summary", "count")]),
        "PaymentReconciliation status _total=accurate": ("PaymentReconciliation", lambda r: [
            ("status", "active"), ("_total", "accurate")]),
        "PaymentReconciliation created day": ("PaymentReconciliation", lambda r: [
            ("created", day(r, 11))]),
        "PaymentReconciliation status": ("PaymentReconciliation", lambda r: [
            ("status", "active")]),
        "PaymentReconciliation _lastUpdated gt (all)": ("PaymentReconciliation", lambda r: [
            ("_lastUpdated", "gt2026-01-01")]),
        "PaymentReconciliation no parameter": ("PaymentReconciliation", lambda r: []),
        "PaymentReconciliation _summary=count": ("PaymentReconciliation", lambda r: [
            ("_summary", "count")]),
        "PaymentReconciliation patient-scoped (a patient's token)": (
            "PaymentReconciliation", lambda r: [("created", "ge2026-01-01")]),
    }


def time_searches(path: Path, accounts: int, payments: int, seed: int,
                  samples: int = SEARCH_SAMPLES) -> dict[str, Any]:
    from rcmflow.facade.params import RESOURCES, parse_search
    from rcmflow.facade.store import Store

    store = Store(path)
    rng = random.Random(seed)
    out: dict[str, Any] = {}

    def answer(type_: str, items: list[tuple[str, str]], patient: str | None = None,
               after: str | None = None) -> tuple[int | None, list[Any]]:
        """What the app does for a search: count, then a page and one more."""
        search = parse_search(RESOURCES[type_], items, strict=True, count_default=PAGE_SIZE,
                              count_max=1000, patient=patient)
        # As the app: counted up to search.total_max (before it, counted whole).
        total = store.count(search.query, search.total_max) if hasattr(
            search, "total_max") else store.count(search.query)
        rows = [] if search.summary_count else store.search(
            search.query, limit=search.count + 1, after=after or search.after,
            before=search.before)
        if search.include_request and rows:
            store.read_many("Claim", sorted({r.request for r in rows if r.request}))
        return total, rows

    for name, (type_, make) in search_kinds(accounts, payments).items():
        patient_scoped = name.endswith("(a patient's token)")
        times: list[float] = []
        matches = 0
        for n in range(samples):
            items = make(rng)
            patient = f"pat.P{rng.randrange(accounts):06d}" if patient_scoped else None
            if n == 0:  # how many match (counted whole, not timed)
                matches = store.count(parse_search(
                    RESOURCES[type_], items, strict=True, count_default=PAGE_SIZE,
                    count_max=1000, patient=patient).query) or 0
            t = time.perf_counter()
            answer(type_, items, patient)
            times.append((time.perf_counter() - t) * 1000)
        out[name] = _stats(times) | {"matches": matches}
        print(f"  {name:58} p50 {out[name]['p50_ms']:8.2f}  p99 {out[name]['p99_ms']:8.2f} ms"
              f"  matches {out[name]['matches']:,}", flush=True)
    # Deep pages: the next page from a cursor anywhere in the largest set (keyset paging).
    ids = [i for (i,) in store.db.execute(
        "SELECT id FROM resources WHERE type = 'PaymentReconciliation' ORDER BY id")]
    for name, items in (("next page deep (no parameter)", []),
                        ("next page deep (created ge, all)", [("created", "ge2026-01-01")]),
                        ("next page deep (status)", [("status", "active")]),
                        ("next page deep (identifier system|)",
                         [("identifier", "urn:rcmflow:event|")])):
        times = []
        for _ in range(samples):
            cursor = ids[rng.randrange(len(ids) // 2, len(ids))]
            t = time.perf_counter()
            answer("PaymentReconciliation", list(items), after=cursor)
            times.append((time.perf_counter() - t) * 1000)
        key = f"PaymentReconciliation {name}"
        out[key] = _stats(times)
        print(f"  {key:58} p50 {out[key]['p50_ms']:8.2f}  p99 {out[key]['p99_ms']:8.2f} ms",
              flush=True)
    store.close()
    return out


def _stats(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_percentile(times, 0.5), 2),
            "p99_ms": round(_percentile(times, 0.99), 2), "max_ms": round(max(times), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("mode", choices=("catchup", "searches"))
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--payments", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--store", type=Path, help="searches: reuse (or keep) this store")
    parser.add_argument("--samples", type=int, default=SEARCH_SAMPLES,
                        help="searches: timed searches per kind")
    parser.add_argument("--broker", choices=("tansu", "kafka"),
                        help="catchup: also through a real broker and the Feeder")
    args = parser.parse_args(argv)
    if args.mode == "catchup":
        args.accounts = args.accounts or 20_000
        args.payments = 8 if args.payments is None else args.payments
        result = catchup(args)
    else:
        args.accounts = args.accounts or 100_000
        args.payments = 6 if args.payments is None else args.payments
        path = args.store or Path(tempfile.mkdtemp(prefix="bench-facade-scale-")) / "read.sqlite"
        filled: dict[str, Any] = {}
        if not path.exists():
            print(f"filling {path} with {args.accounts:,} accounts x "
                  f"{4 + args.payments} resources ...", flush=True)
            filled = fill(path, args.accounts, args.payments, args.seed)
            print(f"  {filled}", flush=True)
        result = {"fill": filled, "searches": time_searches(
            path, args.accounts, args.payments, args.seed, args.samples)}
    run = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "mode": args.mode,
           "machine": _machine(), "accounts": args.accounts, "payments": args.payments,
           **result}
    out = REPO_ROOT / "bench" / "results" / (
        datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-facade-{args.mode}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(run, indent=2))
    print(json.dumps({k: v for k, v in run.items() if k != "searches"}, indent=1))
    print(f"raw numbers: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
