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
``<account>/payment/<event_id>``        a patient payment or a posted refund (``PaymentRecord``)
``<account>/refund/<event_id>``         a refund request and its approvals (``RefundRecord``)
``<account>/transition/<version>-<n>``  a lifecycle transition (``TransitionRecord``;
                                        ``lifecycle.transition_id``)
``<account>/denial/<claim[/line]>``     a denied claim or line (``DenialRecord``;
                                        ``denials.py``)
======================================  ==============================================

An account number cannot hold "/" (``AccountKey``), so the first "/" ends it; the id is the
rest of the key (event ids may hold "/"). Every item carries ``version``, the account version
of its last change. An event writes its account's head and only the items it names: its cost
does not depend on how many items the account holds.

A head without ``"layout"`` was written by an older rcmflow (the whole account in one
record): ``rcmflow upgrade`` rewrites those (``tables/upgrade.py``, the one place that knows
the old shape). Every reader of rcm.accounts goes through ``read_record`` or ``decode_head``,
which refuse such a record with ``UpgradeNeeded`` rather than read it wrongly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from rcmflow.streams.exceptions import UpgradeNeeded
from rcmflow.streams.state import ITEM_KINDS, AccountHead, ItemKind, ItemRef

__all__ = [
    "LAYOUT",
    "head_key",
    "item_key",
    "parse_key",
    "is_head_key",
    "Key",
    "read_record",
    "assemble",
    "decode_head",
    "accounts_json_schema",
]

LAYOUT = 2
SEPARATOR = "/"
_SEPARATOR_BYTES = SEPARATOR.encode()


def is_head_key(key: bytes | None) -> bool:
    """An account's head (``<account>``), not one of its items (``<account>/<kind>/<id>``):
    an account number holds no "/"."""
    return key is not None and _SEPARATOR_BYTES not in key


def decode_head(raw: bytes) -> AccountHead:
    """A head record's value as the processor reads it (``Lookups.load_head``);
    ``UpgradeNeeded`` for a head of an older layout."""
    doc = orjson.loads(raw)
    if "layout" not in doc:
        raise UpgradeNeeded(f"the rcm.accounts head of account {doc.get('account')!r}")
    return AccountHead.model_validate(doc)


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


def read_record(key: bytes | str, value: Mapping[str, Any]) -> tuple[Key, dict[str, Any]]:
    """An rcm.accounts record as its parsed key and value; ``UpgradeNeeded`` for a head of
    an older layout (no ``layout`` field), ValueError for a foreign key."""
    parsed = parse_key(key)
    if parsed.item is None and "layout" not in value:
        raise UpgradeNeeded(f"the rcm.accounts head of account {parsed.account!r}")
    return parsed, dict(value)


def assemble(head: Mapping[str, Any], items: Mapping[ItemRef, Mapping[str, Any]]
             ) -> dict[str, Any]:
    """One account as a single document, for people (``rcmflow accounts show --json``): the
    head with its ``charges``, ``claims`` (each with its ``adjudications``), ``payments``
    and ``refunds`` (refund requests and their approvals), oldest first, its lifecycle
    ``transitions`` in the order they were applied, and its ``denials``."""
    def ordered(kind: ItemKind) -> list[dict[str, Any]]:
        found = [dict(item) for (k, _), item in items.items() if k == kind]
        return sorted(found, key=lambda i: (str(i.get("occurred_at") or i.get("submitted_at")
                                                    or i.get("requested_at") or ""),
                                            str(i.get("event_id")
                                                                or i.get("claim_id"))))
    claims = {c["claim_id"]: {**c, "adjudications": []} for c in ordered("claim")}
    for adj in ordered("adjudication"):
        claims.setdefault(adj["claim_id"], {"claim_id": adj["claim_id"],
                                            "adjudications": []})["adjudications"].append(adj)
    transitions = [dict(item) for (k, _), item in sorted(items.items()) if k == "transition"]
    return {**head, "charges": ordered("charge"), "claims": claims,
            "payments": ordered("payment"), "refunds": ordered("refund"),
            "transitions": transitions,
            "denials": [dict(item) for (k, _), item in sorted(items.items()) if k == "denial"]}


def accounts_json_schema() -> dict[str, Any]:
    """The JSON Schema of rcm.accounts record values, one per key form (``rcmflow schema
    accounts``)."""
    from pydantic import TypeAdapter

    from rcmflow.streams.state import (
        AdjudicationRecord,
        ChargeRecord,
        ClaimRecord,
        DenialRecord,
        PaymentRecord,
        RefundRecord,
        TransitionRecord,
    )

    kinds: dict[str, Any] = {"charge": ChargeRecord, "claim": ClaimRecord,
                             "adjudication": AdjudicationRecord, "payment": PaymentRecord,
                             "refund": RefundRecord, "transition": TransitionRecord,
                             "denial": DenialRecord}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "rcm.accounts records (layout 2)",
        "description": "Compacted topic, keyed in the account's partition. Key "
        "'<account>': the head. Key '<account>/<kind>/<id>': one item of the account "
        "(kind: charge, claim, adjudication, payment, refund, transition, denial; id: the "
        "event id, the claim id for a claim, the request's event id for a refund request, "
        "'<account version, 12 digits>-<n>' for a transition, the claim id or '<claim id>/"
        "<line id>' for a denial). An account number holds no '/'. A head "
        "without 'layout' was written by an older rcmflow: `rcmflow upgrade` rewrites it.",
        "keys": {
            "<account>": AccountHead.model_json_schema(mode="serialization"),
            **{f"<account>/{kind}/<id>": TypeAdapter(model).json_schema(mode="serialization")
               for kind, model in kinds.items()},
        },
    }
