"""Denials for people: the worklist, one denial, and the figures (CLI, ops site, metrics).

The denials live where the worker keeps them, as the accounts' ``denial`` items on
rcm.accounts (``streams/denials.py`` makes and moves them); this module reads them and sorts
them with the routing table (``streams/denial_routing.py``) as it reads: category and work
queue are never stored, so a new table applies to every denial at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from rcmflow.ops.exceptions import NoSuchItem
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.denial_routing import DenialRouting
from rcmflow.streams.denials import DENIAL_STATES, WORKED_STATES
from rcmflow.streams.layout import SEPARATOR, parse_key
from rcmflow.streams.topics import ACCOUNTS

__all__ = ["every_denial", "find_denial", "routed", "matches", "summary", "AGE_BUCKETS",
           "age_bucket", "STATES"]

STATES = DENIAL_STATES
_DENIAL_KEY = f"{SEPARATOR}denial{SEPARATOR}".encode()
#: Open-denial age buckets (days since the denial), as revenue-cycle teams count them.
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("0-30", 30), ("31-60", 60), ("61-90", 90), ("91-120", 120), ("120+", None))


async def every_denial(kafka: KafkaConnection, account: str | None = None
                       ) -> list[dict[str, Any]]:
    """Every denial item (newest record of each), oldest denial first; one account's if
    given. Reads rcm.accounts to its end keeping only denial items' keys, as
    `refunds list` does."""
    prefix = None if account is None else f"{account}{SEPARATOR}denial{SEPARATOR}".encode()

    def keep(key: bytes | None) -> bool:
        return key is not None and (key.startswith(prefix) if prefix else _DENIAL_KEY in key)

    newest: dict[bytes, bytes | None] = {}
    for record in sorted(await read_topic(kafka, ACCOUNTS, keep=keep),
                         key=lambda r: (r.partition, r.offset)):
        assert record.key is not None
        newest[record.key] = record.value
    return sorted((
        {"account": parse_key(key).account, **orjson.loads(value)}
        for key, value in newest.items() if value is not None),
        key=lambda d: (str(d["denied_at"]), d["account"], d["denial_id"]))


def _moment(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def age_bucket(days: int) -> str:
    return next(name for name, upto in AGE_BUCKETS if upto is None or days <= upto)


def routed(denials: Iterable[dict[str, Any]], routing: DenialRouting,
           now: datetime | None = None) -> list[dict[str, Any]]:
    """The denials with their category, work queue and age (whole days since denied)."""
    moment = now or datetime.now(UTC)
    rows = []
    for d in denials:
        route = routing.route(d["carcs"], d["rarcs"])
        days = max((moment - _moment(d["denied_at"])).days, 0)
        rows.append({**d, "category": route.category, "queue": route.queue,
                     "routing_rule": route.rule, "routing_version": routing.version,
                     "age_days": days, "age_bucket": age_bucket(days)})
    return rows


def matches(row: dict[str, Any], *, state: str = "open", payer: str | None = None,
            category: str | None = None, carc: str | None = None,
            entity: str | None = None, account: str | None = None,
            older_than_days: int | None = None) -> bool:
    """Whether a routed row passes the listing's filters. ``state``: a denial state, "open"
    (open or appealed: still worked) or "all"; ``carc``: "CO-16" or a bare reason "16"."""
    if state == "open":
        if row["state"] not in WORKED_STATES:
            return False
    elif state != "all" and row["state"] != state:
        return False
    if carc is not None and not any(c == carc or c.split("-", 1)[-1] == carc
                                    for c in row["carcs"]):
        return False
    return ((payer is None or row["payer"] == payer)
            and (category is None or row["category"] == category)
            and (entity is None or row["entity"] == entity)
            and (account is None or row["account"] == account)
            and (older_than_days is None or row["age_days"] > older_than_days))


def find_denial(rows: list[dict[str, Any]], denial_id: str,
                account: str | None = None) -> dict[str, Any]:
    found = [r for r in rows if r["denial_id"] == denial_id
             and (account is None or r["account"] == account)]
    if not found:
        raise NoSuchItem(f"no denial {denial_id!r}" + (f" on account {account}" if account
                                                          else ""))
    if len(found) > 1:
        accounts = ", ".join(sorted(r["account"] for r in found))
        raise NoSuchItem(f"denial {denial_id!r} is on several accounts ({accounts}): say "
                         "which with --account")
    return found[0]


def summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The figures: denials by payer and category (count, amount, and how many were
    overturned of those decided on appeal), and open denials by age bucket."""
    by: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: {"count": 0, "amount_cents": 0, "open_count": 0, "open_amount_cents": 0,
                 "appealed": 0, "overturned": 0, "upheld": 0})
    ages = {name: {"count": 0, "amount_cents": 0} for name, _ in AGE_BUCKETS}
    total = {"count": 0, "amount_cents": 0, "open_count": 0, "open_amount_cents": 0}
    for r in rows:
        cell = by[(r["payer"] or "-", r["category"])]
        cell["count"] += 1
        cell["amount_cents"] += r["amount_cents"]
        total["count"] += 1
        total["amount_cents"] += r["amount_cents"]
        if r["appealed_at"] is not None:
            cell["appealed"] += 1
        if r["state"] in ("overturned", "upheld"):
            cell[r["state"]] += 1
        if r["state"] in WORKED_STATES:
            cell["open_count"] += 1
            cell["open_amount_cents"] += r["amount_cents"]
            total["open_count"] += 1
            total["open_amount_cents"] += r["amount_cents"]
            ages[r["age_bucket"]]["count"] += 1
            ages[r["age_bucket"]]["amount_cents"] += r["amount_cents"]
    groups = []
    for (payer, category), cell in sorted(by.items()):
        decided = cell["overturned"] + cell["upheld"]
        groups.append({"payer": payer, "category": category, **cell,
                       "overturn_rate": round(cell["overturned"] / decided, 3) if decided
                       else None})
    return {"total": total, "by_payer_category": groups, "open_by_age": ages}
