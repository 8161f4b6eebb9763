"""The whole pipeline as real processes for one fault run, each with its own log file.

Broker (Tansu or Apache Kafka), two `rcmflow worker` in one group over 8 partitions,
`rcmflow mllp`, `rcmflow watch DIR`, `rcmflow erp tryton` on a real Tryton + PostgreSQL (a
clone of the suite's template), `rcmflow facade` with JWT auth. Every process can be killed
(-9), paused (SIGSTOP/SIGCONT) and started again; a supervisor starts again whatever exits
on its own (as systemd's ``Restart=always`` would) and counts it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt

from rcmflow.runtime.broker import EmbeddedBroker, ensure_topics, free_port
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.topics import topic_specs
from tests.apache_kafka.server import ApacheKafka
from tests.connectors.erp.tryton_server import ADMIN_PASSWORD, TrytonServer, TrytonSite

__all__ = ["Stack", "Proc", "StackError", "PARTITIONS", "SESSION_TIMEOUT_S", "JWT_KEY",
           "JWT_AUDIENCE", "WORKERS"]

PARTITIONS = 8
#: The workers' consumer session: a SIGSTOPped worker is out of the group after it. Short, so
#: a pause longer than it stays short (production: 10 s).
SESSION_TIMEOUT_S = 4.0
WORKERS = ("w1", "w2")
JWT_KEY = "chaos-run-signing-key-of-enough-length-for-hs256"
JWT_AUDIENCE = "https://chaos.example.org/fhir"
#: Longest wait for one process to be ready (a JVM or a Faust worker on 2 busy cores).
READY_TIMEOUT_S = 120.0


class StackError(RuntimeError):
    """A process of the stack did not come up (the message names it and its log)."""


def wait_for(check: object, timeout_s: float, what: str) -> None:
    """Poll ``check()`` until true; StackError naming ``what`` after ``timeout_s``."""
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    """One `rcmflow` command, started again (a new log file each time) after a kill."""

    name: str
    args: list[str]
    env: dict[str, str]
    run_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    paused: bool = False
    #: Set while a fault holds it down on purpose: the supervisor leaves it alone.
    held: bool = False

    @property
    def log(self) -> Path:
        return self.run_dir / f"{self.name}-{max(self.starts - 1, 0)}.log"

    def start(self) -> None:
        log = self.run_dir / f"{self.name}-{self.starts}.log"
        self.starts += 1
        with open(log, "wb") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rcmflow.cli", *self.args], env=self.env,
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # Ctrl-C reaches the runner, which stops it in order
        self.paused = False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.alive():
            assert self.process is not None
            if self.paused:
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.paused = False

    def pause(self) -> None:
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.alive() and self.paused:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout_s: float = 20) -> None:
        if self.alive():
            assert self.process is not None
            self.resume()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class RestartableKafka(ApacheKafka):
    """Apache Kafka that can be killed -9 and started again from its log (same ports)."""

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        self.start(format_storage=False)


@dataclass
class Stack:
    """Every process of one run. ``start()`` brings it up; ``close()`` stops all of it."""

    run_dir: Path
    broker_kind: str
    site: TrytonSite
    #: Extra environment per process name (w1, w2, mllp, watch, erp, facade) or "*" for all.
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    broker: EmbeddedBroker | RestartableKafka | None = None
    tryton: TrytonServer | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    #: Processes that exited on their own and were started again by the supervisor.
    unexpected_exits: Counter[str] = field(default_factory=Counter)
    mllp_port: int = field(default_factory=free_port)
    facade_port: int = field(default_factory=free_port)
    #: Set when the run is cut short (Ctrl-C, a failed delivery): senders stop resending.
    stopping: threading.Event = field(default_factory=threading.Event)
    _supervising: threading.Event = field(default_factory=threading.Event)
    _supervisor: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def drop_dir(self) -> Path:
        return self.run_dir / "drop"

    @property
    def kafka(self) -> KafkaConnection:
        assert self.broker is not None
        return self.broker.connection

    def base_env(self) -> dict[str, str]:
        assert self.broker is not None and self.tryton is not None
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RCMFLOW_", "TRYTON"))}
        env.update(
            RCMFLOW_BROKER=self.broker.url, RCMFLOW_DATA_DIR=str(self.data_dir),
            RCMFLOW_PARTITIONS=str(PARTITIONS), RCMFLOW_LOG_LEVEL="info",
            RCMFLOW_SESSION_TIMEOUT_S=str(SESSION_TIMEOUT_S),
            RCMFLOW_BATCH_MAX="200", RCMFLOW_WATCH_POLL_S="0.5",
            RCMFLOW_HL7_WRITE_TIMEOUT_S="10", RCMFLOW_PRODUCE_TIMEOUT_S="30",
            # The ERP connector: fast retries and a short breaker, so an outage ends fast.
            RCMFLOW_ERP_PROGRESS_S="0.5", RCMFLOW_ERP_BACKOFF_BASE_S="0.1",
            RCMFLOW_ERP_BACKOFF_MAX_S="1", RCMFLOW_ERP_BREAKER_COOLDOWN_S="1",
            RCMFLOW_ERP_RETRY_MAX="5", RCMFLOW_ERP_TIMEOUT_S="5",
            RCMFLOW_ERP_TRYTON_URL=self.tryton.url, RCMFLOW_ERP_TRYTON_DB=self.tryton.db,
            RCMFLOW_ERP_TRYTON_PASSWORD=ADMIN_PASSWORD,
            RCMFLOW_FACADE_PORT=str(self.facade_port), RCMFLOW_FACADE_JWT_KEY=JWT_KEY,
            RCMFLOW_FACADE_JWT_AUDIENCE=JWT_AUDIENCE,
            RCMFLOW_FACADE_PUBLIC_URL=f"http://127.0.0.1:{self.facade_port}/fhir",
            # The facade validates 1 in N resources it builds; every one costs ~1 ms of CPU.
            RCMFLOW_FACADE_VALIDATE_EVERY="20",
        )
        env.update(self.extra_env.get("*", {}))
        return env

    # -- bring up / tear down -------------------------------------------------------------

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.drop_dir.mkdir(exist_ok=True)
        if self.broker_kind == "kafka":
            kafka = RestartableKafka(data_dir=self.run_dir / "kafka",
                                     log_file=self.run_dir / "kafka.log")
            self.broker = kafka
            kafka.start()
        else:
            self.broker = EmbeddedBroker(log_file=self.run_dir / "tansu.log")
            self.broker.start()
        asyncio.run(ensure_topics(self.kafka, topic_specs("rcmflow"), PARTITIONS, 1))
        # A clone of the template per run, served from the run dir (its log kept there).
        name = f"rcm_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.site.postgres.clone(name, self.site.template)
        self.tryton = TrytonServer(self.site.postgres, self.run_dir, name).start()
        base = self.base_env()
        commands = {
            **{w: ["worker"] for w in WORKERS},
            "mllp": ["mllp", "--port", str(self.mllp_port)],
            "watch": ["watch", str(self.drop_dir)],
            "erp": ["erp", "tryton"],
            "facade": ["facade"],
        }
        for name, args in commands.items():
            env = base | self.extra_env.get(name, {})
            if name in WORKERS:
                env["RCMFLOW_WORKER_NAME"] = name
            self.procs[name] = Proc(name, args, env, self.run_dir)
        for proc in self.procs.values():
            proc.start()
        self.wait_ready()
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor",
                                            daemon=True)
        self._supervising.set()
        self._supervisor.start()

    def wait_ready(self) -> None:
        """The listeners answer (MLLP port open, the facade's metadata served)."""
        wait_for(lambda: _port_open(self.mllp_port) or self._died("mllp"), READY_TIMEOUT_S,
                 "the MLLP listener to listen")
        self._check_alive("mllp")
        wait_for(lambda: self._facade_up() or self._died("facade"), READY_TIMEOUT_S,
                 "the facade to answer")
        self._check_alive("facade")

    def _died(self, name: str) -> bool:
        return not self.procs[name].alive()

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if not proc.alive():
            raise StackError(f"{name} exited at start ({proc.log}):\n{proc.log_tail()}")

    def _facade_up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.facade_port}/fhir/metadata",
                             timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _supervise(self) -> None:
        while self._supervising.is_set():
            with self._lock:
                for name, proc in self.procs.items():
                    if not proc.held and proc.process is not None and not proc.alive():
                        self.unexpected_exits[name] += 1
                        proc.start()
            time.sleep(0.5)

    def close(self) -> None:
        """Stop everything, whatever state it is in; never raises."""
        self.stopping.set()
        self._supervising.clear()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for proc in self.procs.values():
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - the others must still stop
                proc.kill()
        if self.tryton is not None:
            try:
                self.tryton.stop()
                self.site.postgres.drop(self.tryton.db)
            except Exception:  # noqa: BLE001
                pass
        if self.broker is not None:
            try:
                self.broker.stop()
            except Exception:  # noqa: BLE001
                pass

    # -- faults -----------------------------------------------------------------------------

    def hold(self, name: str) -> Proc:
        """kill -9 ``name`` and keep it down until ``release``."""
        with self._lock:
            proc = self.procs[name]
            proc.held = True
            proc.kill()
        return proc

    def release(self, name: str) -> None:
        with self._lock:
            proc = self.procs[name]
            proc.start()
            proc.held = False

    def pause(self, name: str) -> None:
        with self._lock:
            self.procs[name].held = True  # a stopped process is not an exited one
            self.procs[name].pause()

    def resume(self, name: str) -> None:
        with self._lock:
            self.procs[name].resume()
            self.procs[name].held = False

    def tryton_down(self) -> None:
        assert self.tryton is not None
        self.tryton.kill()

    def tryton_up(self) -> None:
        assert self.tryton is not None
        self.tryton.start()

    def broker_down(self) -> None:
        assert isinstance(self.broker, RestartableKafka), "a broker kill needs Apache Kafka"
        self.broker.kill()

    def broker_up(self) -> None:
        assert isinstance(self.broker, RestartableKafka)
        self.broker.restart()

    def bring_everything_up(self) -> None:
        """After the faults: every process running, none paused, Tryton and the broker up."""
        assert self.tryton is not None
        if self.tryton.process is None:
            self.tryton.start()
        if isinstance(self.broker, RestartableKafka) and self.broker.process is None:
            self.broker.restart()
        with self._lock:
            for proc in self.procs.values():
                proc.resume()
                if not proc.alive():
                    proc.start()
                proc.held = False
        self.wait_ready()

    # -- for the checks -----------------------------------------------------------------------

    def command(self, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        """Run one `rcmflow` command with the stack's settings (its output kept in a log)."""
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", *args],
                              env=self.base_env(), capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
        log = self.run_dir / f"cmd-{args[0]}.log"
        with open(log, "a") as handle:
            handle.write(f"$ rcmflow {' '.join(args)}\n-> exit {done.returncode}\n"
                         f"{done.stdout}\n{done.stderr}\n")
        return done

    def facade_token(self) -> str:
        now = int(time.time())
        return jwt.encode({"sub": "chaos", "scope": "system/*.read", "aud": JWT_AUDIENCE,
                           "iat": now, "exp": now + 600}, JWT_KEY, algorithm="HS256")

    @property
    def facade_base(self) -> str:
        return f"http://127.0.0.1:{self.facade_port}/fhir"
