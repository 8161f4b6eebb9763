"""How an account is laid out as records: one head and one record per item (layout 2).

The accounts table and its changelog ``rcm.accounts`` hold, in the account's partition:

======================================  ==============================================
key                                     value
======================================  ==============================================
``<account>``                           the head (``AccountHead``): balances, version,
                                        status, item counts, ``"layout": 2``
``<account>/charge/<event_id>``         a charge (``ChargeRecord``)
``<account>/claim/<claim_id>``          a claim: header, lines, status (``ClaimRecord``)
``<account>/adjudication/<event_id>``   one payer answer to a claim (``AdjudicationRecord``)
``<account>/payment/<event_id>``        a patient payment or refund (``PaymentRecord``)
======================================  ==============================================

An account number cannot hold "/" (``AccountKey``), so the first "/" ends it; the id is the
rest of the key (event ids may hold "/"). Every item carries ``version``, the account version
of its last change. An event writes its account's head and only the items it names: its cost
does not depend on how many items the account holds.

Layout 1 (before): the whole account in one record under ``<account>``, with ``charges``,
``claims`` (adjudications nested) and ``payments``, and no ``layout`` field. ``split_legacy``
turns one into a head and items; the worker does so when it first touches such an account
(and writes the new records), and every reader of rcm.accounts goes through ``read_record``,
which understands both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, cast

import orjson

from rcmflow.streams.state import ITEM_KINDS, AccountHead, Item, ItemKind, ItemRef

__all__ = [
    "LAYOUT",
    "head_key",
    "item_key",
    "parse_key",
    "Key",
    "read_record",
    "split_legacy",
    "is_legacy",
    "assemble",
    "LegacyAccount",
    "legacy_account",
    "decode_head",
    "accounts_json_schema",
]

LAYOUT = 2
SEPARATOR = "/"


class LegacyAccount(NamedTuple):
    """A layout-1 record as read from the accounts table: the worker writes its items as
    records of their own, and its head over the old record, when it first touches it."""

    head: AccountHead
    items: dict[ItemRef, Item]


def decode_head(raw: bytes) -> AccountHead | LegacyAccount:
    """A head record's value as the processor reads it (``Lookups.load_head``): a layout-1
    record comes back split, for the worker to write out anew."""
    doc = orjson.loads(raw)
    return legacy_account(doc) if is_legacy(doc) else AccountHead.model_validate(doc)


def legacy_account(snapshot: Mapping[str, Any]) -> LegacyAccount:
    head, items = split_legacy(snapshot)
    return LegacyAccount(AccountHead.model_validate(head),
                         {ref: cast(Item, item) for ref, item in items.items()})


class Key(NamedTuple):
    """A parsed rcm.accounts key: the account, and for an item its kind and id."""

    account: str
    item: ItemRef | None


def head_key(account: str) -> bytes:
    return account.encode()


def item_key(account: str, ref: ItemRef) -> bytes:
    kind, item_id = ref
    return f"{account}{SEPARATOR}{kind}{SEPARATOR}{item_id}".encode()


def parse_key(key: bytes | str) -> Key:
    """The account (and item) an rcm.accounts key names; ValueError for a foreign key."""
    text = key.decode() if isinstance(key, bytes) else key
    account, sep, rest = text.partition(SEPARATOR)
    if not sep:
        return Key(account, None)
    kind, sep, item_id = rest.partition(SEPARATOR)
    if not sep or kind not in ITEM_KINDS or not item_id:
        raise ValueError(f"not an rcm.accounts key: {text[:80]!r}")
    return Key(account, (kind, item_id))


def is_legacy(head: Mapping[str, Any]) -> bool:
    """A layout-1 snapshot: the whole account in its head record."""
    return "layout" not in head


def split_legacy(snapshot: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[ItemRef, dict[str, Any]]]:
    """A layout-1 snapshot (JSON dict) as a layout-2 head and items (JSON dicts).

    Items get the snapshot's version: layout 1 did not keep when each one last changed.
    """
    version = int(snapshot["version"])
    items: dict[ItemRef, dict[str, Any]] = {}
    for charge in snapshot.get("charges", ()):
        items[("charge", charge["event_id"])] = {"version": version, **charge}
    for claim_id, claim in snapshot.get("claims", {}).items():
        adjudications = claim.get("adjudications", [])
        items[("claim", claim_id)] = {
            "version": version,
            **{k: v for k, v in claim.items() if k != "adjudications"},
            "first_adjudicated_at": adjudications[0]["occurred_at"] if adjudications else None,
        }
        for adj in adjudications:
            items[("adjudication", adj["event_id"])] = {"version": version,
                                                        "claim_id": claim_id, **adj}
    for payment in snapshot.get("payments", ()):
        items[("payment", payment["event_id"])] = {"version": version, **payment}
    counts = {kind: 0 for kind in ITEM_KINDS}
    for kind, _ in items:
        counts[kind] += 1
    head = {k: v for k, v in snapshot.items() if k not in ("charges", "claims", "payments")}
    head |= {"layout": LAYOUT, "items": counts}
    return head, items


def read_record(key: bytes | str, value: Mapping[str, Any]
                ) -> Iterable[tuple[Key, dict[str, Any]]]:
    """The layout-2 records one rcm.accounts record stands for (a legacy snapshot: its head
    and every item; anything else: itself)."""
    parsed = parse_key(key)
    if parsed.item is None and is_legacy(value):
        head, items = split_legacy(value)
        yield parsed, head
        for ref, item in items.items():
            yield Key(parsed.account, ref), item
        return
    yield parsed, dict(value)


def assemble(head: Mapping[str, Any], items: Mapping[ItemRef, Mapping[str, Any]]
             ) -> dict[str, Any]:
    """One account as a single document, for people (``rcmflow accounts show --json``): the
    head with its ``charges``, ``claims`` (each with its ``adjudications``) and ``payments``,
    oldest first."""
    def ordered(kind: ItemKind) -> list[dict[str, Any]]:
        found = [dict(item) for (k, _), item in items.items() if k == kind]
        return sorted(found, key=lambda i: (str(i.get("occurred_at") or i.get("submitted_at")
                                                    or ""), str(i.get("event_id")
                                                                or i.get("claim_id"))))
    claims = {c["claim_id"]: {**c, "adjudications": []} for c in ordered("claim")}
    for adj in ordered("adjudication"):
        claims.setdefault(adj["claim_id"], {"claim_id": adj["claim_id"],
                                            "adjudications": []})["adjudications"].append(adj)
    return {**head, "charges": ordered("charge"), "claims": claims,
            "payments": ordered("payment")}


def accounts_json_schema() -> dict[str, Any]:
    """The JSON Schema of rcm.accounts record values, one per key form (``rcmflow schema
    accounts``)."""
    from pydantic import TypeAdapter

    from rcmflow.streams.state import AdjudicationRecord, ChargeRecord, ClaimRecord, PaymentRecord

    kinds: dict[str, Any] = {"charge": ChargeRecord, "claim": ClaimRecord,
                             "adjudication": AdjudicationRecord, "payment": PaymentRecord}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "rcm.accounts records (layout 2)",
        "description": "Compacted topic, keyed in the account's partition. Key "
        "'<account>': the head. Key '<account>/<kind>/<id>': one item of the account "
        "(kind: charge, claim, adjudication, payment; id: the event id, or the claim id for "
        "a claim). An account number holds no '/'. A head without 'layout' is a layout-1 "
        "record: the whole account in one value (charges, claims, payments).",
        "keys": {
            "<account>": AccountHead.model_json_schema(mode="serialization"),
            **{f"<account>/{kind}/<id>": TypeAdapter(model).json_schema(mode="serialization")
               for kind, model in kinds.items()},
        },
    }
