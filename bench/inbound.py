"""Inbound connectors: MLLP messages/s with ACKs, and 835 claims parsed per second.

    python -m bench.inbound                      # 4 clients x 2,000 DFTs, 5,000-claim 835
    python -m bench.inbound --messages 200 --claims 500   # smoke run

1. MLLP: the embedded broker and `rcmflow mllp` (its own process, as deployed) on loopback;
   C client connections in this process, each sending its messages one after the other and
   waiting for each ACK (as interface engines do: one message in flight per connection).
   Every message is a new DFT^P03 with two FT1 charges, so each AA means three records
   (raw message + two events) acknowledged by the broker (acks=all). Reported: messages/s
   over the whole run, ACK latency p50/p99, and that every ACK was AA.
2. 835: one interchange with N claims (each with CO and PR adjustments and a service line),
   built in memory, parsed and balanced by the connector exactly as `ingest x12` does
   (pyx12 reader, envelope and balancing checks, events built), without and with pyx12's
   implementation-guide validation. Reported: claims/s.

The broker, the listener and the clients share the machine's cores: the clients' cost is in
the MLLP numbers. The target is >= 2,000 messages/s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rcmflow.connectors.inbound.hl7.framing import END_BLOCK, frame
from rcmflow.connectors.inbound.x12.ingest import X12Limits, process_x12
from rcmflow.runtime.broker import EmbeddedBroker, ensure_topics, free_port, stop_process
from rcmflow.streams.topics import topic_specs
from tests.connectors.inbound.x12.x12_build import ClaimSpec, LineSpec, envelope, remit_segments

PARTITIONS = 4


def dft(n: int) -> bytes:
    """A new DFT^P03 (its own MSH-10) with two charges for one of 1,000 accounts."""
    account = f"B{n % 1000:05d}"
    return "\r".join([
        f"MSH|^~\\&|BENCH|HOSP|RCMFLOW|HOSP|20260301090000+0000||DFT^P03^DFT_P03|B{n:08d}|P|2.5",
        "EVN|P03|20260301090000+0000",
        f"PID|1||MRN{n}^^^HOSP^MR||BENCH^PATIENT||19800101|F||||||||||{account}",
        f"PV1|1|O|CLINIC||||||||||||||||E{n}",
        "FT1|1|T1||20260301|20260301|CG|71045^Chest x-ray^C4|||1|100.00||RAD",
        "FT1|2|T2||20260301|20260301|CG|85025^Blood count^C4|||1|50.00||LAB",
    ]).encode() + b"\r"


async def client(port: int, first: int, count: int, latencies: list[float],
                 codes: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in range(first, first + count):
            sent = time.perf_counter()
            writer.write(frame(dft(n)))
            await writer.drain()
            ack = await reader.readuntil(END_BLOCK + b"\r")
            latencies.append(time.perf_counter() - sent)
            msa = next(s for s in ack.strip(b"\x0b\x1c\r").split(b"\r") if s.startswith(b"MSA"))
            code = msa.split(b"|")[1].decode()
            codes[code] = codes.get(code, 0) + 1
    finally:
        writer.close()


def wait_for_port(port: int, listener: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if listener.poll() is not None:
            raise SystemExit(f"rcmflow mllp exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit("rcmflow mllp did not listen within 30 s")


def bench_mllp(clients: int, messages: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.connection, topic_specs("rcmflow"), PARTITIONS, 1))
        port = free_port()
        log = Path(tmp) / "mllp.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
        env.update(RCMFLOW_BROKER=broker.url, RCMFLOW_DATA_DIR=tmp,
                   RCMFLOW_PARTITIONS=str(PARTITIONS), RCMFLOW_LOG_LEVEL="warn")
        with open(log, "wb") as handle:
            listener = subprocess.Popen(
                [sys.executable, "-m", "rcmflow.cli", "mllp", "--port", str(port)],
                env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, listener, log)
            # Warm-up: the listener's first writes open its producer connections.
            asyncio.run(client(port, 10_000_000, 20, [], {}))
            latencies: list[float] = []
            codes: dict[str, int] = {}
            per_client = messages // clients

            async def run_all() -> None:
                await asyncio.gather(*(client(port, i * per_client, per_client, latencies,
                                              codes) for i in range(clients)))

            started = time.perf_counter()
            asyncio.run(run_all())
            elapsed = time.perf_counter() - started
        finally:
            stop_process(listener, 30)
    cuts = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "messages": len(latencies), "seconds": round(elapsed, 2),
            "messages_per_s": round(len(latencies) / elapsed),
            "ack_p50_ms": round(cuts[49] * 1000, 1), "ack_p99_ms": round(cuts[98] * 1000, 1),
            "acks": codes}


def remit(claims: int) -> bytes:
    # Adjustments at service level (CO-45, PR-1 deductible): each claim balances once.
    specs = [ClaimSpec(f"R{n:06d}", 15000, 9000, pcn=f"PCN{n}",
                       lines=[LineSpec("99213", 15000, 9000,
                                       cas=[("CO", "45", 4000), ("PR", "1", 2000)])])
             for n in range(claims)]
    return envelope(remit_segments(specs, trn02="BENCHEFT"))


def bench_835(claims: int) -> dict[str, object]:
    data = remit(claims)
    out: dict[str, object] = {"claims": claims, "bytes": len(data)}
    for guide in (False, True):
        limits = X12Limits(segments_max=10_000_000, guide_validation=guide)
        started = time.perf_counter()
        outcome = process_x12(data, origin="bench", limits=limits)
        elapsed = time.perf_counter() - started
        assert outcome.ok() and len(outcome.events) == claims, outcome.reason_text()
        key = "with_guide" if guide else "without_guide"
        out[f"claims_per_s_{key}"] = round(claims / elapsed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--messages", type=int, default=8_000, help="MLLP messages in all")
    parser.add_argument("--claims", type=int, default=5_000, help="claims in the 835")
    args = parser.parse_args()
    print(f"{datetime.now(UTC):%Y-%m-%dT%H:%MZ}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {platform.platform()}")
    print("835:", bench_835(args.claims))
    print("MLLP:", bench_mllp(args.clients, args.messages))


if __name__ == "__main__":
    main()
