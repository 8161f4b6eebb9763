"""The end of a fault run: what rcmflow holds, against what the oracle expects.

Each check returns ``None`` or its first difference, in words. They read the topics and
Tryton themselves and run the operator commands as an operator would (`rcmflow audit`,
`rcmflow reconcile --erp tryton`, `rcmflow rebuild` twice, `rcmflow digest`).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from rcmflow.ops.accounts import latest_heads
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.topics import DLQ, POSTINGS, POSTINGS_DLQ
from tests.chaos.model import Expected
from tests.chaos.stack import Stack
from tests.connectors.erp.test_tryton import moves

__all__ = ["Observed", "CHECKS", "run_checks"]

#: The facade's Account balance extension and its aggregate codes (docs/facade.md).
BALANCE_URL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"
FACADE_BUCKETS = {"insurance": "insurance_ar", "patient": "patient_ar", None: "balance"}


class Observed:
    """The topics read once at the end (every check uses the same reading)."""

    def __init__(self, stack: Stack) -> None:
        kafka = stack.kafka
        self.heads: dict[str, Any] = asyncio.run(latest_heads(kafka))
        self.postings: dict[str, set[bytes]] = defaultdict(set)
        self.posting_docs: dict[str, dict[str, Any]] = {}
        for record in asyncio.run(read_topic(kafka, POSTINGS)):
            if record.value is not None:
                doc = json.loads(record.value)
                self.postings[doc["posting_id"]].add(record.value)
                self.posting_docs[doc["posting_id"]] = doc
        self.dlq: dict[str, dict[str, Any]] = {}
        self.dlq_texts: dict[str, str] = {}
        for record in asyncio.run(read_topic(kafka, DLQ)):
            if record.value is None:
                continue
            doc = json.loads(record.value)
            text = record.value.decode(errors="replace")
            if doc.get("payload_encoding") == "base64":
                text += base64.b64decode(doc.get("payload", "")).decode(errors="replace")
            self.dlq[doc["dlq_id"]] = doc
            self.dlq_texts[doc["dlq_id"]] = text
        self.postings_dlq = [json.loads(r.value) for r in
                             asyncio.run(read_topic(kafka, POSTINGS_DLQ)) if r.value]


def _cents(value: object) -> int:
    return int(Decimal(str(value)) * 100)


def check_balances(stack: Stack, seen: Observed, expected: Expected) -> str | None:
    unknown = sorted(set(seen.heads) - set(expected.balances))
    if unknown:
        return f"{len(unknown)} accounts the oracle does not know, first {unknown[0]}: " \
               f"{seen.heads[unknown[0]].get('balances')}"
    for account in sorted(expected.balances):
        want = expected.balances[account]
        head = seen.heads.get(account)
        if head is None:
            return f"account {account} missing (expected {want})"
        got = head.get("balances", {})
        for bucket in sorted(set(want) | set(got)):
            if got.get(bucket, 0) != want.get(bucket, 0):
                return (f"account {account} bucket {bucket}: {got.get(bucket, 0)} cents, "
                        f"expected {want.get(bucket, 0)}")
    return None


def check_postings(stack: Stack, seen: Observed, expected: Expected) -> str | None:
    twice = sorted(pid for pid, values in seen.postings.items() if len(values) > 1)
    if twice:
        return f"{len(twice)} posting ids with two contents, first {twice[0]}"
    missing = sorted(expected.posting_ids - set(seen.postings))
    extra = sorted(set(seen.postings) - expected.posting_ids)
    if missing or extra:
        first = (f"missing {missing[0]}" if missing else
                 f"unexpected {extra[0]} (account {seen.posting_docs[extra[0]]['account']}, "
                 f"event {seen.posting_docs[extra[0]]['event_id']})")
        return f"{len(missing)} posting ids missing, {len(extra)} unexpected; first {first}"
    return None


def check_dlq(stack: Stack, seen: Observed, expected: Expected) -> str | None:
    def matches(dlq_id: str, reason: str, marker: str) -> bool:
        return seen.dlq[dlq_id].get("reason_code") == reason and marker in seen.dlq_texts[dlq_id]

    for reason, marker in sorted(expected.dlq):
        if not any(matches(i, reason, marker) for i in seen.dlq):
            near = [seen.dlq[i]["reason_code"] for i in seen.dlq if marker in seen.dlq_texts[i]]
            return (f"no rcm.dlq record {reason} for {marker}"
                    + (f" (found {', '.join(near)})" if near else ""))
    for dlq_id in sorted(seen.dlq):
        if not any(matches(dlq_id, reason, marker) for reason, marker in expected.dlq):
            doc = seen.dlq[dlq_id]
            return (f"rcm.dlq record {dlq_id} not expected: {doc['reason_code']} "
                    f"({doc['reason'][:120]}; origin {doc['origin'].get('topic')})")
    if seen.postings_dlq:
        doc = seen.postings_dlq[0]
        return (f"{len(seen.postings_dlq)} records on rcm.postings.dlq, first "
                f"{doc.get('reason_code')}: {str(doc.get('reason'))[:120]}")
    return None


def check_tryton(stack: Stack, seen: Observed, expected: Expected) -> str | None:
    assert stack.tryton is not None
    found = moves(stack.tryton.rpc())
    counts = Counter(m["external_id"] for m in found)
    twice = sorted(k for k, n in counts.items() if n > 1)
    if twice:
        return f"{len(twice)} posting ids with two Tryton moves, first {twice[0]}"
    missing = sorted(set(seen.postings) - set(counts))
    extra = sorted(set(counts) - set(seen.postings))
    if missing or extra:
        first = f"missing {missing[0]}" if missing else f"extra {extra[0]}"
        return f"Tryton journal: {len(missing)} moves missing, {len(extra)} extra; first {first}"
    for move in found:
        doc = seen.posting_docs[move["external_id"]]
        got = sorted((x["account."]["code"], _cents(x["debit"]), _cents(x["credit"]))
                     for x in move["lines."])
        want = sorted((x["gl_account"], x["debit_cents"], x["credit_cents"])
                      for x in doc["lines"])
        if move["state"] != "posted" or got != want:
            return (f"Tryton move {move['external_id']}: {move['state']} {got}, "
                    f"expected posted {want}")
    return None


def _command(stack: Stack, *args: str) -> str | None:
    done = stack.command(*args)
    if done.returncode == 0:
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return f"`rcmflow {' '.join(args)}` exit {done.returncode}: " + " | ".join(text[-6:])[:400]


def check_audit(stack: Stack, seen: Observed, expected: Expected) -> str | None:
    return _command(stack, "audit")


def check_reconcile(stack: Stack, seen: Observed, expected: Expected) -> str | None:
    done = stack.command("reconcile", "--erp", "tryton", "--json")
    if done.returncode == 0:
        return None
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return f"`rcmflow reconcile --erp tryton` exit {done.returncode}: {done.stderr[-300:]}"
    findings = [f for f in report.get("findings", []) if f.get("severity") == "error"]
    causes = ", ".join(f"{c} {n}" for c, n in report.get("findings_by_cause", {}).items())
    first = findings[0] if findings else {}
    return (f"`rcmflow reconcile --erp tryton` exit {done.returncode} ({causes}); first: "
            f"{first.get('cause')} account {first.get('account')} {first.get('day')}: "
            f"{first.get('detail')}")


def _facade_balances(doc: dict[str, Any]) -> dict[str, int]:
    found = {}
    for ext in doc.get("extension", []):
        if ext.get("url") != BALANCE_URL:
            continue
        parts = {p["url"]: p for p in ext["extension"]}
        aggregate = parts.get("aggregate", {}).get("valueCodeableConcept", {})
        code = aggregate.get("coding", [{}])[0].get("code") if aggregate else None
        found[FACADE_BUCKETS.get(code, str(code))] = _cents(parts["amount"]["valueMoney"]["value"])
    return found


def facade_difference(stack: Stack, expected: Expected) -> str | None:
    headers = {"Authorization": f"Bearer {stack.facade_token()}"}
    with httpx.Client(base_url=stack.facade_base, headers=headers, timeout=10) as client:
        for account in sorted(a for a in expected.balances if not a.startswith("provider:")):
            response = client.get(f"/Account/{account}")
            if response.status_code != 200:
                return f"GET Account/{account}: {response.status_code}"
            got = _facade_balances(json.loads(response.content, parse_float=Decimal))
            want = {b: expected.balances[account].get(b, 0) for b in FACADE_BUCKETS.values()}
            if got != want:
                return f"Account/{account} serves {got}, expected {want}"
    return None


def check_facade(stack: Stack, seen: Observed, expected: Expected) -> str | None:
    return facade_difference(stack, expected)


def _digest(stack: Stack, *args: str) -> tuple[str | None, str]:
    done = stack.command(*args, "--json")
    if done.returncode != 0:
        return None, f"`rcmflow {' '.join(args)}` exit {done.returncode}: {done.stderr[-300:]}"
    return str(json.loads(done.stdout)["sha256"]), ""


def check_digest(stack: Stack, seen: Observed, expected: Expected) -> str | None:
    found = []
    for args in (("rebuild",), ("rebuild",), ("digest",)):
        digest, error = _digest(stack, *args)
        if digest is None:
            return error
        found.append(digest)
    if len(set(found)) != 1:
        return (f"digests differ: rebuild {found[0][:12]}, rebuild {found[1][:12]}, "
                f"live {found[2][:12]}")
    return None


Check = Callable[[Stack, Observed, Expected], "str | None"]
CHECKS: tuple[tuple[str, Check], ...] = (
    ("balances", check_balances),
    ("postings", check_postings),
    ("dlq", check_dlq),
    ("tryton", check_tryton),
    ("audit", check_audit),
    ("reconcile", check_reconcile),
    ("facade", check_facade),
    ("digest", check_digest),
)


def run_checks(stack: Stack, expected: Expected,
               seen: Observed) -> tuple[Observed, list[tuple[str, str]]]:
    """Every check, in order, over what was read of the topics once everything caught up;
    the failures as (check, first difference)."""
    # What the postings were made of, beside the logs (a failed run's first place to look).
    with open(stack.run_dir / "postings.txt", "w") as out:
        for pid, doc in sorted(seen.posting_docs.items(), key=lambda i: i[1]["event_id"]):
            out.write(f"{pid} {doc['account']} {doc['event_id']}\n")
    failures = []
    for name, check in CHECKS:
        try:
            difference = check(stack, seen, expected)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failure
            difference = f"the check failed: {type(exc).__name__}: {exc}"
        if difference is not None:
            failures.append((name, difference))
    return seen, failures
