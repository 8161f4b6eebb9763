"""Subprocesses under test: start, watch memory, stop, collect their printed results."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.reference import RESULT_FILE_ENV, RESULT_PREFIX, vmhwm_kb

__all__ = ["SystemProcess", "ProcessGroup", "REPO_ROOT", "TimedRun", "run_timed"]

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 30.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RSS_POLL_S = 0.25


class SystemProcess:
    """One process of a system under test, its output in ``log_path``.

    Peak memory: the kernel's VmHWM of the process (and of any children), read just before it
    is stopped, cross-checked with RSS polled every 0.25 s.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.result_path = log_path.with_suffix(".result")
        self.env = {**env, RESULT_FILE_ENV: str(self.result_path)}
        self.popen: subprocess.Popen[bytes] | None = None
        self.rss_peak_bytes = 0
        self.vmhwm_kb: int | None = None
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> SystemProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=REPO_ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        log.close()
        self._poller = asyncio.get_running_loop().create_task(self._poll_rss())
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def exited(self) -> int | None:
        assert self.popen is not None
        return self.popen.poll()

    def _tree(self) -> list[psutil.Process]:
        try:
            proc = psutil.Process(self.pid)
            return [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return []

    async def _poll_rss(self) -> None:
        while self.popen is not None and self.popen.poll() is None:
            total = 0
            for proc in self._tree():
                with suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.rss_peak_bytes = max(self.rss_peak_bytes, total)
            await asyncio.sleep(RSS_POLL_S)

    def read_vmhwm(self) -> int | None:
        """Sum of the peak RSS (VmHWM) of the process tree, in KiB, while it is alive."""
        peaks = [vmhwm_kb(proc.pid) for proc in self._tree()]
        known = [p for p in peaks if p is not None]
        if known:
            self.vmhwm_kb = sum(known)
        return self.vmhwm_kb

    async def wait(self, timeout_s: float) -> int | None:
        """Wait for the process to exit by itself; None if it is still running."""
        assert self.popen is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.popen.poll() is None and loop.time() < deadline:
            self.read_vmhwm()
            await asyncio.sleep(0.1)
        return self.popen.poll()

    async def stop(self) -> int | None:
        """SIGTERM (graceful), then SIGKILL after STOP_TIMEOUT_S; returns the exit code."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.read_vmhwm()
            self.popen.send_signal(signal.SIGTERM)
            if await self.wait(STOP_TIMEOUT_S) is None:
                with suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        if self._poller is not None:
            self._poller.cancel()
            with suppress(asyncio.CancelledError):
                await self._poller
        return self.popen.returncode

    @property
    def peak_rss_mb(self) -> float | None:
        kb = self.vmhwm_kb
        candidates = [self.rss_peak_bytes / 2**20]
        if kb is not None:
            candidates.append(kb / 1024)
        result = self.result()
        printed = result.get("vmhwm_kb") if result else None
        if isinstance(printed, (int, float)) and printed:
            candidates.append(printed / 1024)
        peak = max(candidates)
        return peak if peak > 0 else None

    def result(self) -> dict[str, object] | None:
        """The last ``BENCH_RESULT {...}`` line the process wrote, if any."""
        try:
            lines = self.result_path.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            if line.startswith(RESULT_PREFIX):
                parsed = json.loads(line[len(RESULT_PREFIX):])
                return parsed if isinstance(parsed, dict) else None
        return None

    def log_findings(self, limit: int = 10) -> list[str]:
        """Warning, error and traceback lines of the process's log (ANSI escapes removed)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        found = []
        for line in ANSI.sub("", text).splitlines():
            if RESULT_PREFIX in line:
                continue
            if any(word in line for word in ("[WARNING]", "[ERROR]", "[CRITICAL]", "Traceback",
                                             "Error:", "Exception")):
                found.append(line.strip()[:300])
        return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit
                                else [])

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ProcessGroup:
    """Several processes of one system (workers of one consumer group), seen as one: the
    first exit of any of them is the group's, memory is their sum, logs are concatenated."""

    def __init__(self, members: list[SystemProcess]) -> None:
        assert members
        self.members = members

    def start(self) -> ProcessGroup:
        for member in self.members:
            member.start()
        return self

    @property
    def pid(self) -> int:
        return self.members[0].pid

    @property
    def pids(self) -> list[int]:
        return [m.pid for m in self.members]

    def exited(self) -> int | None:
        for member in self.members:
            code = member.exited()
            if code is not None:
                return code
        return None

    def read_vmhwm(self) -> int | None:
        peaks = [m.read_vmhwm() for m in self.members]
        known = [p for p in peaks if p is not None]
        return sum(known) if known else None

    async def wait(self, timeout_s: float) -> int | None:
        codes = await asyncio.gather(*(m.wait(timeout_s) for m in self.members))
        return next((c for c in codes if c not in (0, None)), codes[0])

    async def stop(self) -> int | None:
        codes = await asyncio.gather(*(m.stop() for m in self.members))
        return next((c for c in codes if c not in (0, None)), codes[0])

    @property
    def peak_rss_mb(self) -> float | None:
        peaks = [m.peak_rss_mb for m in self.members]
        known = [p for p in peaks if p is not None]
        return sum(known) if known else None

    def result(self) -> dict[str, object] | None:
        return self.members[0].result()

    def log_findings(self, limit: int = 10) -> list[str]:
        return [f"{m.name}[{i + 1}]: {line}" for i, m in enumerate(self.members)
                for line in m.log_findings(limit)]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {m.log_path.name} ---\n{m.log_tail(lines)}"
                         for m in self.members)


@dataclass
class TimedRun:
    """A command run to its end under ``/usr/bin/time -v``."""

    exit: int
    max_rss_kb: int | None
    wall_s: float
    output: dict[str, Any] | None  # its stdout read as JSON (None: not JSON)
    log: str  # its stderr, then time's report


def run_timed(command: list[str], out_file: Path, log_file: Path,
              env: dict[str, str]) -> TimedRun:
    """Run ``command`` (stdout to ``out_file``, stderr to ``log_file``) under GNU time: its
    peak RSS with children and its wall time, from time's own report."""
    with open(out_file, "wb") as out, open(log_file, "wb") as log:
        done = subprocess.run(["/usr/bin/time", "-v", *command], stdout=out, stderr=log,
                              env=env, check=False)
    text = log_file.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    seconds = 0.0
    for part in (wall.group(1).split(":") if wall else ()):
        seconds = seconds * 60 + float(part)
    try:
        output = json.loads(out_file.read_text())
    except ValueError:
        output = None
    return TimedRun(done.returncode, int(rss.group(1)) if rss else None, seconds, output, text)
