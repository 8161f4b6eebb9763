"""`rcmflow rebuild` and `rcmflow digest` on a real broker: a worker's state is the log's, and
a state altered behind rcmflow's back is named."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rcmflow.audit.digest import AccountState, differing_accounts, digest_of
from rcmflow.cli import app
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_io import publish
from rcmflow.streams.topics import ACCOUNTS, EVENTS
from tests.conftest import Broker, Workers, wait_until
from tests.workload import Expected, Observed, Workload

#: The digest as docs/operations/rebuild.md defines it, written out here (not imported), so a
#: change of the definition in the code fails these tests.
DOC_BUCKETS = ("contractual_adjustments", "gross_charges", "insurance_ar", "interest_income",
               "other_adjustments", "patient_ar", "patient_paid", "payer_overpayments",
               "payer_paid", "refunds", "unapplied_credit", "write_offs")


def documented_digest(heads: dict[str, dict[str, Any]]) -> str:
    text = "\t".join(("rcmflow-state-digest/1", "account", "version", *DOC_BUCKETS)) + "\n"
    for account in sorted(heads):
        head = heads[account]
        text += "\t".join([account, str(head["version"]),
                           *(str(head["balances"][b]) for b in DOC_BUCKETS)]) + "\n"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def cli(broker: Broker, data_dir: Path, *args: str) -> tuple[int, str, str]:
    # Batches of 7: the rebuild's replays are judged against its dedup table, not only
    # within one batch.
    result = CliRunner().invoke(app, list(args), env={
        "RCMFLOW_BROKER": broker.url, "RCMFLOW_DATA_DIR": str(data_dir),
        "RCMFLOW_BATCH_MAX": "7"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def json_cli(broker: Broker, data_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, stdout, stderr = cli(broker, data_dir, *args, "--json")
    assert code in (0, 1), stderr
    return code, json.loads(stdout)


@pytest.mark.broker
def test_two_rebuilds_and_the_live_state_have_one_digest(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    workload = Workload.build(accounts=40, conflicts=3, invalid=3)  # ~20 % replays
    expected = workload.expected()
    workload.publish(broker.connection)
    worker = workers.start("w1")
    wait_until(lambda: Observed.read(broker.connection).states == expected.states, 60,
               "the worker to apply the workload", worker.log_tail)
    want = documented_digest(expected.states)

    _, live = json_cli(broker, tmp_path, "digest")
    assert live["sha256"] == want
    assert live["accounts"] == len(expected.states)
    assert live["totals_cents"]["gross_charges"] == sum(
        s["balances"]["gross_charges"] for s in expected.states.values())
    kept = tmp_path / "rebuilt"
    code, first = json_cli(broker, tmp_path, "rebuild", "--into", str(kept))
    assert code == ExitCode.OK and first["sha256"] == want
    assert first["events"] == len(workload.values) and first["replays"] > 0
    assert first["events_per_s"] > 0
    assert (kept / "accounts").is_dir()  # --into keeps the RocksDB tables
    # Again, with the tables in memory (the reconcile's replay), comparing with the live state.
    code, second = json_cli(broker, tmp_path, "rebuild", "--memory", "--compare")
    assert code == ExitCode.OK, second
    assert second["sha256"] == second["compare"]["live"]["sha256"] == want
    assert second["compare"]["differing_accounts"] == []
    # Nothing of the worker's was touched: it still runs, and no scratch directory is left.
    assert worker.alive(), worker.log_tail()
    assert list((tmp_path / "rebuilds").iterdir()) == []


def publish_applied(broker: Broker, accounts: int = 12) -> Expected:
    """A workload's events and the heads and items the core makes of them, as a worker
    would have written them (no worker: these tests read only)."""
    workload = Workload.build(accounts, conflicts=1, invalid=1)
    expected = workload.expected()
    asyncio.run(publish(broker.connection, [
        *((EVENTS, k.encode(), v) for k, v in workload.values),
        *((ACCOUNTS, key, value) for (_, key), value in expected.records.items())]))
    return expected


@pytest.mark.broker
def test_a_head_altered_behind_rcmflows_back_is_named(broker: Broker, tmp_path: Path) -> None:
    expected = publish_applied(broker)
    _, before = json_cli(broker, tmp_path, "digest")
    code, text, _ = cli(broker, tmp_path, "rebuild", "--compare")
    assert code == ExitCode.OK, text
    assert "equal" in text

    # One bucket of one account moved by a cent on rcm.accounts, as a stray producer might.
    victim = sorted(expected.states)[5]
    head = json.loads(expected.records[(0, victim.encode())])
    head["balances"]["patient_ar"] += 1
    asyncio.run(publish(broker.connection, [(ACCOUNTS, victim.encode(),
                                             json.dumps(head).encode())]))
    _, after = json_cli(broker, tmp_path, "digest")
    assert after["sha256"] != before["sha256"]
    assert after["totals_cents"]["patient_ar"] == before["totals_cents"]["patient_ar"] + 1
    code, text, _ = cli(broker, tmp_path, "rebuild", "--compare")
    assert code == ExitCode.ATTENTION
    assert f"they differ: 1 account ({victim})" in " ".join(text.split())
    assert not any(a in text for a in expected.states if a != victim)

    # Its version alone moved (the buckets put back): still named.
    head["balances"]["patient_ar"] -= 1
    head["version"] += 1
    asyncio.run(publish(broker.connection, [(ACCOUNTS, victim.encode(),
                                             json.dumps(head).encode())]))
    code, found = json_cli(broker, tmp_path, "rebuild", "--compare")
    assert code == ExitCode.ATTENTION
    assert found["compare"]["differing_accounts"] == [victim]


@pytest.mark.broker
@pytest.mark.brokers("tansu")
def test_rebuild_into_a_directory_that_holds_something_is_refused(
        broker: Broker, tmp_path: Path) -> None:
    into = tmp_path / "old"
    into.mkdir()
    (into / "CURRENT").write_text("a store")
    code, _, stderr = cli(broker, tmp_path, "rebuild", "--into", str(into))
    assert code == ExitCode.REFUSED
    assert "not an empty directory" in " ".join(stderr.split())
    assert (into / "CURRENT").read_text() == "a store"


@pytest.mark.broker
@pytest.mark.brokers("tansu")
@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_the_documented_jq_recipe_gives_the_digest(broker: Broker, tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "operations" / "rebuild.md")
    found = re.search(r"jq -j '(.*?)' \\\n", page.read_text(), re.DOTALL)
    assert found, "the jq recipe is not on docs/operations/rebuild.md"
    expected = publish_applied(broker)
    code, heads, _ = cli(broker, tmp_path, "accounts", "list", "--limit", "0", "--json")
    assert code == 0
    lines = subprocess.run(["jq", "-j", found.group(1)], input=heads, capture_output=True,
                           text=True, check=True).stdout
    _, digest = json_cli(broker, tmp_path, "digest")
    assert hashlib.sha256(lines.encode()).hexdigest() == digest["sha256"]
    assert digest["sha256"] == documented_digest(expected.states)


def _state(account: str, version: int = 1, cents: int = 0) -> AccountState:
    return AccountState(account, version, (cents,) * len(DOC_BUCKETS))


def test_the_first_differing_accounts_are_named_in_key_order() -> None:
    ours = [_state("A1"), _state("A2"), _state("A4", cents=5), _state("A5")]
    theirs = [_state("A1"), _state("A3"), _state("A4", cents=6), _state("A5", version=2)]
    assert differing_accounts(ours, theirs) == (["A2", "A3", "A4", "A5"], 4)
    assert differing_accounts(ours, theirs, limit=2) == (["A2", "A3"], 4)
    assert differing_accounts(ours, ours) == ([], 0)


def test_the_digest_needs_the_key_order() -> None:
    heads = {"B": {"version": 2, "balances": dict.fromkeys(DOC_BUCKETS, -7)},
             "A:1": {"version": 1, "balances": dict.fromkeys(DOC_BUCKETS, 3)}}
    states = [_state("A:1", 1, 3), _state("B", 2, -7)]
    assert digest_of(states).sha256 == documented_digest(heads)
    with pytest.raises(ValueError, match="key order"):
        digest_of(reversed(states))
