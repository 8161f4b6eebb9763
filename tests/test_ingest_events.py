"""`rcmflow ingest events`: "run again" only where running again can succeed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rcmflow.streams.topics import EVENTS
from tests.conftest import Broker
from tests.connectors.inbound.x12.test_x12_bulk import _limit_topic, _run


@pytest.mark.broker
@pytest.mark.brokers("kafka")
def test_a_refusal_no_retry_cures_is_not_answered_run_again(broker: Broker,
                                                             tmp_path: Path) -> None:
    """rcm.events limited to 1 KB by its owner: a 2 KB event can never go."""
    _limit_topic(broker, EVENTS, 1024)
    day = tmp_path / "day.jsonl"
    day.write_text(json.dumps({"account": "A1", "kind": "charge_posted",
                               "note": "x" * 2048}) + "\n")
    done = _run("ingest", "events", str(day), RCMFLOW_BROKER=broker.url)
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "refused by the broker" in said and "running again cannot succeed" in said
    assert "run the same command again" not in said


def test_a_broker_that_is_down_is_answered_run_again(tmp_path: Path) -> None:
    day = tmp_path / "day.jsonl"
    day.write_text(json.dumps({"account": "A1", "kind": "charge_posted"}) + "\n")
    done = _run("ingest", "events", str(day), RCMFLOW_BROKER="127.0.0.1:9")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "run the same command again" in " ".join((done.stdout + done.stderr).split())
