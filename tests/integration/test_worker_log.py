"""A running worker's log: ERROR lines an operator can trust.

Faust checks every assigned partition each ``broker_commit_interval * 2.5`` seconds and logs
ERROR "Stream has not started processing TP(...)" for a partition of a topic subscribed with
acks whose position stays behind its end for ``stream_processing_timeout``. The account
tables' changelog (rcm.accounts) is such a partition: the worker writes it and never reads
it past recovery. The test shortens both settings so the check runs within seconds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rcmflow.ops.accounts import latest_heads
from tests.conftest import PARTITIONS, Broker, wait_until
from tests.workload import Workload

pytestmark = pytest.mark.broker

#: `rcmflow worker` with Faust's livelock check every 1.25 s and a 2 s processing timeout.
_WORKER = """
import sys
import faust
_init = faust.App.__init__
def _short_checks(self, *args, **kwargs):
    kwargs.update(broker_commit_interval=0.5, stream_processing_timeout=2.0)
    _init(self, *args, **kwargs)
faust.App.__init__ = _short_checks
from rcmflow.cli import main
sys.argv = ["rcmflow", "worker"]
main()
"""


def test_an_idle_worker_after_a_batch_logs_no_stream_errors(broker: Broker,
                                                            tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(RCMFLOW_BROKER=broker.url, RCMFLOW_DATA_DIR=str(tmp_path / "data"),
               RCMFLOW_PARTITIONS=str(PARTITIONS), RCMFLOW_LOG_LEVEL="info")
    with open(log, "wb") as handle:
        worker = subprocess.Popen([sys.executable, "-c", _WORKER], env=env, stdout=handle,
                                  stderr=subprocess.STDOUT)
    try:
        workload = Workload.build(accounts=20, seed=3)
        workload.publish(broker.connection)
        accounts = len(workload.expected().states)
        wait_until(lambda: len(asyncio.run(latest_heads(broker.connection))) == accounts
                   or worker.poll() is not None, 90, "every account applied",
                   lambda: log.read_text()[-3000:])
        # Well past the timeout: rcm.accounts' end moved (the worker wrote every account).
        time.sleep(8)
        assert worker.poll() is None, log.read_text()[-3000:]
        text = log.read_text()
        errors = [line for line in text.splitlines() if "ERROR" in line]
        assert not errors, "\n".join(errors[:10])
    finally:
        worker.terminate()
        worker.wait(60)
