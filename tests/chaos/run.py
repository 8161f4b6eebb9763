"""One fault run: bring the stack up, feed the seeded workload phase by phase while the
injector fires its faults, bring everything back, wait until caught up, check, print a line.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rcmflow.runtime.kafka_access import erp_group
from rcmflow.streams.topics import EVENTS, POSTINGS
from tests.chaos.checks import Observed, check_balances, facade_difference, run_checks
from tests.chaos.feed import FeedError, feed_phase, wait_caught_up
from tests.chaos.injector import Fault, Injected, Injector, draw_faults
from tests.chaos.model import Expected, Workload
from tests.chaos.oracle import expect
from tests.chaos.stack import Stack, StackError
from tests.chaos.workload import generate
from tests.connectors.erp.tryton_server import TrytonSite

__all__ = ["RunResult", "run_one", "workload_for", "DEFAULT_WINDOW_S"]

#: Faults are drawn over the first this-many seconds of feeding.
DEFAULT_WINDOW_S = 20.0
#: After the faults, how long the facade may take to show the final balances.
FACADE_CATCH_UP_S = 60.0


def workload_for(seed: int, accounts: int) -> tuple[Workload, Expected]:
    """The seeded generator's workload and what the independent oracle says it must give."""
    workload = generate(seed, accounts)
    return workload, expect(workload)


@dataclass
class RunResult:
    seed: int
    broker: str
    faults: list[Injected] = field(default_factory=list)
    inputs: int = 0
    deliveries: int = 0
    postings: int = 0
    restarts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: (check, first difference) of every failed check; empty: PASS.
    failures: list[tuple[str, str]] = field(default_factory=list)
    run_dir: Path | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def line(self) -> str:
        faults = ",".join(str(f) for f in self.faults) or "-"
        restarts = ",".join(f"{k}:{v}" for k, v in sorted(self.restarts.items())) or "-"
        verdict = "PASS" if self.passed else (
            f"FAIL {self.failures[0][0]}: {self.failures[0][1]}"
            + (f" (+{len(self.failures) - 1} more checks)" if len(self.failures) > 1 else "")
            + f" [logs: {self.run_dir}]")
        return (f"seed={self.seed} broker={self.broker} faults=[{faults}] "
                f"inputs={self.inputs} deliveries={self.deliveries} postings={self.postings} "
                f"restarts={restarts} {self.seconds:.0f}s {verdict}")


def run_one(seed: int, broker: str, site: TrytonSite, base_dir: Path, *, accounts: int = 20,
            faults: list[Fault] | None = None, window_s: float = DEFAULT_WINDOW_S,
            extra_env: dict[str, dict[str, str]] | None = None, keep: bool = False,
            workload: tuple[Workload, Expected] | None = None,
            say: Callable[[str], None] = lambda _: None) -> RunResult:
    """One seeded run on ``broker``; its processes' logs stay in the run directory when it
    fails (or with ``keep``). Raises only on Ctrl-C, with every process stopped."""
    started = time.monotonic()
    work, expected = workload or workload_for(seed, accounts)
    schedule = faults if faults is not None else draw_faults(seed, broker, window_s)
    run_dir = base_dir / f"seed-{seed}-{broker}"
    shutil.rmtree(run_dir, ignore_errors=True)
    result = RunResult(seed, broker, inputs=expected.inputs,
                       deliveries=len(work.deliveries), run_dir=run_dir)
    stack = Stack(run_dir, broker, site, extra_env=extra_env or {})
    injector: Injector | None = None
    try:
        say(f"seed {seed}: starting the stack in {run_dir}")
        stack.start()
        t0 = time.monotonic()
        injector = Injector(stack, schedule, t0).start()
        for n, phase in enumerate(work.phases()):
            say(f"seed {seed}: phase {n}, {len(phase)} deliveries")
            feed_phase(stack, phase)
        injector.join()
        say(f"seed {seed}: faults over, bringing everything up")
        stack.bring_everything_up()
        wait_caught_up(stack.kafka, "rcmflow", EVENTS, "the workers")
        wait_caught_up(stack.kafka, erp_group("rcmflow", "tryton"), POSTINGS,
                       "the ERP connector")
        seen = Observed(stack)
        _wait_facade(stack, expected, seen)
        say(f"seed {seed}: checking")
        seen, result.failures = run_checks(stack, expected, seen)
        result.postings = len(seen.postings)
    except (FeedError, StackError, TimeoutError) as exc:
        result.failures.append(("run", str(exc).splitlines()[0]))
    except Exception as exc:  # noqa: BLE001 - a fault or a process that broke the harness
        result.failures.append(("run", f"{type(exc).__name__}: {str(exc)[:300]}"))
    finally:
        if injector is not None:
            injector.stop()
            try:
                injector.join(60)  # the fault in hand is undone before the stack stops
            except BaseException as exc:  # noqa: BLE001 - a fault that did not undo
                if result.passed:
                    result.failures.append(("run", f"a fault failed: {exc}"))
            result.faults = list(injector.injected)
        result.restarts = dict(stack.unexpected_exits)
        stack.close()
        result.seconds = time.monotonic() - started
    if result.passed and not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
        result.run_dir = None
    return result


def _wait_facade(stack: Stack, expected: Expected, seen: Observed) -> None:
    """Until the facade serves the expected balances, or FACADE_CATCH_UP_S (then the facade
    check names the difference); not at all when the state itself differs from the oracle
    (the facade cannot catch up with it; the balances check names the difference)."""
    if check_balances(stack, seen, expected) is not None:
        return
    deadline = time.monotonic() + FACADE_CATCH_UP_S
    while time.monotonic() < deadline:
        try:
            if facade_difference(stack, expected) is None:
                return
        except Exception:  # noqa: BLE001 - not answering yet
            pass
        time.sleep(0.5)
