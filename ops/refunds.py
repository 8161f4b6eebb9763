"""Refund requests for people: list, show, request, approve, reject (CLI and ops site).

A request and its approvals live where the worker keeps them, as the account's ``refund``
items on rcm.accounts (``streams/refunds.py`` decides; this module only reads and asks). A
decision is an event on rcm.events with the signed-in user (``ops/identity.py``) and the role
they act in; it is checked here first against what the request and the policy allow, so a
person hears at once why it cannot be, and the worker checks it again (it decides, whatever
sent the event). After sending, the request is read back until the worker has taken the
decision (or a DLQ record says why not), up to a bound.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson

from rcmflow.ops.exceptions import NoSuchItem, RefundRefused
from rcmflow.ops.users import User
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import log_ends, publish, read_topic, topic_partitions
from rcmflow.streams.events import EVENT_ADAPTER
from rcmflow.streams.layout import SEPARATOR, parse_key
from rcmflow.streams.refund_policy import RefundPolicy
from rcmflow.streams.topics import ACCOUNTS, DLQ, EVENTS

__all__ = ["every_request", "find_request", "is_overdue", "age", "request_refund", "decide",
           "Decision", "SOURCE", "POLL_S"]

#: The source of requests made by people through the operator tools.
SOURCE = "ops"
#: How often a decision's outcome is looked for while waiting.
POLL_S = 0.5
_REFUND_KEY = f"{SEPARATOR}refund{SEPARATOR}".encode()

Decision = Literal["approve", "reject"]


async def every_request(kafka: KafkaConnection, account: str | None = None
                        ) -> list[dict[str, Any]]:
    """Every refund request (newest record of each), oldest first; one account's if given.

    Reads rcm.accounts to its end keeping only refund items' keys (the other records are
    skipped unparsed): a pass over the table, as `accounts show` makes."""
    prefix = None if account is None else f"{account}{SEPARATOR}refund{SEPARATOR}".encode()

    def keep(key: bytes | None) -> bool:
        return key is not None and (key.startswith(prefix) if prefix else _REFUND_KEY in key)

    newest: dict[bytes, bytes | None] = {}
    for record in sorted(await read_topic(kafka, ACCOUNTS, keep=keep),
                         key=lambda r: (r.partition, r.offset)):
        assert record.key is not None
        newest[record.key] = record.value
    found = []
    for key, value in newest.items():
        if value is None:
            continue
        parsed = parse_key(key)
        found.append({"account": parsed.account, **orjson.loads(value)})
    return sorted(found, key=lambda r: (str(r["requested_at"]), r["event_id"]))


async def find_request(kafka: KafkaConnection, request_id: str,
                       account: str | None = None) -> dict[str, Any]:
    matches = [r for r in await every_request(kafka, account) if r["event_id"] == request_id]
    if not matches:
        raise NoSuchItem(f"no refund request {request_id!r}"
                         + (f" on account {account}" if account else ""))
    if len(matches) > 1:
        accounts = ", ".join(sorted(r["account"] for r in matches))
        raise NoSuchItem(f"refund request {request_id!r} is on several accounts ({accounts}): "
                         "say which with --account")
    return matches[0]


def _moment(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def age(request: dict[str, Any], now: datetime | None = None) -> timedelta:
    return (now or datetime.now(UTC)) - _moment(request["requested_at"])


def is_overdue(request: dict[str, Any], policy: RefundPolicy,
               now: datetime | None = None) -> bool:
    """Pending past its entity's SLA (the policy's ``sla_hours``)."""
    sla = timedelta(hours=policy.for_entity(str(request["entity"])).sla_hours)
    return request["state"] == "pending" and age(request, now) > sla


def _acting_role(user: User, request: dict[str, Any], role: str | None) -> str:
    allowed = [*request["roles"], *request["over_credit_roles"]]
    if role is not None:
        if role not in user.roles:
            raise RefundRefused(f"{user.name} does not hold the role {role} "
                                f"(holds {', '.join(user.roles)})")
        if role not in allowed:
            raise RefundRefused(f"rule {request['rule']} takes decisions by "
                                f"{' or '.join(dict.fromkeys(allowed))}, not {role}")
        return role
    for candidate in allowed:
        if candidate in user.roles:
            return str(candidate)
    raise RefundRefused(
        f"{user.name} holds {', '.join(user.roles)}; refund {request['event_id']} (rule "
        f"{request['rule']}) takes decisions by {' or '.join(dict.fromkeys(allowed)) or 'no one'}"
        " (`rcmflow ops-user NAME --grant ROLE` grants one)")


def _check(user: User, request: dict[str, Any], decision: Decision) -> None:
    if request["state"] != "pending":
        raise RefundRefused(f"refund {request['event_id']} is {request['state']}, not pending")
    if decision == "approve":
        if request["requested_by"] == user.name:
            raise RefundRefused(f"{user.name} requested refund {request['event_id']} and "
                                "cannot approve it")
        if any(a["by"] == user.name for a in request["approvals"]):
            raise RefundRefused(f"{user.name} already approved refund {request['event_id']}; "
                                f"rule {request['rule']} needs {request['approvals_needed']} "
                                "distinct approvers")


async def decide(kafka: KafkaConnection, user: User, request: dict[str, Any],
                 decision: Decision, *, text: str | None = None,
                 role: str | None = None, wait_s: float = 30.0) -> dict[str, Any]:
    """Send an approval or a rejection of ``request`` by ``user`` and wait, up to ``wait_s``,
    for the worker's answer: ``{"outcome": "approved" (waiting for another approver) |
    "posted" | "rejected" | "refused" (by the worker: the detail says why) | "sent" (no answer
    within the wait), "detail": ..., "request": <the request as it is now>}``."""
    _check(user, request, decision)
    withdrawing = decision == "reject" and request["requested_by"] == user.name
    allowed = {*request["roles"], *request["over_credit_roles"]}
    if withdrawing and role is None and not allowed & set(user.roles):
        acting: str = user.role  # the requester withdraws their own request, in any role
    else:
        acting = _acting_role(user, request, role)
    if decision == "reject" and not (text or "").strip():
        raise RefundRefused("a rejection needs a reason")
    request_id, account = request["event_id"], request["account"]
    doc: dict[str, Any] = {
        "schema_version": 1, "account": account, "source": SOURCE,
        "occurred_at": datetime.now(UTC).isoformat(),
        "kind": "refund_approved" if decision == "approve" else "refund_rejected",
        # One decision per user and request: a second send of the same one is a replay.
        "event_id": f"{'approval' if decision == 'approve' else 'rejection'}:{request_id}:"
                    f"{user.name}",
        "request_id": request_id, "by": user.name, "role": acting,
        "policy_version": request["policy_version"], "rule": request["rule"],
        "currency": request.get("currency", "USD"),
        "dimensions": {"entity": request["entity"]},
    }
    if decision == "approve":
        doc["note"] = text or None
    else:
        doc["reason"] = text
    return await _send_and_wait(kafka, doc, request_id, wait_s)


async def request_refund(kafka: KafkaConnection, user: User, *, account: str,
                         amount: Decimal, to: Literal["patient", "payer"], entity: str,
                         reason: str | None, currency: str = "USD",
                         wait_s: float = 30.0) -> dict[str, Any]:
    """File a refund request as ``user`` (its requester: they cannot approve it). Outcome
    "posted" (the policy approved it), "filed" (waiting for approvals), "refused", "sent"."""
    cents = amount * 100
    if cents != cents.to_integral_value() or cents <= 0:
        raise RefundRefused(f"{amount} is not a positive amount in whole cents")
    request_id = f"refund:ops:{uuid.uuid4().hex[:16]}"
    doc = {"schema_version": 1, "kind": "refund", "event_id": request_id, "account": account,
           "occurred_at": datetime.now(UTC).isoformat(), "source": SOURCE,
           "amount_cents": int(cents), "to": to, "requested_by": user.name, "reason": reason,
           "currency": currency, "dimensions": {"entity": entity}}
    return await _send_and_wait(kafka, doc, request_id, wait_s)


async def _send_and_wait(kafka: KafkaConnection, doc: dict[str, Any], request_id: str,
                         wait_s: float) -> dict[str, Any]:
    event = EVENT_ADAPTER.validate_python(doc)  # what the worker will read, checked here
    account = event.account
    partitions = await topic_partitions(kafka, DLQ)
    dlq_from = await log_ends(kafka, DLQ, partitions) if partitions else {}
    before = {r["event_id"]: r for r in await every_request(kafka, account)}.get(request_id)
    await publish(kafka, [(EVENTS, account.encode(), event.model_dump_json().encode())])
    deadline = time.monotonic() + wait_s
    while True:
        now = {r["event_id"]: r for r in await every_request(kafka, account)}.get(request_id)
        if now is not None and (before is None or now["version"] != before["version"]):
            return {"outcome": _outcome(now, event.kind.value), "detail": _detail(now),
                    "request": now}
        refusal = await _refusal(kafka, dlq_from, event.event_id)
        if refusal is not None:
            return {"outcome": "refused", "detail": refusal, "request": now or before}
        if time.monotonic() >= deadline:
            return {"outcome": "sent", "detail": "sent; the worker has not taken it yet "
                    "(is it running?): `rcmflow refunds show` reads it later",
                    "request": now or before}
        await asyncio.sleep(POLL_S)


def _outcome(request: dict[str, Any], kind: str) -> str:
    if request["state"] == "posted":
        return "posted"
    if request["state"] == "rejected":
        return "rejected"
    return "approved" if kind == "refund_approved" else "filed"


def _detail(request: dict[str, Any]) -> str:
    if request["state"] == "posted":
        return f"approved and posted (rule {request['rule']}, policy {request['policy_version']})"
    if request["state"] == "rejected":
        return f"rejected: {request['rejection_reason']}"
    return (f"waiting: {len(request['approvals'])} of {request['approvals_needed']} approvals "
            f"(rule {request['rule']})")


async def _refusal(kafka: KafkaConnection, start: dict[int, int], event_id: str) -> str | None:
    if not start:
        return None
    for record in await read_topic(kafka, DLQ, start=start):
        if record.value is None:
            continue
        try:
            found = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        if (found.get("context") or {}).get("event_id") == event_id:
            return f"{found.get('reason_code')}: {found.get('reason')}"
    return None
