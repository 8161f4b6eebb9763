"""The real FHIR clients portals use, against the app under uvicorn on a loopback port."""

from __future__ import annotations

from typing import Any

import pytest
from fhirclient import client as smart_client
from fhirclient.models.account import Account as R4Account
from fhirclient.models.claimresponse import ClaimResponse as R4ClaimResponse
from fhirclient.models.fhirsearch import FHIRSearch
from fhirclient.models.paymentreconciliation import PaymentReconciliation as R4Payment
from fhirpy import AsyncFHIRClient

from tests.facade.conftest import Served, token


@pytest.fixture
def smart(served: Served) -> Any:
    """fhirclient (SMART's Python client, R4 models that refuse unknown elements)."""
    fhir = smart_client.FHIRClient(settings={"app_id": "rcmflow-tests",
                                             "api_base": served.base + "/"})
    fhir.server.session.headers["Authorization"] = f"Bearer {token()}"
    return fhir


def test_fhirclient_reads_an_account_with_its_balance_extension(
        smart: Any, snapshots: dict[str, dict[str, Any]]) -> None:
    account = R4Account.read("A1001", smart.server)
    assert account.id == "A1001" and account.status == "active"
    assert account.meta.versionId == str(snapshots["A1001"]["version"])
    amounts = [part.valueMoney.value for ext in account.extension
               for part in ext.extension if part.url == "amount"]
    assert len(amounts) == 3


def test_fhirclient_search_pages_to_the_end_without_duplicates(smart: Any) -> None:
    search = FHIRSearch(R4ClaimResponse, {"_count": "4"})
    seen = [r.id for r in search.perform_resources_iter(smart.server)]
    total = next(FHIRSearch(R4ClaimResponse, {"_summary": "count"}).perform_iter(
        smart.server)).total
    assert len(seen) == len(set(seen)) == total > 8


def test_fhirclient_parses_payment_reconciliations(smart: Any) -> None:
    bundle = next(R4Payment.where(struct={"identifier": "TRN9001"}).perform_iter(smart.server))
    assert bundle.total == 2
    assert {e.resource.paymentAmount.currency for e in bundle.entry} == {"USD"}


async def test_fhirpy_async_read_search_and_paging(
        served: Served, snapshots: dict[str, dict[str, Any]]) -> None:
    fhir = AsyncFHIRClient(served.base, authorization=f"Bearer {token()}")
    account = await fhir.reference("Account", "A1002").to_resource()
    assert account["meta"]["versionId"] == str(snapshots["A1002"]["version"])
    claims = await fhir.resources("Claim").search(patient="pat.A1002").fetch()
    assert [c["id"] for c in claims] == ["A1002.CLM1002"]
    everything = await fhir.resources("PaymentReconciliation").limit(6).fetch_all()
    ids = [r["id"] for r in everything]
    total = await fhir.resources("PaymentReconciliation").count()
    assert len(ids) == len(set(ids)) == total > 12


async def test_fhirpy_patient_token_sees_only_its_patient(served: Served) -> None:
    fhir = AsyncFHIRClient(served.base, authorization="Bearer " + token(
        scope="patient/*.read", patient="pat.A1002"))
    accounts = await fhir.resources("Account").fetch_all()
    assert [a["id"] for a in accounts] == ["A1002"]
    payments = await fhir.resources("PaymentReconciliation").fetch_all()
    # RFD-1002-2 waits for an approval: not a payment (yet), so not shown.
    assert {p["id"] for p in payments} == {"trn.A1002.TRN9002", "pay.A1002.LBX-5501",
                                           "pay.A1002.LBX-5502", "pay.A1002.RFD-1002-1"}
