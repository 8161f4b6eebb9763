"""Denials through the real broker and a real worker: the public 835 with a denied claim
(pyx12's mult_loops_denial: CLP02 = 4, CO-16 / OA-A7, LQ*HE*N14) is an open denial in
`rcmflow denials list`; an appeal and a later 835 that pays the claim overturn it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rcmflow.ops.site import SiteConfig, create_site
from rcmflow.ops.users import Users
from tests.conftest import Broker, Workers, wait_until
from tests.connectors.inbound.x12.x12_build import ClaimSpec, envelope, remit_segments
from tests.factories import event_doc

pytestmark = pytest.mark.broker

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "x12" / "835" / \
    "pyx12_5010_mult_loops_denial.835"
CLAIM = "2005555A"


def _cli(workers: Workers, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args],
                          env=workers.env(COLUMNS="200"),
                          capture_output=True, text=True, timeout=120)


def _denials(workers: Workers) -> list[dict[str, Any]]:
    done = _cli(workers, "denials", "list", "--state", "all", "--json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)["denials"]
    return found


def test_a_denied_claim_is_listed_then_overturned_by_an_appeal_and_a_payment(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    worker = workers.start("w1")
    done = _cli(workers, "ingest", "x12", str(SAMPLE))
    assert done.returncode == 0, done.stderr
    wait_until(lambda: bool(_denials(workers)), 90, "the denial", worker.log_tail)
    (denial,) = _denials(workers)
    assert (denial["denial_id"], denial["account"], denial["state"], denial["amount_cents"],
            denial["carcs"], denial["rarcs"], denial["category"], denial["queue"]) == (
        CLAIM, CLAIM, "open", 91539, ["CO-16", "OA-A7"], ["N14"], "missing_information",
        "billing")
    table = _cli(workers, "denials", "list", "--category", "missing_information")
    assert table.returncode == 0 and CLAIM in table.stdout and "open denials by age" in \
        table.stdout, table.stdout
    _site_shows_the_denial(broker, tmp_path)

    appeal = tmp_path / "appeal.jsonl"
    appeal.write_text(json.dumps(event_doc(
        "workflow_step", CLAIM, step="appeal_initiated", claim_id=CLAIM, event_id="AP-1",
        occurred_at="2004-11-15T09:00:00-05:00")) + "\n")
    paid = tmp_path / "paid.835"
    paid.write_bytes(envelope(remit_segments(
        [ClaimSpec(CLAIM, 91539, 80000, filing="MC", pcn="PCN-APPEAL",
                   cas=[("CO", "45", 11539)])], trn02="EFT-APPEAL"), isa13="000000301"))
    for command, path in (("events", appeal), ("x12", paid)):
        done = _cli(workers, "ingest", command, str(path))
        assert done.returncode == 0, (path.name, done.stdout, done.stderr)

    wait_until(lambda: _denials(workers)[0]["state"] == "overturned", 90,
               "the denial to be overturned", worker.log_tail)
    (denial,) = _denials(workers)
    assert denial["paid_cents"] == 80000
    assert [s["state"] for s in denial["steps"]] == ["open", "appealed", "overturned"]
    shown = _cli(workers, "denials", "show", CLAIM, "--json")
    assert json.loads(shown.stdout)["state"] == "overturned", shown.stderr
    assert _cli(workers, "denials", "list").stdout.strip().endswith("no open denials")
    assert worker.alive(), worker.log_tail()


def _site_shows_the_denial(broker: Broker, tmp_path: Path) -> None:
    """The ops site's Denials page (in process, on the same broker)."""
    users = Users(tmp_path / "ops-users.json")
    users.set("olive", "operator", "correct horse battery")
    site = TestClient(create_site(SiteConfig(
        kafka=broker.connection, users=users, session_key=b"k" * 32, session_s=3600,
        app_id="rcmflow", metrics={})), base_url="http://127.0.0.1:8081")
    site.post("/login", data={"username": "olive", "password": "correct horse battery"})
    page = site.get("/denials", params={"category": "missing_information"})
    assert page.status_code == 200, page.text
    assert CLAIM in page.text and "CO-16 OA-A7 N14" in page.text
    assert "Open denials by age" in page.text
    assert 'id="empty"' in site.get("/denials", params={"state": "overturned"}).text
