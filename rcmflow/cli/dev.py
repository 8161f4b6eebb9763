"""`rcmflow dev` and `rcmflow broker`: the whole system on one machine, on the embedded broker."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psutil
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from rcmflow.cli.demo import demo_lines
from rcmflow.cli.demo_sources import (
    DEMO_ACCOUNT,
    DEMO_ACCOUNT_VERSION,
    HL7_FILE,
    X12_FILES,
    send_mllp,
)
from rcmflow.connectors.inbound.x12.files import ingest_x12_files
from rcmflow.ops.accounts import dlq_records, latest_heads
from rcmflow.runtime.broker import EmbeddedBroker, ensure_topics, free_port
from rcmflow.runtime.exceptions import BrokerError
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_io import publish
from rcmflow.runtime.metrics import url
from rcmflow.runtime.settings import EMBEDDED_PREFIX, Settings, embedded_broker_info
from rcmflow.streams.chart import ChartOfAccounts, load_chart
from rcmflow.streams.exceptions import ChartError
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.money import cents_for_people
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS, topic_specs

__all__ = ["run_dev", "run_broker", "wait_ready", "Child", "DEMO_WAIT_S", "READY_TIMEOUT_S",
           "DEV_LOGIN"]

#: The ops site's login `rcmflow dev` makes (an operator; a new password at each start).
DEV_LOGIN = "dev"

#: How long `dev --demo` waits for the worker to apply the demo before saying it did not.
DEMO_WAIT_S = 120.0
WORKER_STOP_TIMEOUT_S = 30.0


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _stop_on_signals() -> None:
    """SIGTERM and Ctrl-C (SIGINT) stop the stack. SIGINT explicitly: a process started in
    the background by a shell without job control (CI, nohup scripts) inherits SIGINT
    ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)


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


def run_broker(settings: Settings, *, console: Console) -> ExitCode:
    broker = _start_embedded(settings, console)
    if broker is None:
        return ExitCode.REFUSED
    _stop_on_signals()
    console.print(f"embedded broker (Tansu, memory only) at [bold]{broker.bootstrap}[/bold]\n"
                  f"  RCMFLOW_BROKER={broker.url}  (other rcmflow commands find it by themselves"
                  f" through {settings.broker_file})\n  topics created; Ctrl-C stops it")
    try:
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
        console.print("[red]the broker exited[/red]")
        return ExitCode.PROCESS_EXITED
    except (KeyboardInterrupt, _Stop):
        return ExitCode.OK
    finally:
        broker.stop()


#: How long each child may take to listen on its ports (the worker creates topics first).
READY_TIMEOUT_S = 90.0
#: Bytes of a child's log read back to say why it did not start.
LOG_TAIL_BYTES = 4096


@dataclass
class Child:
    """A process `dev` started, its log, and the ports it must be listening on: ready means
    *this* process (or one it started) holds them, not merely that something answers there."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_start: int  # the log's size before this run: what came after is this run's
    #: (port, the setting that changes it)
    ports: list[tuple[int, str]] = field(default_factory=list)

    def listening(self) -> set[int]:
        """The TCP ports this process and its children listen on now."""
        try:
            root = psutil.Process(self.process.pid)
            procs = [root, *root.children(recursive=True)]
            return {c.laddr.port for p in procs for c in p.net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN}
        except psutil.Error:  # exited meanwhile
            return set()

    def log_tail(self) -> str:
        try:
            with self.log.open("rb") as handle:
                handle.seek(max(self.log_start, self.log.stat().st_size - LOG_TAIL_BYTES))
                return handle.read().decode("utf-8", errors="replace").strip()
        except OSError:
            return ""

    def why_not(self) -> str:
        """Why it is not running: its own words (the log's last lines) and the settings of
        the ports it could not take."""
        tail = [line.strip() for line in self.log_tail().splitlines() if line.strip()]
        # An OS error (a port in use) says most; then the last error line; then the last.
        bound = [line for line in tail if "in use" in line or "Errno" in line]
        errors = [line for line in tail if "error" in line.lower()]
        cause = (bound or errors or tail or ["(its log says nothing)"])[-1]
        named = [(port, setting) for port, setting in self.ports if str(port) in cause]
        ports = named or self.ports
        hint = "; ".join(f"port {port} is {setting}: set it to a free port" for port, setting
                         in ports)
        return f"{cause}\n  {hint}  (log {self.log})" if hint else f"{cause} (log {self.log})"


def _spawn(name: str, args: list[str], log: Path, ports: list[tuple[int, str]],
           env: dict[str, str] | None = None) -> Child:
    log_start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as handle:
        process = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", *args],
                                   stdout=handle, stderr=subprocess.STDOUT,
                                   env=env or dict(os.environ))
    return Child(name, process, log, log_start, [(p, s) for p, s in ports if p])


def wait_ready(children: list[Child], timeout_s: float = READY_TIMEOUT_S) -> str | None:
    """Wait until every child listens on all its ports; else why one did not (None: ready).
    A child that exits fails at once; one still not listening at the deadline fails then."""
    waiting = list(children)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for child in list(waiting):
            if child.process.poll() is not None:
                return (f"the {child.name} exited with {child.process.returncode} before it "
                        f"was ready: {child.why_not()}")
            if {port for port, _ in child.ports} <= child.listening():
                waiting.remove(child)
        if waiting and time.monotonic() > deadline:
            child = waiting[0]
            missing = [p for p, _ in child.ports if p not in child.listening()]
            return (f"the {child.name} did not listen on port {missing} within "
                    f"{timeout_s:.0f}s: {child.why_not()}")
        time.sleep(0.2)
    return None


def run_dev(settings: Settings, *, demo: bool, console: Console) -> ExitCode:
    try:
        chart = load_chart(settings.coa)
    except ChartError as exc:
        console.print(f"[red]{exc}[/red]")
        return ExitCode.REFUSED
    broker = _start_embedded(settings, console)
    if broker is None:
        return ExitCode.REFUSED
    _stop_on_signals()
    logs = settings.data_dir / "logs"
    children: list[Child] = []
    # Each process its own metrics port: the configured one, else a free one picked here,
    # so that dev never clashes with itself or with another program on the machine.
    worker_metrics = settings.worker_metrics_port or free_port()
    mllp_metrics = settings.mllp_metrics_port or free_port()
    try:
        worker = _spawn("worker", ["worker", "--metrics-port", str(worker_metrics)],
                        logs / "worker.log",
                        [(worker_metrics, "RCMFLOW_WORKER_METRICS_PORT")])
        children.append(worker)
        # The facade with auth off: development only, and said so loudly below.
        children.append(_spawn("facade", ["facade"], logs / "facade.log",
                               [(settings.facade_port, "RCMFLOW_FACADE_PORT")],
                               env={**os.environ, "RCMFLOW_FACADE_AUTH": "off"}))
        children.append(_spawn("MLLP listener", ["mllp", "--metrics-port", str(mllp_metrics)],
                               logs / "mllp.log",
                               [(settings.mllp_port, "RCMFLOW_MLLP_PORT"),
                                (mllp_metrics, "RCMFLOW_MLLP_METRICS_PORT")]))
        # The operators' site, its Health view reading the processes started here.
        ops_password = _dev_login(settings)
        children.append(_spawn("ops site", ["ops"], logs / "ops.log",
                               [(settings.ops_port, "RCMFLOW_OPS_PORT")],
                               env={**os.environ,
                                    "RCMFLOW_WORKER_METRICS_PORT": str(worker_metrics),
                                    "RCMFLOW_MLLP_METRICS_PORT": str(mllp_metrics)}))
        with console.status("starting the worker, the facade, the MLLP listener and the ops "
                            "site"):
            failure = wait_ready(children)
        if failure is not None:
            console.print(f"[red]rcmflow dev: {escape(failure)}[/red]\nstopping the others.",
                          soft_wrap=True, highlight=False)
            return ExitCode.REFUSED
        _print_started(settings, broker, chart, children, worker_metrics, mllp_metrics,
                       ops_password, console)
        if demo:
            _feed_demo(settings, broker, chart, worker.process, console)
            _feed_demo_files(settings, broker, worker.process, console)
        fhir = (f"http://{settings.facade_host}:{settings.facade_port}"
                f"{settings.facade_base_path}")
        console.print(f"\nFHIR facade: [bold]curl -s {fhir}/Account/A1001[/bold] · "
                      f"{fhir}/ClaimResponse?patient=pat.A1001 · {fhir}/metadata")
        console.print("\nTry: [bold]rcmflow accounts list[/bold] · [bold]rcmflow accounts show "
                      "A1001[/bold] · [bold]rcmflow accounts history A1002[/bold] · "
                      "[bold]rcmflow dlq list[/bold] · [bold]rcmflow ingest events FILE[/bold] · "
                      "[bold]rcmflow ingest x12 FILE[/bold] · an HL7 interface to "
                      f"{settings.mllp_host}:{settings.mllp_port}"
                      "\nRunning; Ctrl-C stops them all.")
        while True:
            for child in children:
                if child.process.poll() is not None:
                    console.print(f"[red]the {child.name} exited with "
                                  f"{child.process.returncode}: {escape(child.why_not())}[/red]",
                                  soft_wrap=True, highlight=False)
                    return ExitCode.PROCESS_EXITED
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        console.print("stopping ...")
        return ExitCode.OK
    finally:
        _stop_all([child.process for child in children], WORKER_STOP_TIMEOUT_S)
        broker.stop()


def _stop_all(processes: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM to every child at once, one shared grace period, then SIGKILL: stopping takes
    the slowest child's time, not the sum of theirs."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _dev_login(settings: Settings) -> str:
    """The ops site's ``dev`` login (an operator who may approve refunds: the demo's refund
    request waits for one), with a new random password each start."""
    from rcmflow.ops.server import users_of

    password = secrets.token_urlsafe(12)
    users_of(settings).set(DEV_LOGIN, "operator", password, ("refund_approver",))
    return password


def _print_started(settings: Settings, broker: EmbeddedBroker, chart: ChartOfAccounts,
                   children: list[Child], worker_metrics: int, mllp_metrics: int,
                   ops_password: str, console: Console) -> None:
    worker, facade, listener, ops = children
    console.print(
        f"[bold]rcmflow dev[/bold]\n"
        f"  broker  {broker.bootstrap}  (Tansu, memory only; log {settings.data_dir}/logs/"
        f"broker.log)\n"
        f"  worker  pid {worker.process.pid}  (log {worker.log})\n"
        f"  chart   {settings.coa or 'shipped default'} version {chart.version}\n"
        f"  data    {settings.data_dir}\n"
        f"  facade  pid {facade.process.pid}  http://{settings.facade_host}:"
        f"{settings.facade_port}{settings.facade_base_path}  (log {facade.log})\n"
        "  [bold red]FHIR facade auth is OFF (RCMFLOW_FACADE_AUTH=off): anyone on "
        "this machine reads every account. Development only.[/bold red]\n"
        f"  mllp    pid {listener.process.pid}  {settings.mllp_host}:{settings.mllp_port}  "
        f"(HL7 v2 listener; log {listener.log})\n"
        f"  ops     pid {ops.process.pid}  http://{settings.ops_host}:{settings.ops_port}  "
        f"(operators' site; log {ops.log})\n"
        f"          log in as {DEV_LOGIN}, password {ops_password} (may approve refunds: "
        f"Refunds, or `rcmflow ops-login {DEV_LOGIN}` then `rcmflow refunds list`)\n"
        f"  metrics worker {url(settings.metrics_host, worker_metrics)} · mllp "
        f"{url(settings.metrics_host, mllp_metrics)} · facade "
        f"{url(settings.facade_host, settings.facade_port)}"
    )


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
    console.print(f"  {DEMO_ACCOUNT}: charges {cents_for_people(b['gross_charges'])}, payer paid "
                  f"{cents_for_people(b['payer_paid'])}, contractual "
                  f"{cents_for_people(b['contractual_adjustments'])}, insurance AR "
                  f"{cents_for_people(b['insurance_ar'])}, patient AR "
                  f"{cents_for_people(b['patient_ar'])}")


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
                      *(cents_for_people(b[k]) for k in ("gross_charges", "insurance_ar",
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
