"""Controlled refunds on a real broker with a real worker, as finance runs them.

One stack for the story: a lockbox file's refund row above the policy's automatic rule waits
(nothing posts; the account shows it pending), the requester cannot approve their own request,
a user without the role cannot approve, an approver with it posts it (the delta carries who
approved, in which role, under which rule), a second approval and a replayed approval post
nothing more, and a rejection keeps who and why. Every command is a fresh `rcmflow` process
signed in with `rcmflow ops-login` (the identity is the token's, never an option).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from rcmflow.ops.site import COOKIE, SiteConfig, create_site
from rcmflow.ops.users import Users
from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.streams.topics import EVENTS, POSTINGS
from tests.conftest import PARTITIONS, Broker, Workers, wait_until

pytestmark = pytest.mark.broker

PASSWORD = "correct horse battery"


class Desk:
    """The command line of one operators' desk: a data dir with the logins and the key."""

    def __init__(self, broker: Broker, data_dir: Path) -> None:
        self.broker, self.data_dir = broker, data_dir
        users = Users(data_dir / "ops-users.json")
        users.set("ann", "operator", PASSWORD, ("refund_approver",))
        users.set("bob", "viewer", PASSWORD, ("refund_manager",))
        users.set("dee", "operator", PASSWORD, ("refund_manager",))
        users.set("vic", "viewer", PASSWORD)
        self.tokens: dict[str, str] = {}

    def run(self, *args: str, user: str | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
        env.update(RCMFLOW_BROKER=self.broker.url, RCMFLOW_DATA_DIR=str(self.data_dir),
                   RCMFLOW_PARTITIONS=str(PARTITIONS), RCMFLOW_DLQ_REPLAY_WAIT_S="60",
                   RCMFLOW_OPS_TOKEN_FILE=str(self.data_dir / "no-token"),
                   COLUMNS="200", TERM="dumb")
        if user is not None:
            env["RCMFLOW_OPS_TOKEN"] = self.token(user)
        return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                              input=stdin, capture_output=True, text=True, timeout=180)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            done = self.run("ops-login", user, "--print", stdin=PASSWORD + "\n")
            assert done.returncode == 0, done.stderr
            self.tokens[user] = done.stdout.strip()
        return self.tokens[user]

    def json(self, *args: str, user: str | None = None) -> Any:
        done = self.run(*args, "--json", user=user)
        assert done.returncode == 0, done.stderr + done.stdout
        return json.loads(done.stdout)


def refund_deltas(broker: Broker) -> list[dict[str, Any]]:
    records = asyncio.run(read_topic(broker.connection, POSTINGS))
    deltas = [json.loads(r.value) for r in records if r.value is not None]
    return [d for d in deltas if d.get("approval") is not None]


def test_a_refund_posts_only_once_approved_by_someone_else_in_the_right_role(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    workers.start("w1")
    desk = Desk(broker, tmp_path / "desk")
    # A day's lockbox file: R1 overpaid 500.00; the clerk keyed a 250.00 refund (above the
    # policy's automatic 100.00: one approval by refund_approver or refund_manager).
    day = tmp_path / "lockbox.csv"
    day.write_text("type,account,amount,date,reference\n"
                   "payment,R1,500.00,2026-11-20,LB-1\n"
                   "refund,R1,250.00,2026-11-21,RF-1\n")
    done = desk.run("ingest", "payments", str(day))
    assert done.returncode == 0, done.stderr
    wait_until(lambda: bool(desk.json("refunds", "list")), 60, "the request listed")
    pending, = desk.json("refunds", "list")
    assert (pending["account"], pending["amount_cents"], pending["rule"]) == (
        "R1", 25_000, "one_approver")
    account = desk.json("accounts", "show", "R1")
    assert account["balances"]["refunds"] == 0, "a request moves no money"
    assert account["balances"]["unapplied_credit"] == 50_000
    assert account["refunds_pending"] == {"count": 1, "cents": 25_000}
    request_id = pending["event_id"]

    # Not signed in: refused, nothing sent.
    done = desk.run("refunds", "approve", request_id)
    assert done.returncode == 2 and "ops-login" in done.stderr
    # A viewer without a refund role: refused before anything is sent.
    done = desk.run("refunds", "approve", request_id, user="vic")
    assert done.returncode == 2 and "refund_approver or refund_manager" in done.stderr

    # ann asks for another refund and cannot approve it herself.
    filed = desk.json("refunds", "request", "R1", "120.00", "--reason", "duplicate payment",
                      user="ann")
    assert filed["outcome"] == "filed"
    own = filed["request"]["event_id"]
    assert filed["request"]["requested_by"] == "ann"
    done = desk.run("refunds", "approve", own, user="ann")
    assert done.returncode == 2 and "cannot approve it" in done.stderr

    # bob (a viewer granted refund_manager) approves the lockbox refund: it posts.
    approved = desk.json("refunds", "approve", request_id, "--note", "patient called",
                         user="bob")
    assert approved["outcome"] == "posted", approved
    posted, = refund_deltas(broker)
    assert posted["event_kind"] == "refund_approved"
    assert posted["approval"]["request_id"] == request_id
    assert posted["approval"]["requested_by"] == "source:payments-file"
    assert [(a["by"], a["role"]) for a in posted["approval"]["approvers"]] == [
        ("bob", "refund_manager")]
    assert posted["approval"]["rule"] == "one_approver"
    account = desk.json("accounts", "show", "R1")
    assert account["balances"]["refunds"] == 25_000
    assert account["refunds_pending"] == {"count": 1, "cents": 12_000}  # ann's, waiting

    # Approving again: refused here (already posted); the same approval event sent twice
    # more (a replayed interface message) posts nothing either.
    done = desk.run("refunds", "approve", request_id, user="dee")
    assert done.returncode == 2 and "posted, not pending" in done.stderr
    approval_event = next(
        r.value for r in asyncio.run(read_topic(broker.connection, EVENTS))
        if r.value and json.loads(r.value).get("kind") == "refund_approved")
    asyncio.run(publish(broker.connection, [(EVENTS, b"R1", approval_event)] * 2))
    shown = desk.json("refunds", "show", own)
    assert shown["state"] == "pending"
    # dee rejects ann's request, saying why; it never posts.
    rejected = desk.json("refunds", "reject", own, "--reason", "paid by cheque", user="dee")
    assert rejected["outcome"] == "rejected"
    shown = desk.json("refunds", "show", own)
    assert (shown["rejected"]["by"], shown["rejection_reason"]) == ("dee", "paid by cheque")
    assert len(refund_deltas(broker)) == 1
    final = desk.json("accounts", "show", "R1")
    assert final["balances"]["refunds"] == 25_000
    assert final["refunds_pending"] == {"count": 0, "cents": 0}
    assert desk.json("refunds", "list", "--overdue") == []
    assert [r["state"] for r in desk.json("refunds", "list", "--state", "all")] == [
        "posted", "rejected"]

    # The ops site, on the same stack: ann (an operator) asks for a refund on the account
    # page; a viewer without a refund role is refused by the server (whatever the page
    # showed), and dee's click posts it.
    config = SiteConfig(kafka=broker.connection, users=Users(desk.data_dir / "ops-users.json"),
                        session_key=b"s" * 32, session_s=3600, app_id="rcmflow", metrics={})

    def csrf_of(site: TestClient) -> str:
        return str(jwt.decode(site.cookies[COOKIE], b"s" * 32, algorithms=["HS256"])["csrf"])

    with TestClient(create_site(config), base_url="http://127.0.0.1:8081") as site:
        site.post("/login", data={"username": "ann", "password": PASSWORD})
        assert 'id="request-refund"' in site.get("/accounts?account=R1").text
        asked = site.post("/refunds/R1/request", data={"csrf": csrf_of(site), "to": "patient",
                                                       "amount": "130.00", "reason": "dup"})
        assert asked.status_code == 200 and "filed" in asked.text
        assert 'id="approve"' not in asked.text, "no approve button for the requester"
        page = str(asked.url.path)
        site.cookies.clear()
        site.post("/login", data={"username": "vic", "password": PASSWORD})
        assert page.split("/")[-1] in site.get("/refunds").text
        assert 'id="approve"' not in site.get(page).text
        refused = site.post(f"{page}/approve", data={"csrf": csrf_of(site)},
                            follow_redirects=False)
        assert refused.status_code == 403
        site.cookies.clear()
        site.post("/login", data={"username": "dee", "password": PASSWORD})
        shown_page = site.get(page)
        assert 'id="approve"' in shown_page.text
        done_page = site.post(f"{page}/approve", data={"csrf": csrf_of(site), "text": "ok"})
        assert done_page.status_code == 200
        assert "posted" in done_page.text
    assert len(refund_deltas(broker)) == 2
