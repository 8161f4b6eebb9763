"""`rcmflow dev` and `rcmflow broker`: the whole system on one machine, on the embedded broker."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from types import FrameType

from rich import box
from rich.console import Console
from rich.table import Column, Table

from rcmflow.broker import BrokerError, EmbeddedBroker, ensure_topics, free_port, stop_process
from rcmflow.connectors.x12.files import ingest_x12_files
from rcmflow.demo import demo_lines
from rcmflow.demo_sources import (
    DEMO_ACCOUNT,
    DEMO_ACCOUNT_VERSION,
    HL7_FILE,
    X12_FILES,
    send_mllp,
)
from rcmflow.kafka_io import publish
from rcmflow.metrics import url
from rcmflow.ops import dlq_records, format_cents, latest_heads
from rcmflow.settings import EMBEDDED_PREFIX, Settings, embedded_broker_info
from rcmflow.streams.chart import ChartError, ChartOfAccounts, load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS, topic_specs

__all__ = ["run_dev", "run_broker", "DEMO_WAIT_S"]

#: How long `dev --demo` waits for the worker to apply the demo before saying it did not.
DEMO_WAIT_S = 120.0
WORKER_STOP_TIMEOUT_S = 30.0


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _start_embedded(settings: Settings, console: Console) -> EmbeddedBroker | None:
    if settings.broker:
        console.print("[red]this command runs the embedded broker; unset RCMFLOW_BROKER[/red]")
        return None
    running = embedded_broker_info(settings.broker_file)
    if running is not None:
        console.print(f"[red]an embedded broker already runs for {settings.data_dir}[/red] "
                      f"(pid {running['pid']}, {running['bootstrap']}); stop it, or use another "
                      "RCMFLOW_DATA_DIR")
        return None
    # Tables of earlier embedded brokers belong to topics that died with them.
    for stale in settings.tables_dir.glob(f"{EMBEDDED_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        broker = EmbeddedBroker(info_file=settings.broker_file, log_file=logs / "broker.log")
        broker.start()
        asyncio.run(ensure_topics(broker.connection, topic_specs(settings.app_id),
                                  settings.partitions, settings.replication_factor))
    except BrokerError as exc:
        console.print(f"[red]{exc}[/red]")
        return None
    return broker


def run_broker(settings: Settings, *, console: Console) -> int:
    broker = _start_embedded(settings, console)
    if broker is None:
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    console.print(f"embedded broker (Tansu, memory only) at [bold]{broker.bootstrap}[/bold]\n"
                  f"  RCMFLOW_BROKER={broker.url}  (other rcmflow commands find it by themselves"
                  f" through {settings.broker_file})\n  topics created; Ctrl-C stops it")
    try:
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
        console.print("[red]the broker exited[/red]")
        return 1
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        broker.stop()


def run_dev(settings: Settings, *, demo: bool, console: Console) -> int:
    try:
        chart = load_chart(settings.coa)
    except ChartError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    broker = _start_embedded(settings, console)
    if broker is None:
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    worker_log = settings.data_dir / "logs" / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    services: list[subprocess.Popen[bytes]] = []  # the facade and the MLLP listener
    # Each process its own metrics port: the configured one, else a free one picked here,
    # so that dev never clashes with itself or with another program on the machine.
    worker_metrics = settings.worker_metrics_port or free_port()
    mllp_metrics = settings.mllp_metrics_port or free_port()
    try:
        with open(worker_log, "ab") as log_handle:
            worker = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "worker",
                                       "--metrics-port", str(worker_metrics)],
                                      stdout=log_handle, stderr=subprocess.STDOUT,
                                      env=dict(os.environ))
        console.print(
            f"[bold]rcmflow dev[/bold]\n"
            f"  broker  {broker.bootstrap}  (Tansu, memory only; log {settings.data_dir}/logs/"
            f"broker.log)\n"
            f"  worker  pid {worker.pid}  (log {worker_log})\n"
            f"  chart   {settings.coa or 'shipped default'} version {chart.version}\n"
            f"  data    {settings.data_dir}"
        )
        services.append(_start_facade(settings, console))
        services.append(_start_mllp(settings, console, mllp_metrics))
        console.print(
            f"  metrics worker {url(settings.metrics_host, worker_metrics)} · mllp "
            f"{url(settings.metrics_host, mllp_metrics)} · facade "
            f"{url(settings.facade_host, settings.facade_port)}"
        )
        if demo:
            _feed_demo(settings, broker, chart, worker, console)
            _feed_demo_files(settings, broker, worker, console)
        fhir = (f"http://{settings.facade_host}:{settings.facade_port}"
                f"{settings.facade_base_path}")
        console.print(f"\nFHIR facade: [bold]curl -s {fhir}/Account/A1001[/bold] · "
                      f"{fhir}/ClaimResponse?patient=pat.A1001 · {fhir}/metadata")
        console.print("\nTry: [bold]rcmflow accounts list[/bold] · [bold]rcmflow accounts show "
                      "A1001[/bold] · [bold]rcmflow accounts history A1002[/bold] · "
                      "[bold]rcmflow dlq list[/bold] · [bold]rcmflow ingest events FILE[/bold] · "
                      "[bold]rcmflow ingest x12 FILE[/bold] · an HL7 interface to "
                      f"{settings.mllp_host}:{settings.mllp_port}"
                      "\nRunning; Ctrl-C stops the worker and the broker.")
        while worker.poll() is None:
            time.sleep(0.5)
        console.print(f"[red]the worker exited with {worker.returncode}; see {worker_log}[/red]")
        return 1
    except (KeyboardInterrupt, _Stop):
        console.print("stopping ...")
        return 0
    finally:
        for service in services:
            stop_process(service, WORKER_STOP_TIMEOUT_S)
        if worker is not None:
            stop_process(worker, WORKER_STOP_TIMEOUT_S)
        broker.stop()


def _start_facade(settings: Settings, console: Console) -> subprocess.Popen[bytes]:
    """`rcmflow facade` with auth off: development only, and said so loudly."""
    log = settings.data_dir / "logs" / "facade.log"
    with open(log, "ab") as log_handle:
        facade = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "facade"],
                                  stdout=log_handle, stderr=subprocess.STDOUT,
                                  env={**os.environ, "RCMFLOW_FACADE_AUTH": "off"})
    console.print(f"  facade  pid {facade.pid}  http://{settings.facade_host}:"
                  f"{settings.facade_port}{settings.facade_base_path}  (log {log})\n"
                  "  [bold red]FHIR facade auth is OFF (RCMFLOW_FACADE_AUTH=off): anyone on "
                  "this machine reads every account. Development only.[/bold red]")
    return facade


def _start_mllp(settings: Settings, console: Console,
                metrics_port: int) -> subprocess.Popen[bytes]:
    """`rcmflow mllp`: HL7 v2 over MLLP into rcm.events."""
    log = settings.data_dir / "logs" / "mllp.log"
    with open(log, "ab") as log_handle:
        listener = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "mllp",
                                     "--metrics-port", str(metrics_port)],
                                    stdout=log_handle, stderr=subprocess.STDOUT,
                                    env=dict(os.environ))
    console.print(f"  mllp    pid {listener.pid}  {settings.mllp_host}:{settings.mllp_port}  "
                  f"(HL7 v2 listener; log {log})")
    return listener


def _feed_demo_files(settings: Settings, broker: EmbeddedBroker,
                     worker: subprocess.Popen[bytes], console: Console) -> None:
    """One visit in real formats: a DFT^P03 over MLLP, then its 837P claim and 835 remit."""
    kafka = broker.connection
    console.print(f"\nreal formats for account {DEMO_ACCOUNT}: {HL7_FILE.name} over MLLP ...")
    try:
        code = send_mllp(settings.mllp_host, settings.mllp_port, HL7_FILE.read_bytes())
    except (OSError, ValueError, TimeoutError) as exc:
        console.print(f"[red]the MLLP listener did not answer ({exc}); see its log[/red]")
        return
    console.print(f"  ACK {code}")
    ingest_x12_files(settings, kafka, X12_FILES, console=console)
    deadline = time.monotonic() + DEMO_WAIT_S
    snap: dict[str, object] = {}
    with console.status(f"applying {DEMO_ACCOUNT}"):
        while time.monotonic() < deadline and worker.poll() is None:
            snap = asyncio.run(latest_heads(kafka)).get(DEMO_ACCOUNT, {})
            if snap.get("version") == DEMO_ACCOUNT_VERSION:
                break
            time.sleep(1.0)
        else:
            console.print(f"[red]{DEMO_ACCOUNT} was not applied within {DEMO_WAIT_S:.0f}s; "
                          "see the worker log[/red]")
            return
    b = snap["balances"]
    assert isinstance(b, dict)
    console.print(f"  {DEMO_ACCOUNT}: charges {format_cents(b['gross_charges'])}, payer paid "
                  f"{format_cents(b['payer_paid'])}, contractual "
                  f"{format_cents(b['contractual_adjustments'])}, insurance AR "
                  f"{format_cents(b['insurance_ar'])}, patient AR {format_cents(b['patient_ar'])}")


def _feed_demo(settings: Settings, broker: EmbeddedBroker, chart: ChartOfAccounts,
               worker: subprocess.Popen[bytes], console: Console) -> None:
    lines = demo_lines()
    kafka = broker.connection
    asyncio.run(publish(kafka, [(EVENTS, k.encode(), v) for k, v in lines]))
    expected = _expected_versions(lines, chart)
    console.print(f"\nfed {len(lines)} demo events (with replays, a conflict and invalid ones); "
                  "waiting for the worker (its first group join takes ~5 s) ...")
    deadline = time.monotonic() + DEMO_WAIT_S
    snapshots: dict[str, dict[str, object]] = {}
    with console.status("applying demo events"):
        while time.monotonic() < deadline and worker.poll() is None:
            snapshots = asyncio.run(latest_heads(kafka))
            if all(snapshots.get(a, {}).get("version") == v for a, v in expected.items()):
                break
            time.sleep(1.0)
        else:
            console.print(f"[red]the worker did not apply the demo within {DEMO_WAIT_S:.0f}s; "
                          "see its log[/red]")
            return
    table = Table(Column("account", min_width=19), "status", "ver", "charges", "ins. AR",
                  "pt. AR", "balance", title="demo accounts (USD)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for account in expected:
        snap = snapshots[account]
        b = snap["balances"]
        assert isinstance(b, dict)
        table.add_row(account, str(snap["status"]), str(snap["version"]),
                      *(format_cents(b[k]) for k in ("gross_charges", "insurance_ar",
                                                     "patient_ar", "balance")))
    console.print(table)
    dlq = asyncio.run(dlq_records(kafka))
    reasons = sorted({str(r["reason_code"]) for r in dlq})
    console.print(f"rcm.dlq holds {len(dlq)} records: {', '.join(reasons)}")


def _expected_versions(lines: list[tuple[str, bytes]], chart: ChartOfAccounts) -> dict[str, int]:
    """The version each demo account ends at: the pure core, run locally on the same input."""
    messages = [Message(EVENTS, 0, i, k.encode(), v) for i, (k, v) in enumerate(lines)]
    result = Processor(chart).process(messages, MemoryTables())
    return {account: head.version for (_, account), head in result.heads.items()}
