"""Who else used the CPU during the run: the bench shares 2 cores with whatever else runs.

Samples every process's CPU time once a second and splits it into this bench's process tree
(harness, broker, system under test) and everything else, so RESULTS.md can say whether the
numbers were taken on a quiet machine. The bench's own CPU is split further into the broker
(``broker_pids``), the harness (this process and its ``bench.probe`` readers) and the system
under test (every other child), so a phase's CPU per event can be told apart.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import suppress
from dataclasses import dataclass, field

import psutil

__all__ = ["LoadSampler", "Mark", "CPU_CLASSES"]

INTERVAL_S = 1.0
#: How the bench's own CPU is split.
CPU_CLASSES = ("harness", "broker", "system")
#: (foreign CPU s, wall s, harness CPU s, broker CPU s, system CPU s) so far.
Mark = tuple[float, float, float, float, float]


@dataclass
class LoadSampler:
    own_cpu_s: float = 0.0
    foreign_cpu_s: float = 0.0
    wall_s: float = 0.0
    #: Foreign CPU seconds per command name, the largest consumers.
    foreign_by_name: dict[str, float] = field(default_factory=dict)
    #: The broker's processes (set by the harness once it started the broker).
    broker_pids: set[int] = field(default_factory=set)
    own_by_class: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CPU_CLASSES,
                                                                                 0.0))
    _classes: dict[int, str] = field(default_factory=dict)
    #: (wall s, foreign CPU s) of each sample: the recent foreign load.
    _recent: list[tuple[float, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _last: dict[int, float] = field(default_factory=dict)

    def _class(self, pid: int) -> str:
        known = self._classes.get(pid)
        if known is not None:
            return known
        if pid in self.broker_pids:
            found = "broker"
        elif pid == os.getpid():
            found = "harness"
        else:
            try:
                found = "harness" if "bench.probe" in psutil.Process(pid).cmdline() \
                    else "system"
            except psutil.Error:
                found = "system"
        self._classes[pid] = found
        return found

    def _sample(self) -> tuple[float, float, dict[str, float]]:
        own_pids = {os.getpid()}
        with suppress(psutil.Error):
            own_pids |= {p.pid for p in psutil.Process().children(recursive=True)}
        own = foreign = 0.0
        names: dict[str, float] = {}
        seen: dict[int, float] = {}
        for proc in psutil.process_iter(["pid", "name", "cpu_times"]):
            times = proc.info.get("cpu_times")
            if times is None:
                continue
            total = times.user + times.system
            seen[proc.pid] = total
            delta = total - self._last.get(proc.pid, total if not self._last else 0.0)
            if delta <= 0:
                continue
            if proc.pid in own_pids:
                own += delta
                self.own_by_class[self._class(proc.pid)] += delta
            else:
                foreign += delta
                names[proc.info.get("name") or "?"] = names.get(proc.info.get("name") or "?",
                                                                0.0) + delta
        self._last = seen
        return own, foreign, names

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._sample()
        last = loop.time()
        while True:
            await asyncio.sleep(INTERVAL_S)
            own, foreign, names = self._sample()
            now = loop.time()
            self.wall_s += now - last
            self._recent = [*self._recent[-300:], (now - last, foreign)]
            last = now
            self.own_cpu_s += own
            self.foreign_cpu_s += foreign
            for name, cpu in names.items():
                self.foreign_by_name[name] = self.foreign_by_name.get(name, 0.0) + cpu

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def foreign_cores_last(self, seconds: float) -> float | None:
        """Average cores other processes used over the last ``seconds`` (None: too few
        samples yet)."""
        wall = cpu = 0.0
        for sample_wall, sample_cpu in reversed(self._recent):
            if wall >= seconds:
                break
            wall += sample_wall
            cpu += sample_cpu
        return cpu / wall if wall >= seconds * 0.9 else None

    async def wait_quiet(self, below_cores: float, quiet_for_s: float,
                         timeout_s: float) -> tuple[float | None, float]:
        """Wait until other processes used less than ``below_cores`` over the last
        ``quiet_for_s`` seconds, at most ``timeout_s``; returns (that load, seconds waited)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            load = self.foreign_cores_last(quiet_for_s)
            waited = loop.time() - started
            if (load is not None and load < below_cores) or waited >= timeout_s:
                return load, waited
            await asyncio.sleep(INTERVAL_S)

    def mark(self) -> Mark:
        """CPU and wall seconds so far (see ``Mark``): subtract two marks for one phase."""
        c = self.own_by_class
        return (self.foreign_cpu_s, self.wall_s, c["harness"], c["broker"], c["system"])

    @staticmethod
    def cores_between(start: Mark, end: Mark) -> float | None:
        wall = end[1] - start[1]
        return round((end[0] - start[0]) / wall, 3) if wall > 0 else None

    @staticmethod
    def split_between(start: Mark, end: Mark) -> dict[str, float]:
        """Wall seconds and CPU seconds per class (and foreign) between two marks."""
        out = {"wall_s": end[1] - start[1], "foreign": end[0] - start[0]}
        for i, name in enumerate(CPU_CLASSES, start=2):
            out[name] = end[i] - start[i]
        return {k: round(v, 2) for k, v in out.items()}

    def summary(self) -> dict[str, object]:
        top = sorted(self.foreign_by_name.items(), key=lambda kv: -kv[1])[:5]
        return {
            "wall_s": round(self.wall_s, 1),
            "own_cpu_s": round(self.own_cpu_s, 1),
            "foreign_cpu_s": round(self.foreign_cpu_s, 1),
            "foreign_cores_avg": round(self.foreign_cpu_s / self.wall_s, 3) if self.wall_s else 0,
            "foreign_top": {name: round(cpu, 1) for name, cpu in top},
            "own_by_class": {name: round(cpu, 1) for name, cpu in self.own_by_class.items()},
        }
