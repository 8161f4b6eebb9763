"""The input formats rcmflow reads, written as bytes from plain values (no rcmflow imports).

HL7 v2 DFT^P03 messages, X12 835 / 837P files, payment files (CSV, JSON lines) and FHIR R4
JSON, shaped as docs/inbound/*.md describe them. Money is integer cents, written as
``12.34`` (never through a float).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

__all__ = ["money", "hl7_dft", "Ft1", "Clp", "Plb", "Remit", "x12_835", "x12_837",
           "payments_csv", "payments_jsonl", "json_amount", "charge_item", "reconciliation",
           "fhir_bundle", "fhir_ndjson", "ACCOUNT_SYSTEM"]

#: The ChargeItem / payment identifier system the workload's FHIR resources use.
ACCOUNT_SYSTEM = "urn:rcmflow:chaos"


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _ymd(day: date) -> str:
    return day.strftime("%Y%m%d")


# -- HL7 v2 ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ft1:
    type_code: str  # CG charge, CD credit
    amount: str  # FT1-11 as written ("125.00", or a malformed "12.345")
    day: date
    revenue_code: str
    procedure: str = "99213"
    quantity: int = 1


def hl7_dft(*, sender: str, facility: str, control_id: str, account: str, when: date,
            ft1s: Sequence[Ft1], ft1_day_text: str | None = None) -> bytes:
    """One DFT^P03 (v2.5.1): the account in PID-18 and PV1-19, one FT1 per charge or credit
    (FT1-4 date, FT1-6 type, FT1-10 quantity, FT1-11 amount, FT1-25 procedure, FT1-41 revenue
    code). ``ft1_day_text`` replaces every FT1-4 (a malformed date)."""
    stamp = _ymd(when) + "101500"
    segments = [
        f"MSH|^~\\&|{sender}|{facility}|RCMFLOW|HOSP|{stamp}||DFT^P03^DFT_P03|{control_id}|P|2.5.1",
        f"EVN|P03|{stamp}",
        f"PID|1||MRN{control_id}^^^HOSP^MR||DOE^JANE||19800101|F" + "|" * 10 + account,
        "PV1|1|O" + "|" * 17 + account,
    ]
    for n, ft1 in enumerate(ft1s, start=1):
        fields = [""] * 42
        fields[0] = "FT1"
        fields[1] = str(n)
        fields[4] = ft1_day_text if ft1_day_text is not None else _ymd(ft1.day)
        fields[6] = ft1.type_code
        fields[7] = f"{ft1.procedure}^VISIT^C4"
        fields[10] = str(ft1.quantity)
        fields[11] = ft1.amount
        fields[25] = ft1.procedure
        fields[41] = ft1.revenue_code
        segments.append("|".join(fields).rstrip("|"))
    return ("\r".join(segments) + "\r").encode()


# -- X12 --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clp:
    account: str
    status: str  # CLP02: 1 processed, 4 denied, 22 reversal
    charge: int
    paid: int
    filing: str
    pcn: str  # CLP07
    #: (group, reason, cents): claim level, or on one service line when ``line``.
    cas: tuple[tuple[str, str, int], ...] = ()
    line: bool = False
    patient_resp: int | None = None


@dataclass(frozen=True)
class Plb:
    provider: str
    fiscal: date
    code: str
    reference: str
    cents: int


def _envelope(sets: list[list[list[str]]], *, functional_id: str, version: str,
              isa13: str, when: date) -> bytes:
    isa = ["ISA", "00", " " * 10, "00", " " * 10, "ZZ", "CLEARINGHOUSE".ljust(15), "ZZ",
           "RCMFLOW".ljust(15), when.strftime("%y%m%d"), "1200", "^", "00501", isa13, "0",
           "P", ":"]
    out = ["*".join(isa), "*".join(["GS", functional_id, "CLEARINGHOUSE", "RCMFLOW",
                                    _ymd(when), "1200", "1", "X", version])]
    for n, segs in enumerate(sets, start=1):
        control = f"{n:04d}"
        for seg in segs:
            row = list(seg)
            if row[0] == "ST":
                row[2] = control
            if row[0] == "SE":
                row[1], row[2] = str(len(segs)), control
            out.append("*".join(row).rstrip("*"))
    out += [f"GE*{len(sets)}*1", f"IEA*1*{isa13}"]
    return ("~\n".join(out) + "~\n").encode()


@dataclass
class Remit:
    trn02: str
    payer_id: str
    paid_on: date
    claims: list[Clp] = field(default_factory=list)
    plbs: list[Plb] = field(default_factory=list)
    #: BPR02 as written; None: Σ CLP04 − Σ PLB (balanced).
    bpr02: int | None = None


def x12_835(remit: Remit, *, isa13: str) -> bytes:
    """One 835 set: BPR (BPR16 the payment date), TRN, N1*PR, each CLP with its CAS (claim
    level, or on one SVC line), then the PLBs."""
    bpr02 = remit.bpr02
    if bpr02 is None:
        bpr02 = sum(c.paid for c in remit.claims) - sum(p.cents for p in remit.plbs)
    paid_on = _ymd(remit.paid_on)
    segs: list[list[str]] = [
        ["ST", "835", "0001"],
        ["BPR", "I", money(bpr02), "C", "ACH", "CCP", "01", "999999999", "DA", "123456",
         remit.payer_id, "", "01", "999988880", "DA", "98765", paid_on],
        ["TRN", "1", remit.trn02, remit.payer_id],
        ["DTM", "405", paid_on],
        ["N1", "PR", "CHAOS HEALTH PLAN"],
        ["N1", "PE", "CHAOS HOSPITAL", "XX", "1234567893"],
        ["LX", "1"],
    ]
    for clp in remit.claims:
        resp = "" if clp.patient_resp is None else money(clp.patient_resp)
        segs.append(["CLP", clp.account, clp.status, money(clp.charge), money(clp.paid), resp,
                     clp.filing, clp.pcn])
        if not clp.line:
            segs += [["CAS", g, r, money(c)] for g, r, c in clp.cas]
        segs.append(["NM1", "QC", "1", "DOE", "JANE"])
        if clp.line:
            segs.append(["SVC", "HC:99213", money(clp.charge), money(clp.paid)])
            segs += [["CAS", g, r, money(c)] for g, r, c in clp.cas]
    for plb in remit.plbs:
        segs.append(["PLB", plb.provider, _ymd(plb.fiscal), f"{plb.code}:{plb.reference}",
                     money(plb.cents)])
    segs.append(["SE", "", "0001"])
    return _envelope([segs], functional_id="HP", version="005010X221A1", isa13=isa13,
                     when=remit.paid_on)


def x12_837(claims: Sequence[tuple[str, int, Sequence[int]]], *, bht03: str, when: date,
            isa13: str, payer_id: str, filing: str = "CI") -> bytes:
    """One 837P set: per claim (CLM01 = account, CLM02 total, one SV1 line per charge)."""
    segs: list[list[str]] = [
        ["ST", "837", "0001", "005010X222A2"],
        ["BHT", "0019", "00", bht03, _ymd(when), "1200", "CH"],
        ["HL", "1", "", "20", "1"],
        ["NM1", "85", "2", "CHAOS HOSPITAL", "", "", "", "", "XX", "1234567893"],
    ]
    for n, (account, total, lines) in enumerate(claims):
        segs += [
            ["HL", str(n + 2), "1", "22", "0"],
            ["SBR", "P", "18", "", "", "", "", "", "", filing],
            ["NM1", "IL", "1", "DOE", "JANE"],
            ["NM1", "PR", "2", "CHAOS HEALTH PLAN", "", "", "", "PI", payer_id],
            ["CLM", account, money(total), "", "", "11:B:1", "Y", "A", "Y", "Y"],
        ]
        for k, cents in enumerate(lines, start=1):
            segs += [["LX", str(k)], ["SV1", "HC:99213", money(cents), "UN", "1"]]
    segs.append(["SE", "", "0001"])
    return _envelope([segs], functional_id="HC", version="005010X222A2", isa13=isa13,
                     when=when)


# -- payment files ------------------------------------------------------------------------------

PAYMENT_COLUMNS = ("type", "account", "amount", "date", "reference", "channel", "reason", "to",
                   "from_ar", "batch")


def payments_csv(rows: Sequence[dict[str, str]]) -> bytes:
    lines = [",".join(PAYMENT_COLUMNS)]
    lines += [",".join(row.get(c, "") for c in PAYMENT_COLUMNS) for row in rows]
    return ("\r\n".join(lines) + "\r\n").encode()


def payments_jsonl(rows: Sequence[dict[str, str] | str]) -> bytes:
    """JSON lines; a str row is written as it is (a malformed line)."""
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n"
                   for row in rows).encode()


# -- FHIR R4 -----------------------------------------------------------------------------------

def charge_item(*, ident: str, account: str, cents: int | None, day: date,
                revenue_code: str, status: str = "billable",
                currency: str = "USD") -> dict[str, object]:
    """A ChargeItem whose identifier is (ACCOUNT_SYSTEM, ident); ``cents`` None: no
    priceOverride. The amount is a JSON number with two decimals (read exactly)."""
    doc: dict[str, object] = {
        "resourceType": "ChargeItem",
        "identifier": [{"system": ACCOUNT_SYSTEM, "value": ident}],
        "status": status,
        "code": {"coding": [{"system": "https://www.nubc.org/CodeSystem/RevenueCodes",
                             "code": revenue_code}]},
        "subject": {"reference": f"Patient/pat.{account}"},
        "account": [{"reference": f"Account/{account}"}],
        "occurrenceDateTime": f"{day.isoformat()}T09:30:00Z",
        "quantity": {"value": 1},
    }
    if cents is not None:
        doc["priceOverride"] = {"value": json_amount(cents), "currency": currency}
    return doc


def reconciliation(*, ident: str, day: date, details: Sequence[tuple[str, str, int]],
                   total: int | None = None) -> dict[str, object]:
    """A patient's PaymentReconciliation: one detail per (detail identifier, account, cents);
    ``total`` the paymentAmount (None: the sum, balanced)."""
    amount = sum(c for _, _, c in details) if total is None else total
    return {
        "resourceType": "PaymentReconciliation",
        "identifier": [{"system": ACCOUNT_SYSTEM, "value": ident}],
        "status": "active",
        "created": f"{day.isoformat()}T08:00:00Z",
        "outcome": "complete",
        "paymentDate": day.isoformat(),
        "paymentAmount": {"value": json_amount(amount), "currency": "USD"},
        "detail": [
            {"identifier": {"system": ACCOUNT_SYSTEM, "value": detail_ident},
             "type": {"coding": [{"code": "payment"}]},
             "request": {"reference": f"Account/{account}"},
             "amount": {"value": json_amount(cents), "currency": "USD"}}
            for detail_ident, account, cents in details
        ],
    }


class _Number(str):
    """A JSON number written from its exact decimal text (never a float)."""


def json_amount(cents: int) -> object:
    """``cents`` as a JSON number with two decimals, for ``fhir_bundle`` / ``fhir_ndjson``."""
    return _Number(money(cents))


def _dumps(doc: object) -> str:
    if isinstance(doc, _Number):
        return str(doc)
    if isinstance(doc, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dumps(v)}" for k, v in doc.items()) + "}"
    if isinstance(doc, list):
        return "[" + ",".join(_dumps(v) for v in doc) + "]"
    return json.dumps(doc)


def fhir_bundle(resources: Sequence[dict[str, object]]) -> bytes:
    """A batch Bundle of the resources (each entry on its own)."""
    entries = [{"fullUrl": f"urn:uuid:chaos-{n}", "resource": r,
                "request": {"method": "POST", "url": str(r["resourceType"])}}
               for n, r in enumerate(resources)]
    return _dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}).encode()


def fhir_ndjson(resources: Sequence[dict[str, object]]) -> bytes:
    return "".join(_dumps(r) + "\n" for r in resources).encode()
