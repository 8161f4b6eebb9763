"""Faults at instants drawn from the run's seed, injected while the workload is fed.

Kinds (``target`` in brackets):

- ``worker_kill`` [w1|w2]: kill -9, started again after ``hold_s`` (the group rebalances);
- ``worker_pause`` [w1|w2]: SIGSTOP for ``hold_s`` (longer than the session timeout: the group
  moves its partitions away, and the stalled worker wakes up a zombie), then SIGCONT;
- ``mllp_kill``: kill -9 of the MLLP listener, started again after ``hold_s``;
- ``erp_kill``: kill -9 of the ERP connector, started again after ``hold_s``;
- ``tryton_outage``: trytond kill -9 (PostgreSQL rolls back what was in flight), back after
  ``hold_s``;
- ``broker_kill`` (Apache Kafka only): kill -9 of the broker, started again from its log after
  ``hold_s``.

A schedule is drawn from ``random.Random(seed)`` or given explicitly (``parse_schedule``:
``AT:KIND[:TARGET][:HOLD],...``, e.g. ``3:worker_kill:w1:1.5,9:tryton_outage::4``). Faults run
one after another: one starts at its instant or when the previous one is over, whichever is
later, and each is recorded with the instant it really started (seconds from the start).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from tests.chaos.stack import SESSION_TIMEOUT_S, WORKERS, Stack

__all__ = ["Fault", "Injected", "Injector", "KINDS", "draw_faults", "parse_schedule"]

KINDS = ("worker_kill", "worker_pause", "mllp_kill", "erp_kill", "tryton_outage",
         "broker_kill")
_TARGETED = {"worker_kill", "worker_pause"}


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    target: str = ""
    hold_s: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}: one of {', '.join(KINDS)}")
        if self.kind in _TARGETED and self.target not in WORKERS:
            raise ValueError(f"{self.kind} needs a worker: {', '.join(WORKERS)}")


@dataclass(frozen=True)
class Injected:
    fault: Fault
    #: Seconds from the start of the run when it was injected.
    at_s: float

    def __str__(self) -> str:
        target = f"({self.fault.target})" if self.fault.target else ""
        return f"{self.fault.kind}{target}@{self.at_s:.1f}s+{self.fault.hold_s:.1f}s"


def draw_faults(seed: int, broker_kind: str, window_s: float,
                count: tuple[int, int] = (3, 5)) -> list[Fault]:
    """``count`` faults (at least one worker kill or pause), their instants spread over the
    first ``window_s`` seconds of feeding; all drawn from ``random.Random(seed)``."""
    rng = random.Random(seed)
    kinds = [k for k in KINDS if broker_kind == "kafka" or k != "broker_kill"]
    n = rng.randint(*count)
    chosen = [rng.choice(["worker_kill", "worker_pause"])] + [rng.choice(kinds)
                                                             for _ in range(n - 1)]
    rng.shuffle(chosen)
    instants = sorted(rng.uniform(1.0, window_s) for _ in chosen)
    faults = []
    for at, kind in zip(instants, chosen, strict=True):
        target = rng.choice(WORKERS) if kind in _TARGETED else ""
        hold = {
            "worker_kill": rng.uniform(0.5, 3.0),
            "worker_pause": SESSION_TIMEOUT_S + rng.uniform(1.0, 3.0),
            "mllp_kill": rng.uniform(0.2, 2.0),
            "erp_kill": rng.uniform(0.5, 3.0),
            "tryton_outage": rng.uniform(2.0, 6.0),
            "broker_kill": rng.uniform(1.0, 3.0),
        }[kind]
        faults.append(Fault(round(at, 1), kind, target, round(hold, 1)))
    return faults


def parse_schedule(text: str) -> list[Fault]:
    """``AT:KIND[:TARGET][:HOLD],...`` (ValueError naming the bad entry)."""
    faults = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        parts = entry.split(":")
        try:
            at, kind = float(parts[0]), parts[1]
            target = parts[2] if len(parts) > 2 else ""
            hold = float(parts[3]) if len(parts) > 3 and parts[3] else (
                SESSION_TIMEOUT_S + 2 if kind == "worker_pause" else 1.0)
            faults.append(Fault(at, kind, target, hold))
        except (IndexError, ValueError) as exc:
            raise ValueError(f"fault {entry!r}: {exc} (AT:KIND[:TARGET][:HOLD])") from exc
    return sorted(faults, key=lambda f: f.at_s)


class Injector:
    """Runs a schedule in a thread, from ``start()``; ``join()`` waits for its end and
    re-raises what a fault failed with (a process that would not come back)."""

    def __init__(self, stack: Stack, faults: list[Fault], t0: float) -> None:
        self.stack, self.faults, self.t0 = stack, faults, t0
        self.injected: list[Injected] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="injector", daemon=True)

    def start(self) -> Injector:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Cut the schedule short (Ctrl-C, a failed feed): the fault in hand is undone."""
        self._stop.set()

    def join(self, timeout_s: float = 300) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the fault injector did not finish in {timeout_s:.0f}s")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            for fault in self.faults:
                wait = self.t0 + fault.at_s - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
                if self._stop.is_set():
                    return
                self.injected.append(Injected(fault, time.monotonic() - self.t0))
                self._inject(fault)
        except BaseException as exc:  # noqa: BLE001 - handed to join()
            self.error = exc

    def _hold(self, seconds: float) -> None:
        self._stop.wait(seconds)  # Ctrl-C cuts the hold short; the fault is undone anyway

    def _inject(self, fault: Fault) -> None:
        stack = self.stack
        if fault.kind in ("worker_kill", "mllp_kill", "erp_kill"):
            name = fault.target or fault.kind.removesuffix("_kill")
            stack.hold(name)
            try:
                self._hold(fault.hold_s)
            finally:
                stack.release(name)
        elif fault.kind == "worker_pause":
            stack.pause(fault.target)
            try:
                self._hold(fault.hold_s)
            finally:
                stack.resume(fault.target)
        elif fault.kind == "tryton_outage":
            stack.tryton_down()
            try:
                self._hold(fault.hold_s)
            finally:
                stack.tryton_up()
        elif fault.kind == "broker_kill":
            stack.broker_down()
            try:
                self._hold(fault.hold_s)
            finally:
                stack.broker_up()
