"""FHIR facade load test on loopback: reads/s and p50/p99 latency for read and search.

    python -m bench.facade                 # 100,000 accounts, ~3 min
    python -m bench.facade --accounts 5000 --seconds 5   # smoke run

1. Builds a read model of N accounts: real rcm.accounts records (heads and items) from the
   real core (Processor on MemoryTables: a charge, a claim,
   its 835 adjudication with a PR amount and a patient payment per account), through the
   store's own ingest (resources built and written as the feed does it; FHIR validation is
   timed on a sample, since at ~1 ms per resource it is an ingest cost, not a read cost).
2. Serves it with `uvicorn` in its own process (one worker, auth ON: every request carries a
   JWT that is verified), as `rcmflow facade` does.
3. From this process (a minimal HTTP/1.1 client on asyncio streams, keep-alive
   connections): a closed loop (C requests in flight, as fast as
   the server answers) per kind, then an open loop at a fixed rate (default 500 req/s, half
   reads of a random Account, half searches of a random patient's ClaimResponses). Open-loop
   latency is measured from each request's scheduled send time, so a stalled server or client
   shows as latency (no coordinated omission).

Both processes share the machine's 2 cores: the client's own cost is in the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench.procs import REPO_ROOT

__all__ = ["main", "fill_store", "served_app"]

JWT_KEY = "bench-signing-key-of-enough-length-for-hs256"
STORE_ENV = "RCMFLOW_BENCH_FACADE_STORE"
START_TIMEOUT_S = 60.0
VALIDATION_SAMPLE = 500
FILL_BATCH = 2_000
#: Connections serving the open loop: enough that a slow request does not hold the others.
OPEN_LOOP_CONNECTIONS = 16


def _events(n: int, rng: random.Random, payments: int = 1) -> list[dict[str, Any]]:
    """One account's day: a charge, a claim, its 835 adjudication, ``payments`` patient
    payments (the first event ids end -C, -S, -R, -P, -P1, -P2, ...)."""
    account = f"P{n:06d}"
    day = 1 + n % 28
    cents = 5_000 + rng.randrange(200_000)
    pr = rng.randrange(cents // 4)
    co = rng.randrange(cents // 4)
    paid = cents - pr - co
    dims = {"entity": "01", "payer": "ACME", "payer_class": "COMMERCIAL"}
    at = f"2026-10-{day:02d}T09:00:00-05:00"
    base = {"schema_version": 1, "account": account, "source": "bench"}
    return [
        {**base, "event_id": f"{account}-C", "kind": "charge_posted", "occurred_at": at,
         "amount_cents": cents, "dimensions": {"entity": "01", "revenue_code": "0450"}},
        {**base, "event_id": f"{account}-S", "kind": "claim_submitted", "occurred_at": at,
         "claim_id": f"K{n}", "total_charge_cents": cents, "dimensions": dims},
        {**base, "event_id": f"{account}-R", "kind": "claim_adjudicated",
         "occurred_at": f"2026-11-{day:02d}T10:00:00Z", "claim_id": f"K{n}",
         "outcome": "processed", "charge_cents": cents, "paid_cents": paid,
         "patient_responsibility_cents": pr, "correlation_id": f"TRN{n % 997}",
         "adjustments": [{"group": "CO", "reason": "45", "amount_cents": co},
                         {"group": "PR", "reason": "2", "amount_cents": pr}],
         "dimensions": dims},
        *({**base, "event_id": f"{account}-P{p or ''}", "kind": "patient_payment",
           "occurred_at": f"2026-11-{day:02d}T12:{p % 60:02d}:00Z",
           "amount_cents": max(1, pr // (2 + p))} for p in range(payments)),
    ]


def fill_store(path: Path, accounts: int, seed: int) -> dict[str, float]:
    """Fill a read model with ``accounts`` accounts; returns timings."""
    from rcmflow.facade.resources import build_resources, validate
    from rcmflow.facade.store import Store
    from rcmflow.streams.chart import load_chart
    from rcmflow.streams.layout import parse_key
    from rcmflow.streams.memory_tables import MemoryTables
    from rcmflow.streams.processor import Message, Processor
    from rcmflow.streams.topics import EVENTS

    processor = Processor(load_chart())
    rng = random.Random(seed)
    store = Store(path, validate_every=0)
    t0 = time.perf_counter()
    core_s = 0.0
    sample: list[tuple[bytes, bytes]] = []
    applied = 0
    for start in range(0, accounts, FILL_BATCH):
        c0 = time.perf_counter()
        # The pure core over this batch's events: the heads and items rcm.accounts carries.
        docs = [doc for n in range(start, min(accounts, start + FILL_BATCH))
                for doc in _events(n, rng)]
        tables = MemoryTables()
        result = processor.process([Message(EVENTS, 0, i, d["account"].encode(),
                                            json.dumps(d).encode())
                                    for i, d in enumerate(docs)], tables)
        assert result.counts.applied == len(docs), result.counts
        tables.write(result)
        records: list[tuple[str, bytes | None]] = [
            (key.decode(), value) for (_, key), value in tables.accounts.items()]
        core_s += time.perf_counter() - c0
        if len(sample) < VALIDATION_SAMPLE:
            sample += [(k.encode(), v) for k, v in records[: VALIDATION_SAMPLE - len(sample)]
                       if v is not None]
        applied += len(records)
        store.apply(records, {0: applied})
    fill_s = time.perf_counter() - t0
    heads: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[Any, dict[str, Any]]] = {}
    for key, value in sample:
        parsed = parse_key(key)
        if parsed.item is None:
            heads[parsed.account] = json.loads(value)
        else:
            items.setdefault(parsed.account, {})[parsed.item] = json.loads(value)
    v0 = time.perf_counter()
    resources = 0
    for account, head in heads.items():
        for built in build_resources(head, items.get(account, {})):
            validate(built.doc)
            resources += 1
    validate_ms = (time.perf_counter() - v0) * 1000 / max(1, resources)
    count = store.account_count()
    store.close()
    assert count == accounts, (count, accounts)
    return {"fill_s": round(fill_s, 1), "core_s": round(core_s, 1),
            "store_s": round(fill_s - core_s, 1),
            "validate_ms_per_resource": round(validate_ms, 3),
            "db_mb": round(path.stat().st_size / 1e6, 1)}


def served_app() -> Any:
    """uvicorn factory: the facade app over the bench store, auth on, no feed."""
    from rcmflow.facade.app import FacadeConfig, create_app
    from rcmflow.facade.auth import Authenticator
    from rcmflow.facade.store import Store

    store = Store(Path(os.environ[STORE_ENV]))
    return create_app(store, Authenticator(enabled=True, key=JWT_KEY, algorithm="HS256"),
                      FacadeConfig())


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(latencies_ms: list[float], errors: int, seconds: float) -> dict[str, float]:
    return {"requests": len(latencies_ms), "errors": errors,
            "req_per_s": round(len(latencies_ms) / seconds, 1),
            "p50_ms": round(_percentile(latencies_ms, 0.50), 2),
            "p99_ms": round(_percentile(latencies_ms, 0.99), 2),
            "max_ms": round(max(latencies_ms, default=float("nan")), 2),
            "mean_ms": round(statistics.fmean(latencies_ms), 2) if latencies_ms else 0.0}


class _Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time.

    The load generator speaks HTTP itself: httpx's pool costs more CPU per request than the
    facade does, and with thousands of queued requests it scans its queue per request, so
    it would measure itself, on the same 2 cores."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.head = (f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                     "Accept: application/fhir+json\r\n\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> int:
        """The status of GET ``target`` (its body is read whole)."""
        try:
            return await self._get(target)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closes idle keep-alive connections (uvicorn: after 5 s): once more
            # on a new one.
            await self.close()
            self.writer = None
            return await self._get(target)

    async def _get(self, target: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"GET " + target.encode() + b" HTTP/1.1\r\n" + self.head)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


Target = Callable[[], str]


def _targets(accounts: int, rng: random.Random) -> dict[str, Target]:
    return {
        "read": lambda: f"/fhir/Account/P{rng.randrange(accounts):06d}",
        "search": lambda: f"/fhir/ClaimResponse?patient=pat.P{rng.randrange(accounts):06d}",
    }


async def _closed_loop(connections: list[_Connection], target: Target,
                       seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def lane(connection: _Connection) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            if await connection.get(target()) != 200:
                errors += 1
            latencies.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane(c) for c in connections))
    return _summary(latencies, errors, time.perf_counter() - t0)


async def _open_loop(connections: list[_Connection], targets: dict[str, Target], rate: float,
                     seconds: float) -> dict[str, dict[str, float]]:
    """Requests scheduled at ``rate``, alternating kinds, served by the connections in
    turn; each latency counts from its scheduled time (queueing included)."""
    names = list(targets)
    by_kind: dict[str, list[float]] = {k: [] for k in names}
    errors = dict.fromkeys(names, 0)
    total = int(rate * seconds)
    queue: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()

    async def lane(connection: _Connection) -> None:
        while (item := await queue.get()) is not None:
            kind, scheduled = item
            if await connection.get(targets[kind]()) != 200:
                errors[kind] += 1
            by_kind[kind].append((time.perf_counter() - scheduled) * 1000)

    lanes = [asyncio.create_task(lane(c)) for c in connections]
    t0 = time.perf_counter() + 0.1
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((names[i % len(names)], scheduled))
    for _ in lanes:
        queue.put_nowait(None)
    await asyncio.gather(*lanes)
    return {k: _summary(v, errors[k], seconds) for k, v in by_kind.items()}


async def _load(port: int, accounts: int, args: argparse.Namespace) -> dict[str, Any]:
    token = jwt.encode({"scope": "system/*.read", "exp": int(time.time() + 3600)}, JWT_KEY,
                       algorithm="HS256")
    targets = _targets(accounts, random.Random(args.seed))
    closed_lanes = [_Connection("127.0.0.1", port, token) for _ in range(args.concurrency)]
    open_lanes = [_Connection("127.0.0.1", port, token) for _ in range(OPEN_LOOP_CONNECTIONS)]
    try:
        for target in targets.values():  # warm-up: connections, SQLite page cache
            await asyncio.gather(*(c.get(target()) for c in closed_lanes + open_lanes))
        closed = {k: await _closed_loop(closed_lanes, t, args.seconds)
                  for k, t in targets.items()}
        opened = await _open_loop(open_lanes, targets, args.rate, args.seconds * 2)
    finally:
        for c in closed_lanes + open_lanes:
            await c.close()
    return {"closed_loop": closed, "open_loop": opened}


def _serve(store: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, STORE_ENV: str(store)}
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "bench.facade:served_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--no-access-log"], cwd=REPO_ROOT, env=env, stdout=handle,
            stderr=subprocess.STDOUT)


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "the facade exited at start"
        try:
            if httpx.get(f"{base}/fhir/metadata", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the facade did not answer in {START_TIMEOUT_S:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="closed-loop seconds per kind (open loop: twice that)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop lanes")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--store", type=Path, help="reuse (or keep) this read model file")
    args = parser.parse_args(argv)

    from rcmflow.facade.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-facade-"))
    store = args.store or work / "read.sqlite"
    fill: dict[str, float] = {}
    if store.exists() and Store(store).account_count() == args.accounts:
        print(f"reusing {store}")
    else:
        store.unlink(missing_ok=True)
        print(f"filling a read model with {args.accounts:,} accounts ...", flush=True)
        fill = fill_store(store, args.accounts, args.seed)
        print(f"  {fill}", flush=True)
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = _serve(store, port, work / "facade.log")
    try:
        _wait_ready(base, server)
        results = asyncio.run(_load(port, args.accounts, args))
    finally:
        server.terminate()
        server.wait(30)
    run = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
           "accounts": args.accounts, "rate": args.rate, "seconds": args.seconds,
           "concurrency": args.concurrency, "cores": os.cpu_count(), "fill": fill, **results}
    out = REPO_ROOT / "bench" / "results" / (
        datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-facade.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(run, indent=2))
    print(f"\nclosed loop ({args.concurrency} in flight, {args.seconds:.0f} s each):")
    for kind, r in results["closed_loop"].items():
        print(f"  {kind:6} {r['req_per_s']:>8,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
              f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}")
    print(f"open loop ({args.rate:.0f} req/s, half each, {args.seconds * 2:.0f} s):")
    for kind, r in results["open_loop"].items():
        print(f"  {kind:6} {r['req_per_s']:>8,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
              f"p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:.1f} ms  errors {r['errors']}")
    print(f"raw numbers: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
