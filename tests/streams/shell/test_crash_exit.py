"""A crashed worker whose shutdown hangs is ended, so a supervisor restarts it and the group
moves its partitions (a stuck member keeps them: a fault run found that, seed 282 on Kafka)."""

from __future__ import annotations

import subprocess
import sys
import time

_HANGING_CRASH = """
import asyncio
from rcmflow.streams.shell.run import exit_when_a_crash_hangs

class App:
    async def crash(self, reason):
        await asyncio.Event().wait()  # Faust's stop waiting on a consumer thread for ever

app = App()
exit_when_a_crash_hangs(app, grace_s=0.5)
asyncio.run(app.crash(RuntimeError("broker gone")))
"""

_CLEAN_CRASH = """
import asyncio, time
from rcmflow.streams.shell.run import exit_when_a_crash_hangs

class App:
    async def crash(self, reason):
        pass

app = App()
exit_when_a_crash_hangs(app, grace_s=5)
asyncio.run(app.crash(RuntimeError("x")))
print("stopped on its own")
"""


def test_a_crash_that_hangs_ends_the_process_with_exit_1() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _HANGING_CRASH], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "has not stopped in 0s: exiting" in done.stderr or "exiting" in done.stderr
    assert time.monotonic() - started < 30


def test_a_crash_that_stops_is_left_to_stop() -> None:
    done = subprocess.run([sys.executable, "-c", _CLEAN_CRASH], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "stopped on its own" in done.stdout, done.stderr
