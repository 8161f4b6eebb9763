"""The tryton adapter against a real Tryton 8.2 on PostgreSQL: moves, dedup, rejections."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from rcmflow.connectors.erp.base import AlreadyThere, Posted, Rejected
from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError, TrytonError
from rcmflow.connectors.erp.tryton import TrytonAdapter, decode, encode
from rcmflow.streams.chart import load_chart
from rcmflow.streams.postings import PostingDelta
from tests.connectors.erp.conftest import adapter_for
from tests.connectors.erp.feed import approved_refund_delta, real_deltas, unmapped_copy
from tests.connectors.erp.tryton_server import Rpc, TrytonServer


def moves(rpc: Rpc) -> list[dict[str, Any]]:
    return list(rpc.model("account.move", "search_read", [("external_id", "!=", None)], 0,
                          None, None, ["external_id", "state", "number", "date",
                                       "lines.account.code", "lines.debit", "lines.credit"]))


def assert_moves_equal(rpc: Rpc, deltas: list[PostingDelta]) -> None:
    """Exactly one posted, balanced move per delta, with the delta's lines to the cent."""
    found = moves(rpc)
    counts = Counter(m["external_id"] for m in found)
    assert not [k for k, n in counts.items() if n > 1], "a posting id has two moves"
    assert set(counts) == {d.posting_id for d in deltas}
    by_id = {m["external_id"]: m for m in found}
    for delta in deltas:
        move = by_id[delta.posting_id]
        assert move["state"] == "posted" and move["number"]
        assert move["date"] == delta.effective_date
        got = sorted((x["account."]["code"], int(x["debit"] * 100), int(x["credit"] * 100))
                     for x in move["lines."])
        want = sorted((x.gl_account, x.debit_cents, x.credit_cents) for x in delta.lines)
        assert got == want
        assert sum(g[1] for g in got) == sum(g[2] for g in got)


def parse(items: list[tuple[bytes, bytes]]) -> list[PostingDelta]:
    return [PostingDelta.model_validate_json(v) for _, v in items]


async def test_post_read_back_dedup_and_rejections(tryton: TrytonServer) -> None:
    deltas = parse(real_deltas(12))
    extra = parse(real_deltas(1, seed=98))[:1]
    adapter = adapter_for(tryton)
    await adapter.open()
    try:
        first = await adapter.post_batch(deltas)
        assert [type(o) for o in first] == [Posted] * len(deltas)
        twice = await adapter.post_batch([extra[0], extra[0]])  # a re-send in one batch
        assert [type(o) for o in twice] == [Posted, AlreadyThere]
        again = await adapter.post_batch(deltas)  # a redelivery after a crash
        assert [type(o) for o in again] == [AlreadyThere] * len(deltas)
        assert [o.erp_ref for o in again] == [o.erp_ref for o in first]
        entries = [e async for e in adapter.read_journal()]
        assert {e.posting_id: (e.total_cents, e.posted) for e in entries} == {
            d.posting_id: (d.total_cents, True) for d in deltas + extra}
        # Rejections are per delta; the others in the batch still post.
        unmapped = parse([unmapped_copy(deltas[0].model_dump_json().encode())])[0]
        no_period = deltas[1].model_copy(update={
            "posting_id": "pst_no_period", "effective_date": date(2031, 1, 1)})
        more = parse(real_deltas(3, seed=99))[:3]
        outcomes = await adapter.post_batch([more[0], unmapped, more[1], no_period, more[2]])
        assert [type(o) for o in outcomes] == [Posted, Rejected, Posted, Rejected, Posted]
        assert outcomes[1].code == "unmapped_gl_account"  # type: ignore[union-attr]
        assert outcomes[3].code == "tryton_no_period"  # type: ignore[union-attr]
    finally:
        await adapter.close()
    assert_moves_equal(tryton.rpc(), deltas + more + extra)


async def test_tryton_rejection_is_its_own_message(tryton: TrytonServer) -> None:
    """A closed period: Tryton refuses the move; its text comes back as the reason."""
    rpc = tryton.rpc()
    deltas = parse(real_deltas(4))
    day = deltas[0].effective_date
    period = rpc.model("account.period", "search",
                       [("start_date", "<=", day), ("end_date", ">=", day),
                        ("type", "=", "standard")], 0, None, None)
    rpc.model("account.period", "close", period)
    adapter = adapter_for(tryton)
    await adapter.open()
    try:
        outcomes = await adapter.post_batch(deltas[:3])
    finally:
        await adapter.close()
    assert all(isinstance(o, Rejected) and o.code == "erp_rejected" for o in outcomes)
    reason = outcomes[0].reason  # type: ignore[union-attr]
    assert "closed" in reason.lower(), reason
    assert moves(rpc) == []


async def test_racing_senders_make_one_move_each(tryton: TrytonServer) -> None:
    deltas = parse(real_deltas(10))
    adapters = [adapter_for(tryton) for _ in range(4)]
    for adapter in adapters:
        await adapter.open()
    try:
        results = await asyncio.gather(*(_post_until_done(a, deltas) for a in adapters))
    finally:
        for adapter in adapters:
            await adapter.close()
    created = Counter(type(o).__name__ for outcomes in results for o in outcomes)
    assert created["Posted"] == len(deltas)
    assert created["AlreadyThere"] == 3 * len(deltas)
    assert_moves_equal(tryton.rpc(), deltas)


async def _post_until_done(adapter: TrytonAdapter, deltas: list[PostingDelta]) -> list[Any]:
    from rcmflow.connectors.erp.exceptions import TransientError

    for _ in range(20):
        try:
            return await adapter.post_batch(deltas)
        except TransientError:
            await asyncio.sleep(0.05)
    raise AssertionError("no progress after 20 tries")


async def test_expired_session_logs_in_again(tryton: TrytonServer) -> None:
    """Tryton answers 401 for a session it dropped; the adapter logs in again and goes on."""
    deltas = parse(real_deltas(3))
    adapter = adapter_for(tryton)
    await adapter.open()
    try:
        await adapter.post_batch(deltas[:1])
        adapter._session = base64.b64encode(b"admin:3:not-a-session").decode()
        outcomes = await adapter.post_batch(deltas[1:])
    finally:
        await adapter.close()
    assert [type(o) for o in outcomes] == [Posted] * (len(deltas) - 1)
    assert_moves_equal(tryton.rpc(), deltas)


def _answer(status: int, body: object) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        doc = json.loads(request.content)
        assert set(doc) == {"id", "method", "params"}
        if doc["method"] == "common.db.login":
            return httpx.Response(200, json={"id": doc["id"], "result": [3, "key", None]})
        if doc["method"] == "model.res.user.get_preferences":
            return httpx.Response(200, json={"id": doc["id"], "result": {"company": 1}})
        if isinstance(body, dict):
            return httpx.Response(status, json={"id": doc["id"], **body})
        return httpx.Response(status, text=str(body))
    return httpx.MockTransport(handler)


@pytest.mark.parametrize(("status", "body", "raised"), [
    (200, {"error": ["ConcurrencyException", ["Records were modified", "", None]]},
     TransientError),
    (200, {"error": ["'res.user'", ""]}, TransientError),  # a non-Tryton server exception
    (502, "bad gateway", TransientError),
    (503, "unavailable", TransientError),
    (429, "too many", TransientError),
    (403, "forbidden", AdapterConfigError),  # post_external not exposed: module missing
    (422, "unprocessable", AdapterConfigError),
    (200, {"error": ["LoginException", ["password", "Password", "password"]]},
     AdapterConfigError),
])
async def test_error_answers_are_sorted(status: int, body: object,
                                        raised: type[Exception]) -> None:
    adapter = TrytonAdapter(url="http://tryton.test", db="db", user="admin", password="x",
                            chart=load_chart(), transport=_answer(status, body))
    await adapter.open()
    try:
        with pytest.raises(raised):
            await adapter.rpc("model.account.move.post_external", [[], {}])
    finally:
        await adapter.close()


async def test_user_error_is_a_value_with_the_message() -> None:
    adapter = TrytonAdapter(url="http://tryton.test", db="db", user="admin", password="x",
                            chart=load_chart(), transport=_answer(200, {"error": [
                                "UserError", ["The period is closed.", "", None]]}))
    await adapter.open()
    try:
        with pytest.raises(TrytonError) as caught:
            await adapter.rpc("model.account.move.post_external", [[], {}])
    finally:
        await adapter.close()
    assert (caught.value.kind, caught.value.message) == ("UserError", "The period is closed.")


def test_money_is_tagged_decimal_and_floats_are_refused() -> None:
    doc = {"debit": Decimal("12.50"), "date": date(2026, 11, 26)}
    raw = encode(doc)
    assert b'"__class__": "Decimal", "decimal": "12.50"' in raw
    assert decode(raw) == doc
    with pytest.raises(TypeError):
        encode({"credit": 12.5})


async def test_an_approved_refund_move_carries_its_approvers(tryton: TrytonServer) -> None:
    delta = approved_refund_delta()
    adapter = adapter_for(tryton)
    await adapter.open()
    try:
        outcome, = await adapter.post_batch([delta])
        assert isinstance(outcome, Posted)
    finally:
        await adapter.close()
    move, = tryton.rpc().model("account.move", "search_read",
                               [("external_id", "=", delta.posting_id)], 0, None, None,
                               ["description", "rcmflow_approval", "state"])
    assert move["state"] == "posted"
    # What an auditor reads in the ERP: who asked, who approved in which role, the rule.
    assert "refund RQ-RF1 requested by ann" in move["description"]
    assert "approved by bob (refund_manager)" in move["description"]
    assert "dee (refund_manager)" in move["description"]
    assert "rule two_managers" in move["description"]
    approval = json.loads(move["rcmflow_approval"])
    assert [a["by"] for a in approval["approvers"]] == ["bob", "dee"]
    assert approval["policy_version"] == delta.approval.policy_version  # type: ignore[union-attr]
