"""NetSuite, Odoo and ERPNext adapters against stateful fakes at the HTTP boundary.

Every case runs for the three adapters: post, duplicate, lost answer then retry, validation
error, 5xx / timeout / refused connection, bad credentials, unmapped GL, read_journal.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rcmflow.connectors.erp.base import AlreadyThere, ErpAdapter, Posted, Rejected
from rcmflow.connectors.erp.erpnext import ErpNext
from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError
from rcmflow.connectors.erp.mapping import all_gl_accounts
from rcmflow.connectors.erp.netsuite import NetSuite
from rcmflow.connectors.erp.odoo import Odoo
from rcmflow.runtime.settings import Settings
from rcmflow.streams.chart import load_chart
from rcmflow.streams.postings import PostingDelta
from tests.conftest import Broker
from tests.connectors.erp.cloud_fakes import ErpNextFake, Fake, NetSuiteFake, OdooFake
from tests.connectors.erp.feed import (
    approved_refund_delta,
    dlq_records,
    publish_deltas,
    real_deltas,
    run_in_process,
    unmapped_copy,
)

CHART = load_chart()
GL = set(all_gl_accounts(CHART))


@dataclass
class Case:
    adapter: ErpAdapter
    fake: Fake
    count: Callable[[], int]


def make(kind: str, *, closed_before: date | None = None, good_auth: bool = True,
         gl: set[str] | None = None, **extra: Any) -> Case:
    codes = GL if gl is None else gl
    if kind == "netsuite":
        ns = NetSuiteFake(codes, closed_before=closed_before)
        adapter: Any = NetSuite(CHART, base_url="https://fake.suitetalk.api.netsuite.com",
                                token="good-token" if good_auth else "expired",
                                transport=ns.transport(), page_size=7)
        return Case(adapter, ns, lambda: len(ns.entries))
    if kind == "odoo":
        od = OdooFake(codes, lock_date=closed_before and date.fromordinal(
            closed_before.toordinal() - 1))
        adapter = Odoo(CHART, base_url="https://odoo.example", api_key="good-key"
                       if good_auth else "bad", database="rcm", transport=od.transport(),
                       page_size=7)
        return Case(adapter, od, lambda: len(od.posted()))
    en = ErpNextFake(codes, closed_before=closed_before, **extra)
    adapter = ErpNext(CHART, base_url="https://erpnext.example", api_key="key1",
                      api_secret="secret1" if good_auth else "nope",
                      company="General Hospital", transport=en.transport(), page_size=7)
    return Case(adapter, en, lambda: len(en.entries))


KINDS = ["netsuite", "odoo", "erpnext"]


def deltas(n: int = 6, seed: int = 11) -> list[PostingDelta]:
    return [PostingDelta.model_validate_json(v) for _, v in real_deltas(n, seed)][:n]


async def journal_of(adapter: ErpAdapter) -> dict[str, tuple[date, list[tuple[str, int, int]]]]:
    return {e.posting_id: (e.effective_date, sorted(e.lines)) async for e in
            adapter.read_journal()}


DELTAS: list[PostingDelta] = []


def expected(ds: list[PostingDelta]) -> dict[str, tuple[date, list[tuple[str, int, int]]]]:
    return {d.posting_id: (d.effective_date, sorted((x.gl_account, x.debit_cents,
                                                      x.credit_cents) for x in d.lines))
            for d in ds}


@pytest.mark.parametrize("kind", KINDS)
async def test_post_then_read_back_exactly(kind: str) -> None:
    case, ds = make(kind), deltas(12)
    await case.adapter.open()
    outcomes = await case.adapter.post_batch(ds)
    assert [type(o) for o in outcomes] == [Posted] * len(ds)
    assert [o.posting_id for o in outcomes] == [d.posting_id for d in ds]
    assert case.count() == len(ds)
    assert await journal_of(case.adapter) == expected(ds)  # pages of 7: paging is used
    assert all([e.posted async for e in case.adapter.read_journal()])
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_duplicate_is_already_there_and_no_second_entry(kind: str) -> None:
    case, ds = make(kind), deltas(3)
    await case.adapter.open()
    await case.adapter.post_batch(ds)
    again = await case.adapter.post_batch([ds[1], ds[1]])
    assert [type(o) for o in again] == [AlreadyThere, AlreadyThere]
    assert case.count() == 3
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_lost_answer_then_retry_is_still_one_entry(kind: str) -> None:
    case, (delta,) = make(kind), deltas(1)
    await case.adapter.open()
    case.fake.faults = ["lost"]  # the ERP does the work, the answer never arrives
    with pytest.raises(TransientError):
        await case.adapter.post_batch([delta])
    assert case.fake.requests, "the request reached the ERP"
    outcome = (await case.adapter.post_batch([delta]))[0]  # the runner's retry
    assert type(outcome) in (Posted, AlreadyThere)
    assert [type(o) for o in await case.adapter.post_batch([delta])] == [AlreadyThere]
    assert case.count() == 1
    assert await journal_of(case.adapter) == expected([delta])
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_lost_answer_on_each_step_still_gives_one_entry(kind: str) -> None:
    """The crash window between any two calls of a multi-call post (Odoo has four)."""
    ds = deltas(6)
    for step in range(6):
        case = make(kind)
        await case.adapter.open()
        case.fake.faults = ["ok"] * step + ["lost"]
        with_error = 0
        while True:
            try:
                outcome = (await case.adapter.post_batch([ds[step]]))[0]
                break
            except TransientError:
                with_error += 1
                assert with_error < 3
        case.fake.faults.clear()
        assert isinstance(outcome, Posted | AlreadyThere)
        assert case.count() == 1, (step, case.fake.requests)
        assert list(await journal_of(case.adapter)) == [ds[step].posting_id]
        await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_closed_period_is_rejected_with_the_erps_text(kind: str) -> None:
    case, ds = make(kind, closed_before=date(2030, 1, 1)), deltas(2)
    await case.adapter.open()
    outcomes = await case.adapter.post_batch(ds)
    assert [type(o) for o in outcomes] == [Rejected, Rejected]
    reason = outcomes[0].reason  # type: ignore[union-attr]
    assert {"netsuite": "closed period", "odoo": "lock date",
            "erpnext": "closed Accounting Period"}[kind] in reason
    assert case.count() == 0
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_unmapped_gl_is_rejected_and_the_rest_posted(kind: str) -> None:
    case, ds = make(kind), deltas(2)
    bad = PostingDelta.model_validate_json(unmapped_copy(ds[0].model_dump_json().encode())[1])
    await case.adapter.open()
    outcomes = await case.adapter.post_batch([bad, *ds])
    assert [type(o) for o in outcomes] == [Rejected, Posted, Posted]
    assert outcomes[0].code == "unmapped_gl_account"  # type: ignore[union-attr]
    assert case.count() == 2
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_gl_in_the_chart_but_not_in_the_erp_is_rejected(kind: str) -> None:
    ds = deltas(1)
    used = {x.gl_account for x in ds[0].lines}
    case = make(kind, gl=GL - {sorted(used)[0]})
    await case.adapter.open()
    outcome = (await case.adapter.post_batch(ds))[0]
    assert isinstance(outcome, Rejected) and sorted(used)[0] in outcome.reason
    assert case.count() == 0
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", ["500", "503", "429", "timeout", "connect"])
async def test_server_errors_and_timeouts_are_transient(kind: str, fault: str) -> None:
    case, ds = make(kind), deltas(1)
    await case.adapter.open()
    case.fake.faults = [fault]
    with pytest.raises(TransientError):
        await case.adapter.post_batch(ds)
    assert case.count() == 0
    assert [type(o) for o in await case.adapter.post_batch(ds)] == [Posted]
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_credentials_are_a_config_error(kind: str) -> None:
    case = make(kind, good_auth=False)
    await case.adapter.open()  # no I/O: an ERP down at start must not crash the connector
    with pytest.raises(AdapterConfigError):
        await case.adapter.post_batch(deltas(1))
    with pytest.raises(AdapterConfigError):
        [e async for e in case.adapter.read_journal()]
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_an_erp_down_at_start_is_transient_not_a_crash(kind: str) -> None:
    case, ds = make(kind), deltas(2)
    case.fake.faults = ["503"]
    await case.adapter.open()
    with pytest.raises(TransientError):
        await case.adapter.post_batch(ds)
    assert [type(o) for o in await case.adapter.post_batch(ds)] == [Posted, Posted]
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", ["401", "403"])
async def test_auth_failure_mid_stream_is_a_config_error(kind: str, status: str) -> None:
    case, ds = make(kind), deltas(1)
    await case.adapter.open()
    case.fake.faults = [status]
    with pytest.raises(AdapterConfigError):
        await case.adapter.post_batch(ds)
    await case.adapter.close()


async def test_erpnext_refuses_to_start_without_a_unique_posting_field() -> None:
    case = make("erpnext", unique_field=False)
    await case.adapter.open()
    with pytest.raises(AdapterConfigError, match="marked Unique"):
        await case.adapter.post_batch(deltas(1))
    await case.adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_senders_of_one_posting_make_one_entry(kind: str) -> None:
    """Two connectors (a rebalance overlap) send the same deltas at the same time."""
    first = make(kind)
    ds = deltas(4)
    second_adapter = type(first.adapter)(CHART, **_same_erp(kind, first))
    await first.adapter.open()
    await second_adapter.open()
    results = await asyncio.gather(first.adapter.post_batch(ds), second_adapter.post_batch(ds))
    for a, b in zip(*results, strict=True):
        assert {type(a), type(b)} <= {Posted, AlreadyThere}
        assert Posted in {type(a), type(b)} or kind == "odoo"
    assert first.count() == 4
    assert await journal_of(first.adapter) == expected(ds)
    await first.adapter.close()
    await second_adapter.close()


def _same_erp(kind: str, case: Case) -> dict[str, Any]:
    transport = case.fake.transport()
    if kind == "netsuite":
        return {"base_url": "https://fake.suitetalk.api.netsuite.com", "token": "good-token",
                "transport": transport}
    if kind == "odoo":
        return {"base_url": "https://odoo.example", "api_key": "good-key",
                "transport": transport}
    return {"base_url": "https://erpnext.example", "api_key": "key1", "api_secret": "secret1",
            "company": "General Hospital", "transport": transport}


def _old_copy(delta: PostingDelta) -> PostingDelta:
    """The same delta dated into a closed period (a new posting id)."""
    from rcmflow.streams.postings import posting_id

    doc = json.loads(delta.model_dump_json())
    doc["event_id"] += "-old"
    doc["posting_id"] = posting_id(doc["account"], doc["event_id"], doc["coa_version"])
    doc["effective_date"] = "2025-12-31"
    return PostingDelta.model_validate(doc)


@pytest.mark.broker
@pytest.mark.parametrize("kind", KINDS)
def test_through_the_real_runner_outage_then_dlq_with_the_erps_text(
        kind: str, broker: Broker) -> None:
    """rcm.postings -> the consumer loop -> the fake ERP: a 503 outage is retried, nothing
    lost or doubled; a closed-period refusal lands in rcm.postings.dlq with the ERP's words."""
    case = make(kind, closed_before=date(2026, 1, 1))
    items = real_deltas(6, seed=21)
    old = _old_copy(PostingDelta.model_validate_json(items[0][1]))
    publish_deltas(broker, [*items, (old.account.encode(), old.model_dump_json().encode())])
    case.fake.faults = ["503"] * 3 + ["timeout"]
    progress = run_in_process(case.adapter, broker, group=f"erp-{kind}")
    assert progress.transient_failures >= 1
    assert (progress.posted, progress.rejected) == (len(items), 1)
    assert case.count() == len(items)
    (record,) = dlq_records(broker)
    assert record["context"]["posting_id"] == old.posting_id
    assert {"netsuite": "closed period", "odoo": "lock date",
            "erpnext": "closed Accounting Period"}[kind] in record["reason"]
    # a second connector run (a restart) finds everything there: no second entry
    again = run_in_process(type(case.adapter)(CHART, **_same_erp(kind, case)), broker,
                           group=f"erp-{kind}-replay")
    assert (again.posted, again.already_there) == (0, len(items))
    assert case.count() == len(items)


FAULTS = st.lists(st.sampled_from(["ok", "ok", "lost", "timeout", "connect", "503", "429"]),
                  max_size=12)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(faults=FAULTS, which=st.integers(0, 5))
def test_any_fault_sequence_ends_with_exactly_one_entry(kind: str, faults: list[str],
                                                        which: int) -> None:
    """Whatever fails where, retrying until an answer leaves one entry with the delta's lines."""
    if not DELTAS:
        DELTAS.extend(deltas(6, seed=31))
    delta = DELTAS[which]

    async def scenario() -> None:
        case = make(kind)
        case.fake.faults = list(faults)
        await case.adapter.open()
        for _ in range(len(faults) + 2):
            try:
                outcome = (await case.adapter.post_batch([delta]))[0]
                break
            except TransientError:
                continue
        else:
            pytest.fail("no answer after every fault was used up")
        assert isinstance(outcome, Posted | AlreadyThere)
        case.fake.faults.clear()
        assert [type(o) for o in await case.adapter.post_batch([delta])] == [AlreadyThere]
        assert case.count() == 1
        assert await journal_of(case.adapter) == expected([delta])
        await case.adapter.close()

    asyncio.run(scenario())


CLOUD_ENV = {
    "netsuite": {"RCMFLOW_ERP_NETSUITE_URL": "https://fake.suitetalk.api.netsuite.com",
                 "RCMFLOW_ERP_NETSUITE_TOKEN": "good-token"},
    "odoo": {"RCMFLOW_ERP_ODOO_URL": "https://odoo.example", "RCMFLOW_ERP_ODOO_DB": "rcm",
             "RCMFLOW_ERP_ODOO_API_KEY": "good-key"},
    "erpnext": {"RCMFLOW_ERP_ERPNEXT_URL": "https://erpnext.example",
                "RCMFLOW_ERP_ERPNEXT_API_KEY": "key1", "RCMFLOW_ERP_ERPNEXT_API_SECRET": "secret1",
                "RCMFLOW_ERP_ERPNEXT_COMPANY": "General Hospital"},
}


@pytest.mark.parametrize("kind", KINDS)
async def test_adapter_built_from_the_one_settings_object(kind: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The RCMFLOW_ERP_* variables of each cloud ERP are read once, into Settings, and the
    adapter is built from the Settings it is handed: changing the environment afterwards
    changes nothing."""
    fake = make(kind).fake
    for name, value in CLOUD_ENV[kind].items():
        monkeypatch.setenv(name, value)
    read_at_start = Settings()
    for name in CLOUD_ENV[kind]:
        monkeypatch.delenv(name)
    module = importlib.import_module(f"rcmflow.connectors.erp.{kind}")
    adapter: ErpAdapter = module.build(read_at_start, CHART, transport=fake.transport())
    ds = deltas(2)
    await adapter.open()
    assert [type(o) for o in await adapter.post_batch(ds)] == [Posted, Posted]
    await adapter.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_an_approved_refund_entry_names_who_approved_it(kind: str) -> None:
    """An auditor in the ERP sees the request, the requester, the approvers with their
    roles, the policy's version and rule: NetSuite's memo, Odoo's narration, ERPNext's
    user_remark."""
    case, refund = make(kind), approved_refund_delta()
    await case.adapter.open()
    assert [type(o) for o in await case.adapter.post_batch([refund])] == [Posted]
    await case.adapter.close()
    fake: Any = case.fake
    if kind == "netsuite":
        text = fake.entries[refund.posting_id]["memo"]
    elif kind == "odoo":
        text, = [m["narration"] for m in fake.moves.values()]
    else:
        text, = [e["user_remark"] for e in fake.entries.values()]
    assert refund.posting_id in text
    assert "refund RQ-RF1 requested by ann" in text
    assert "approved by bob (refund_manager)" in text and "dee (refund_manager)" in text
    assert f"policy {refund.approval.policy_version} rule two_managers" in text  # type: ignore[union-attr]
