"""`rcmflow dev` as a user runs it: real processes, a real embedded broker, real ports.

A port `dev` needs may be held by another program. `dev` must then stop with the cause and
the setting that moves the port, never say "Running" or talk to the other program.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rcmflow.runtime.broker import free_port

#: An MLLP ACK an impostor sends whatever it receives.
IMPOSTOR_ACK = b"\x0bMSH|^~\\&|IMPOSTOR|X|||20260101||ACK|1|P|2.5\rMSA|AA|1\r\x1c\r"


class Impostor:
    """Another program's plain TCP server on a port: it accepts, answers an MLLP AA to
    anything, and counts what it was sent."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.received = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    if conn.recv(65536):
                        self.received += 1
                        conn.sendall(IMPOSTOR_ACK)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def impostor() -> Iterator[Impostor]:
    server = Impostor()
    try:
        yield server
    finally:
        server.close()


def _dev(tmp_path: Path, *args: str, timeout_s: float = 150, **env: str) -> tuple[int, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    full.update(RCMFLOW_DATA_DIR=str(tmp_path / "data"), COLUMNS="200", **env)
    full.setdefault("RCMFLOW_FACADE_PORT", str(free_port()))
    full.setdefault("RCMFLOW_MLLP_PORT", str(free_port()))
    full.setdefault("RCMFLOW_OPS_PORT", str(free_port()))
    # Its own session: on a timeout the whole group goes (dev, its broker and children).
    dev = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "dev", *args], env=full,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        output, _ = dev.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(dev.pid, signal.SIGKILL)
        output, _ = dev.communicate()
        pytest.fail(f"rcmflow dev still ran after {timeout_s}s:\n{output.decode()}")
    return dev.returncode, output.decode()


@pytest.mark.parametrize("flags", [(), ("--demo",)])
def test_facade_port_taken_stops_dev_with_the_cause_and_setting(
        tmp_path: Path, impostor: Impostor, flags: tuple[str, ...]) -> None:
    started = time.monotonic()
    code, output = _dev(tmp_path, *flags, RCMFLOW_FACADE_PORT=str(impostor.port))
    assert code == 2, output
    assert "Running" not in output and "ACK" not in output, output
    assert "facade" in output and "address already in use" in output, output
    assert f"port {impostor.port} is RCMFLOW_FACADE_PORT" in output, output
    assert time.monotonic() - started < 60, "it failed fast, without waiting for the demo"


def test_mllp_port_taken_never_talks_to_the_other_program(tmp_path: Path,
                                                          impostor: Impostor) -> None:
    code, output = _dev(tmp_path, "--demo", RCMFLOW_MLLP_PORT=str(impostor.port))
    assert code == 2, output
    assert "Running" not in output and "ACK AA" not in output, output
    assert "address already in use" in output, output
    assert f"port {impostor.port} is RCMFLOW_MLLP_PORT" in output, output
    assert impostor.received == 0, "the demo DFT went to another program's listener"


def test_dev_runs_once_every_child_listens_and_stops_them_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    facade_port, mllp_port, ops_port = free_port(), free_port(), free_port()
    env.update(RCMFLOW_DATA_DIR=str(tmp_path / "data"), COLUMNS="200",
               RCMFLOW_FACADE_PORT=str(facade_port), RCMFLOW_MLLP_PORT=str(mllp_port),
               RCMFLOW_OPS_PORT=str(ops_port))
    log = tmp_path / "dev.out"
    with open(log, "wb") as handle:
        dev = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "dev"], env=env,
                               stdout=handle, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Running" not in log.read_text() and dev.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert dev.poll() is None, log.read_text()
        # Ready means listening: every port takes a connection now.
        for port in (facade_port, mllp_port, ops_port):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # The ops site's dev login, as printed, logs in.
        login = re.search(r"log in as (\S+), password (\S+)", log.read_text())
        assert login, log.read_text()
        answer = httpx.post(f"http://127.0.0.1:{ops_port}/login", timeout=10,
                            data={"username": login[1], "password": login[2]})
        assert answer.status_code == 303 and "rcmflow_ops" in answer.cookies
        dev.send_signal(signal.SIGINT)
        assert dev.wait(90) == 0, log.read_text()
        for port in (facade_port, mllp_port, ops_port):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


def test_broker_that_dies_ends_rcmflow_broker_with_exit_5(tmp_path: Path) -> None:
    from rcmflow.runtime.exit_codes import ExitCode
    from rcmflow.runtime.settings import EMBEDDED_BROKER_FILE

    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env["RCMFLOW_DATA_DIR"] = str(tmp_path)
    command = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "broker"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        info = tmp_path / EMBEDDED_BROKER_FILE
        deadline = time.monotonic() + 60
        while not info.is_file() and command.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert info.is_file(), "the embedded broker did not start"
        os.kill(json.loads(info.read_text())["pid"], signal.SIGKILL)  # Tansu, killed
        output, _ = command.communicate(timeout=30)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait()
    # Not 1 (ATTENTION: done, but look at the answer): a process it ran has gone.
    assert command.returncode == ExitCode.PROCESS_EXITED, output.decode()
    assert "the broker exited" in output.decode()
