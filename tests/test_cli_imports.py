"""`rcmflow --help` and the operator listings start fast: they do not import the worker, the
facade or the connectors.

Importing Faust, FastAPI, hl7apy or the FHIR models costs over a second before a command
does anything; `rcmflow dlq list` at a million records has to show its first page in well
under two seconds. Each case runs the real command in a new interpreter and lists the modules
it had loaded when it exited.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rcmflow.runtime.kafka_io import publish
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import ACCOUNTS, DLQ
from tests.conftest import Broker

#: What none of these commands needs: the worker's stream processor and tables, the facade's
#: web stack and FHIR models, HL7 and ERP libraries, the domain core and its event models.
HEAVY = ("faust", "mode", "rocksdict", "fastapi", "starlette", "uvicorn", "fhir", "hl7apy",
         "pyx12", "rcmflow.tables", "rcmflow.facade", "rcmflow.connectors",
         "rcmflow.streams.core", "rcmflow.streams.events", "rcmflow.streams.chart")

#: Help needs neither a broker client nor the settings (pydantic itself: typer uses it).
NOT_FOR_HELP = HEAVY + ("aiokafka", "pydantic_settings", "rcmflow.runtime.settings",
                        "rcmflow.runtime.kafka_io", "rcmflow.ops.accounts")

_RUN = ("import atexit, json, pathlib, sys\n"
        "listing = pathlib.Path(sys.argv.pop(1))\n"
        "atexit.register(lambda: listing.write_text(json.dumps(sorted(sys.modules))))\n"
        "from rcmflow.cli import main\n"
        "main()\n")


def loaded(*args: str, broker: Broker | None = None,
           tmp: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `rcmflow ARGS` (a new interpreter); the finished process and the modules it loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(COLUMNS="200", TERM="dumb")
    if broker is not None:
        env["RCMFLOW_BROKER"] = broker.url
    listing = tmp / "modules.json"
    done = subprocess.run([sys.executable, "-c", _RUN, str(listing), *args], env=env,
                          capture_output=True, text=True, timeout=120)
    return done, set(json.loads(listing.read_text()))


def heavy_among(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize("args", [(), ("--help",), ("dlq", "list", "--help"),
                                  ("accounts", "list", "--help"), ("ingest", "--help"),
                                  ("rebuild", "--help"), ("digest", "--help")],
                         ids=lambda a: " ".join(a) or "no-args")
def test_help_loads_no_broker_client_and_nothing_heavy(args: tuple[str, ...],
                                                       tmp_path: Path) -> None:
    done, modules = loaded(*args, tmp=tmp_path)
    assert "Usage" in done.stdout + done.stderr
    assert heavy_among(modules, NOT_FOR_HELP) == []


def test_plain_import_loads_nothing_heavy() -> None:
    done = subprocess.run([sys.executable, "-c", "import json, sys, rcmflow.cli; "
                           "print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert heavy_among(set(json.loads(done.stdout)), NOT_FOR_HELP) == []


@pytest.mark.broker
def test_listings_load_nothing_heavy(broker: Broker, tmp_path: Path) -> None:
    record = dlq_record(Rejection(stage="validate", reason_code="invalid_event", detail="wrong"),
                        origin=Origin(topic="rcm.events", partition=0, offset=0, key="A1"),
                        payload=b"{}", context={"account": "A1"})
    head = {"layout": 2, "account": "A1", "status": "open", "version": 1, "entity": "01",
            "last_event_at": "2026-11-02T09:00:00-05:00",
            "balances": {"insurance_ar": 0, "patient_ar": 100, "unapplied_credit": 0,
                         "balance": 100}}
    asyncio.run(publish(broker.connection, [
        (DLQ, None, record.model_dump_json().encode()),
        (ACCOUNTS, b"A1", json.dumps(head).encode())]))
    for command, shows in ((("dlq", "list"), record.dlq_id), (("accounts", "list"), "A1")):
        done, modules = loaded(*command, broker=broker, tmp=tmp_path)
        assert done.returncode == 0, done.stderr
        assert shows in done.stdout  # the listing ran, and found the record
        assert heavy_among(modules, HEAVY) == [], " ".join(command)
