"""Build well-formed 835 and 837 files for tests: correct envelopes, exact amounts.

Segments are lists of elements, so a test can change one amount and re-serialise; the
envelope counts (SE01, GE01, IEA01) are computed when the file is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rcmflow.streams.money import cents_text

Seg = list[str]


@dataclass
class LineSpec:
    code: str
    charge_cents: int
    paid_cents: int
    cas: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class ClaimSpec:
    account: str
    charge_cents: int
    paid_cents: int
    status: str = "1"
    filing: str = "CI"
    pcn: str = "PCN1"
    cas: list[tuple[str, str, int]] = field(default_factory=list)
    lines: list[LineSpec] = field(default_factory=list)


@dataclass
class PlbSpec:
    provider: str
    code: str
    reference: str
    amount_cents: int


def money(cents: int) -> str:
    return cents_text(cents)


def remit_segments(claims: list[ClaimSpec], plbs: list[PlbSpec] | None = None, *,
                   trn02: str = "TRACE1", payer_id: str = "1999999999",
                   bpr02_cents: int | None = None, paid_on: str = "20260302") -> list[Seg]:
    """The segments of one 835 set (ST..SE, SE01 filled in by ``envelope``)."""
    plbs = plbs or []
    if bpr02_cents is None:
        bpr02_cents = sum(c.paid_cents for c in claims) - sum(p.amount_cents for p in plbs)
    segs: list[Seg] = [
        ["ST", "835", "0001"],
        ["BPR", "I", money(bpr02_cents), "C", "ACH", "CCP", "01", "999999999", "DA", "123456",
         payer_id, "", "01", "999988880", "DA", "98765", paid_on],
        ["TRN", "1", trn02, payer_id],
        ["DTM", "405", paid_on],
        ["N1", "PR", "TEST PAYER"],
        ["N1", "PE", "TEST HOSPITAL", "XX", "1234567893"],
        ["LX", "1"],
    ]
    for claim in claims:
        segs.append(["CLP", claim.account, claim.status, money(claim.charge_cents),
                     money(claim.paid_cents), "", claim.filing, claim.pcn])
        segs.extend(_cas(claim.cas))
        segs.append(["NM1", "QC", "1", "DOE", "JANE"])
        for line in claim.lines:
            segs.append(["SVC", f"HC:{line.code}", money(line.charge_cents),
                         money(line.paid_cents)])
            segs.extend(_cas(line.cas))
    for plb in plbs:
        segs.append(["PLB", plb.provider, "20261231", f"{plb.code}:{plb.reference}",
                     money(plb.amount_cents)])
    segs.append(["SE", "", "0001"])
    return segs


def _cas(adjustments: list[tuple[str, str, int]]) -> list[Seg]:
    return [["CAS", group, reason, money(cents)] for group, reason, cents in adjustments]


def claim_segments(claims: list[tuple[str, int, list[tuple[str, int]]]], *,
                   professional: bool = True, bht03: str = "BATCH1",
                   payer_id: str = "1999999999") -> list[Seg]:
    """One 837P (SV1) or 837I (SV2) set: (CLM01, CLM02 cents, [(code, charge cents)])."""
    segs: list[Seg] = [
        ["ST", "837", "0001", "005010X222A2" if professional else "005010X223A3"],
        ["BHT", "0019", "00", bht03, "20260301", "1200", "CH"],
        ["HL", "1", "", "20", "1"],
        ["NM1", "85", "2", "TEST HOSPITAL", "", "", "", "", "XX", "1234567893"],
    ]
    for n, (account, total, lines) in enumerate(claims):
        segs += [
            ["HL", str(n + 2), "1", "22", "0"],
            ["SBR", "P", "18", "", "", "", "", "", "", "CI"],
            ["NM1", "IL", "1", "DOE", "JANE"],
            ["NM1", "PR", "2", "TEST PAYER", "", "", "", "PI", payer_id],
            ["CLM", account, money(total), "", "", "11:B:1", "Y", "A", "Y", "Y"],
        ]
        for k, (code, charge) in enumerate(lines, start=1):
            segs.append(["LX", str(k)])
            if professional:
                segs.append(["SV1", f"HC:{code}", money(charge), "UN", "1"])
            else:
                segs.append(["SV2", code, "HC:85025", money(charge), "UN", "1"])
    segs.append(["SE", "", "0001"])
    return segs


def envelope(*sets: list[Seg], functional_id: str = "HP", version: str = "005010X221A1",
             isa13: str = "000000001") -> bytes:
    """ISA/GS ... GE/IEA around the sets, every count and control number right."""
    isa = ["ISA", "00", " " * 10, "00", " " * 10, "ZZ", "SENDER".ljust(15), "ZZ",
           "RECEIVER".ljust(15), "260301", "1200", "^", "00501", isa13, "0", "P", ":"]
    out = ["*".join(isa), "*".join(["GS", functional_id, "SENDER", "RECEIVER", "20260301",
                                    "1200", "1", "X", version])]
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


def many_claims(n: int, *, prefix: str = "BULK") -> list[ClaimSpec]:
    """``n`` balanced claims of one service line each, as a large payer sends them in one
    835 set: charge 100.00, paid 80.00, CO-45 15.00 and PR-1 5.00 on the line."""
    return [ClaimSpec(f"{prefix}{k:07d}", 10000, 8000, pcn=f"PCN{k}",
                      lines=[LineSpec("99213", 10000, 8000, [("CO", "45", 1500),
                                                             ("PR", "1", 500)])])
            for k in range(n)]
