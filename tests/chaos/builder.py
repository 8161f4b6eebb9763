"""The workload's builder: accounts, names, dates, and the deliveries of phases 0 to 4.

``workload.generate`` drives it; ``mishaps.py`` adds the conflicting re-sends, the malformed
inputs and the replays. Every method writes real bytes (``formats.py``) and the facts they
mean; the builder keeps its own reckoning of each account's balances (``Account``) only to
choose amounts that phase 4's refunds and write-offs can take, or deliberately cannot.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TypeVar

from tests.chaos.formats import (
    ACCOUNT_SYSTEM,
    Clp,
    Ft1,
    Plb,
    Remit,
    charge_item,
    fhir_bundle,
    fhir_ndjson,
    hl7_dft,
    money,
    payments_csv,
    payments_jsonl,
    reconciliation,
    x12_835,
    x12_837,
)
from tests.chaos.model import Channel, Delivery

__all__ = ["Account", "Builder", "Fact", "PHASES", "chunks"]

PHASES = 5
#: The dates every input carries: inside the plausible-date window (1990-01-01 .. today +
#: 366 days) of any day after this one.
BASE_DAY = date(2026, 3, 2)
SENDER, PAYER_ID = "EHR", "1999999999"
REVENUE_CODES = ("0450", "0300", "0250", "0120", "0320", "0510", "0960")
FILING_CODES = ("CI", "MA", "MC", "HM", "BL")
Fact = dict[str, object]
DENIALS = frozenset(("CO", r) for r in ("50", "16", "197", "29"))
_T = TypeVar("_T")


@dataclass
class Account:
    """What the generator means for one account, and its balances as it reckons them."""

    name: str
    filing: str
    charges: list[tuple[str, int]] = field(default_factory=list)  # (event id, cents)
    fhir_items: list[tuple[str, str, int]] = field(default_factory=list)  # (ident, eid, cents)
    claimed: bool = False
    outcome: str = ""  # of its last adjudication: processed / denied
    last_clp: Clp | None = None
    insurance_ar: int = 0
    patient_ar: int = 0
    unapplied: int = 0


class Builder:
    """The deliveries of one workload as they are made, and what they mean."""

    def __init__(self, seed: int, accounts: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.accounts = [Account(f"A{seed}-{n:04d}", self.rng.choice(FILING_CODES))
                         for n in range(accounts)]
        self.deliveries: list[Delivery] = []
        self.counters: dict[str, int] = {}
        self.facility = f"F{seed}"
        self.providers = [f"NPI{seed}X{k}" for k in (1, 2)]
        # Originals that conflicting re-sends copy (the same ids, other content).
        self.hl7_sent: list[tuple[str, Account, date, list[Ft1], list[Fact]]] = []
        self.remits_sent: list[Remit] = []
        self.rows_sent: list[tuple[dict[str, str], Fact]] = []
        self.items_sent: list[tuple[dict[str, object], Fact]] = []

    # -- names and dates --------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        self.counters[prefix] = self.counters.get(prefix, 0) + 1
        return f"{prefix}{self.seed}-{self.counters[prefix]:05d}"

    def isa13(self) -> str:
        """Nine digits, unique per file and, for seeds under 1000, across seeds."""
        self.counters["isa"] = self.counters.get("isa", 0) + 1
        return f"{self.seed % 1000:03d}{self.counters['isa']:06d}"

    def day(self, phase: int) -> date:
        return BASE_DAY + timedelta(days=30 * phase + self.rng.randrange(0, 25))

    def add(self, phase: int, channel: Channel, name: str, payload: bytes,
            facts: Sequence[Fact], label: str) -> Delivery:
        delivery = Delivery(phase, channel, name, payload, facts=tuple(facts), label=label)
        self.deliveries.append(delivery)
        return delivery

    # -- phase 0: charges and claims ----------------------------------------------------------

    def hl7_charges(self, account: Account) -> None:
        control = self.next_id("MSG")
        day = self.day(0)
        amounts = [self.rng.randrange(5_000, 80_000) for _ in range(self.rng.randint(1, 4))]
        ft1s = [Ft1("CG", money(c), day, self.rng.choice(REVENUE_CODES)) for c in amounts]
        facts: list[Fact] = []
        for n, cents in enumerate(amounts, start=1):
            event_id = f"hl7:{SENDER}|{self.facility}|{control}:ft1-{n}"
            account.charges.append((event_id, cents))
            account.insurance_ar += cents
            facts.append({"kind": "charge", "account": account.name, "event_id": event_id,
                          "cents": cents, "marker": control})
        payload = hl7_dft(sender=SENDER, facility=self.facility, control_id=control,
                          account=account.name, when=day, ft1s=ft1s)
        self.add(0, "mllp", f"hl7-{control}", payload, facts, "hl7_charges")
        self.hl7_sent.append((control, account, day, ft1s, facts))

    def fhir_charges(self, group: list[Account]) -> None:
        resources: list[dict[str, object]] = []
        facts: list[Fact] = []
        for account in group:
            for _ in range(self.rng.randint(1, 3)):
                ident = self.next_id("CHG")
                cents = self.rng.randrange(2_000, 60_000)
                event_id = f"fhir:ChargeItem:{ACCOUNT_SYSTEM}|{ident}"
                resources.append(charge_item(ident=ident, account=account.name, cents=cents,
                                             day=self.day(0),
                                             revenue_code=self.rng.choice(REVENUE_CODES)))
                self.items_sent.append((resources[-1], {
                    "kind": "charge", "account": account.name, "event_id": event_id,
                    "cents": cents, "marker": ident}))
                account.charges.append((event_id, cents))
                account.fhir_items.append((ident, event_id, cents))
                account.insurance_ar += cents
                facts.append({"kind": "charge", "account": account.name,
                              "event_id": event_id, "cents": cents, "marker": ident})
        self.fhir_file(0, resources, facts, "fhir_charges")

    def fhir_file(self, phase: int, resources: list[dict[str, object]], facts: list[Fact],
                  label: str) -> Delivery:
        stem = self.next_id("FHR")
        if self.rng.random() < 0.5:
            return self.add(phase, "fhir", f"{stem}.json", fhir_bundle(resources), facts, label)
        return self.add(phase, "fhir", f"{stem}.ndjson", fhir_ndjson(resources), facts, label)

    def claims_837(self, group: list[Account]) -> None:
        bht03 = self.next_id("BHT")
        facts: list[Fact] = []
        claims = []
        for account in group:
            total = sum(c for _, c in account.charges)
            claims.append((account.name, total, [c for _, c in account.charges]))
            account.claimed = True
            facts.append({"kind": "claim", "account": account.name,
                          "event_id": f"x12-837:{bht03}:{account.name}", "cents": total,
                          "marker": bht03})
        payload = x12_837(claims, bht03=bht03, when=self.day(0), isa13=self.isa13(),
                          payer_id=PAYER_ID)
        self.add(0, "drop", f"{bht03}.837", payload, facts, "837")

    # -- phases 1 and 2: remittances ------------------------------------------------------------

    def split(self, account: Account, charge: int, pcn: str) -> Clp:
        """A processed claim: paid, then PR (1-3 codes), OA-23 (no entry), OA-94, CO-45."""
        rng = self.rng
        paid = charge * rng.randrange(40, 86) // 100
        rest = charge - paid
        cas: list[tuple[str, str, int]] = []
        patient = 0 if rng.random() < 0.2 else min(rest, rng.randrange(100, 30_000))
        codes = rng.sample(["1", "2", "3"], 2 if patient >= 2 and rng.random() < 0.5 else 1)
        if patient:
            first = patient // 2 if len(codes) == 2 else patient
            cas.append(("PR", codes[0], first))
            if len(codes) == 2:
                cas.append(("PR", codes[1], patient - first))
        patient = sum(c for g, _, c in cas if g == "PR")
        rest -= patient
        for group, reason, chance in (("OA", "23", 0.15), ("OA", "94", 0.1)):
            if rest > 200 and rng.random() < chance:
                part = rng.randrange(1, rest // 4 + 1)
                cas.append((group, reason, part))
                rest -= part
        if rest:
            cas.append(("CO", "45", rest))
        rng.shuffle(cas)
        return Clp(account.name, "1", charge, paid, account.filing, pcn, tuple(cas),
                   line=rng.random() < 0.4, patient_resp=patient)

    def denial(self, account: Account, charge: int, pcn: str) -> Clp:
        reason = self.rng.choice(["50", "16", "197", "29"])
        return Clp(account.name, "4", charge, 0, account.filing, pcn, (("CO", reason, charge),))

    def book(self, account: Account, clp: Clp) -> None:
        """The generator's own reckoning of a claim's effect (a reversal carries negated
        amounts): insurance AR down by paid and everything but OA-23 and denial CARCs."""
        moved = clp.paid
        for group, reason, cents in clp.cas:
            if group == "PR":
                account.patient_ar += cents
            if (group, reason) != ("OA", "23") and (group, reason) not in DENIALS:
                moved += cents
        account.insurance_ar -= moved

    def clp_fact(self, remit: Remit, clp: Clp) -> Fact:
        outcome = {"1": "processed", "4": "denied", "22": "reversal"}[clp.status]
        return {"kind": "adjudication", "account": clp.account,
                "event_id": f"x12-835:{remit.payer_id}:{remit.trn02}:{clp.account}:"
                f"{clp.pcn}:{clp.status}",
                "outcome": outcome, "charge": clp.charge, "paid": clp.paid,
                "adjustments": [list(a) for a in clp.cas], "marker": remit.trn02}

    def plb_fact(self, remit: Remit, plb: Plb) -> Fact:
        return {"kind": "plb", "account": f"provider:{plb.provider}",
                "event_id": f"x12-835:{remit.payer_id}:{remit.trn02}:plb:{plb.provider}:"
                f"{plb.fiscal.strftime('%Y%m%d')}:{plb.code}:{plb.reference}:1",
                "code": plb.code, "cents": plb.cents, "marker": remit.trn02}

    def plbs(self, paid_on: date, room: int) -> list[Plb]:
        """0-2 provider adjustments that leave BPR02 >= 0 (``room``: Σ CLP04)."""
        rng = self.rng
        out: list[Plb] = []
        for _ in range(rng.choice([0, 1, 1, 2])):
            provider = rng.choice(self.providers)
            code = rng.choice(["L6", "WO", "FB", "72"])
            ref = self.next_id("PLB")
            if code == "L6":
                out.append(Plb(provider, paid_on, "L6", ref, -rng.randrange(100, 2_000)))
            elif code == "72":  # an authorised return paired with a WO: nets to 0
                cents = rng.randrange(100, 3_000)
                out += [Plb(provider, paid_on, "WO", ref, cents),
                        Plb(provider, paid_on, "72", ref, -cents)]
            else:
                out.append(Plb(provider, paid_on, code, ref, rng.randrange(-2_000, 3_000) or 1))
        if sum(p.cents for p in out) > room:
            return []
        return out

    def remit_file(self, phase: int, remit: Remit, label: str) -> Delivery:
        facts = [self.clp_fact(remit, c) for c in remit.claims]
        facts += [self.plb_fact(remit, p) for p in remit.plbs]
        return self.add(phase, "drop", f"{remit.trn02}.835", x12_835(remit, isa13=self.isa13()),
                        facts, label)

    def remits(self, group: list[Account]) -> None:
        trn02 = self.next_id("TRN")
        remit = Remit(trn02, PAYER_ID, self.day(1))
        for account in group:
            charge = sum(c for _, c in account.charges)
            pcn = f"{account.name}-1"
            clp = self.denial(account, charge, pcn) if self.rng.random() < 0.15 else \
                self.split(account, charge, pcn)
            account.outcome = "denied" if clp.status == "4" else "processed"
            account.last_clp = clp
            self.book(account, clp)
            remit.claims.append(clp)
        remit.plbs = self.plbs(remit.paid_on, sum(c.paid for c in remit.claims))
        self.remit_file(1, remit, "835")
        self.remits_sent.append(remit)

    def corrections(self, group: list[Account]) -> None:
        """Each claim reversed (CLP02 = 22, negated) and corrected (a new CLP07), in order."""
        trn02 = self.next_id("TRN")
        remit = Remit(trn02, PAYER_ID, self.day(2))
        for account in group:
            old = account.last_clp
            assert old is not None
            reversal = Clp(old.account, "22", -old.charge, -old.paid, old.filing, old.pcn,
                           tuple((g, r, -c) for g, r, c in old.cas), line=old.line,
                           patient_resp=None if old.patient_resp is None else -old.patient_resp)
            corrected = self.split(account, old.charge, f"{account.name}-2")
            for clp in (reversal, corrected):
                self.book(account, clp)
                remit.claims.append(clp)
            account.outcome, account.last_clp = "processed", corrected
        net = sum(c.paid for c in remit.claims)
        if net < 0:  # the payer defers the recovery: a negative WO keeps BPR02 at 0
            remit.plbs = [Plb(self.providers[0], remit.paid_on, "WO", self.next_id("PLB"), net)]
        self.remit_file(2, remit, "835_corrections")

    def credits(self, account: Account) -> None:
        """A charge credit: an HL7 FT1 CD (not linked to its charge) or a FHIR ChargeItem
        entered-in-error (linked, the whole item)."""
        only_fhir = len(account.fhir_items) == len(account.charges)
        if account.fhir_items and (only_fhir or self.rng.random() < 0.6):
            ident, event_id, cents = account.fhir_items[0]
            resource = charge_item(ident=ident, account=account.name, cents=cents,
                                   day=self.day(1), revenue_code="0450",
                                   status="entered-in-error")
            account.insurance_ar -= cents
            self.fhir_file(1, [resource], [{
                "kind": "charge_reversal", "account": account.name,
                "event_id": f"{event_id}:entered-in-error", "cents": cents,
                "reverses": event_id, "marker": ident}], "fhir_credit")
            return
        control = self.next_id("MSG")
        cents = self.rng.randrange(100, min(c for _, c in account.charges))
        day = self.day(1)
        payload = hl7_dft(sender=SENDER, facility=self.facility, control_id=control,
                          account=account.name, when=day,
                          ft1s=[Ft1("CD", money(cents), day, "0450")])
        account.insurance_ar -= cents
        self.add(1, "mllp", f"hl7-{control}", payload, [{
            "kind": "charge_reversal", "account": account.name,
            "event_id": f"hl7:{SENDER}|{self.facility}|{control}:ft1-1", "cents": cents,
            "reverses": None, "marker": control}], "hl7_credit")

    # -- phases 3 and 4: payment files ----------------------------------------------------------

    def payments(self, accounts: list[Account]) -> None:
        rng = self.rng
        by_channel: dict[str, list[tuple[Account, int]]] = {"lockbox": [], "portal": [],
                                                             "fhir": []}
        for account in accounts:
            if account.patient_ar > 0 and rng.random() < 0.7:
                style = rng.choice(["full", "full", "part", "over"])
                total = {"full": account.patient_ar,
                         "part": max(1, account.patient_ar * rng.randrange(20, 90) // 100),
                         "over": account.patient_ar + rng.randrange(100, 5_000)}[style]
            elif rng.random() < 0.08:
                total = rng.randrange(500, 5_000)  # nothing open: all a credit balance
            else:
                continue
            parts = [total] if total < 200 or rng.random() < 0.7 else \
                [total // 2, total - total // 2]
            for cents in parts:
                by_channel[rng.choice(["lockbox", "lockbox", "portal", "fhir"])].append(
                    (account, cents))
                applied = min(cents, max(account.patient_ar, 0))
                account.patient_ar -= applied
                account.unapplied += cents - applied
        day = self.day(3)
        for chunk in chunks(by_channel["lockbox"], 8):
            rows, facts = self.payment_rows(chunk, "lockbox", "LBX", day)
            self.add(3, "drop", f"{self.next_id('LBF')}.csv", payments_csv(rows), facts,
                     "lockbox")
        for chunk in chunks(by_channel["portal"], 8):
            rows, facts = self.payment_rows(chunk, "portal", "PTL", day)
            self.add(3, "payments", f"{self.next_id('PTF')}.jsonl", payments_jsonl(rows),
                     facts, "portal")
        for chunk in chunks(by_channel["fhir"], 3):
            ident = self.next_id("PRC")
            details = [(self.next_id("PDT"), a.name, c) for a, c in chunk]
            paid: list[Fact] = [
                {"kind": "payment", "account": account, "cents": cents, "channel": "portal",
                 "event_id": f"fhir:PaymentReconciliation.detail:{ACCOUNT_SYSTEM}|{detail}",
                 "marker": detail} for detail, account, cents in details]
            self.fhir_file(3, [reconciliation(ident=ident, day=day, details=details)], paid,
                           "fhir_payments")

    def payment_rows(self, chunk: list[tuple[Account, int]], channel: str, prefix: str,
                     day: date) -> tuple[list[dict[str, str]], list[Fact]]:
        rows: list[dict[str, str]] = []
        facts: list[Fact] = []
        batch = self.next_id("DEP")
        for account, cents in chunk:
            ref = self.next_id(prefix)
            rows.append({"type": "payment", "account": account.name, "amount": money(cents),
                         "date": day.isoformat(), "reference": ref, "channel": channel,
                         "batch": batch})
            facts.append({"kind": "payment", "account": account.name, "cents": cents,
                          "channel": channel, "event_id": f"payment:{channel}:{ref}",
                          "marker": ref})
            self.rows_sent.append((rows[-1], facts[-1]))
        return rows, facts

    def settlements(self, accounts: list[Account]) -> None:
        """At most one refund or write-off per account, from the balances after phase 3."""
        rng = self.rng
        rows: list[tuple[dict[str, str], Fact]] = []
        day = self.day(4)
        for account in accounts:
            row: dict[str, str] | None = None
            if account.unapplied > 0 and rng.random() < 0.7:
                cents = rng.randrange(1, account.unapplied + 1)
                if rng.random() < 0.2:
                    cents = account.unapplied + rng.randrange(1, 5_000)  # refused
                ref = self.next_id("RFD")
                row = {"type": "refund", "to": "patient", "reference": ref}
                fact: Fact = {"kind": "refund", "to": "patient",
                              "event_id": f"refund:{ref}"}
            elif account.insurance_ar < 0 and rng.random() < 0.7:
                cents = rng.randrange(1, -account.insurance_ar + 1)
                ref = self.next_id("RFD")
                row = {"type": "refund", "to": "payer", "reference": ref}
                fact = {"kind": "refund", "to": "payer", "event_id": f"refund:{ref}"}
            elif account.patient_ar > 0 and rng.random() < 0.6:
                reason = rng.choice(["price_concession", "charity", "bad_debt",
                                     "administrative", "small_balance"])
                cents = rng.randrange(1, account.patient_ar + 1)
                if reason == "small_balance":
                    cents = min(cents, 499) if rng.random() < 0.8 else max(cents, 500)
                if rng.random() < 0.12:
                    cents = account.patient_ar + rng.randrange(1, 1_000)  # refused
                ref = self.next_id("WOF")
                row = {"type": "write_off", "reason": reason, "from_ar": "patient",
                       "reference": ref}
                fact = {"kind": "write_off", "reason": reason, "from_ar": "patient",
                        "event_id": f"write_off:{ref}"}
            elif account.outcome == "denied" and account.insurance_ar > 0 \
                    and rng.random() < 0.7:
                cents = account.insurance_ar
                ref = self.next_id("WOF")
                row = {"type": "write_off", "reason": "denial", "reference": ref}
                fact = {"kind": "write_off", "reason": "denial", "from_ar": None,
                        "event_id": f"write_off:{ref}"}
            if row is None:
                continue
            row |= {"account": account.name, "amount": money(cents), "date": day.isoformat()}
            fact |= {"account": account.name, "cents": cents, "marker": ref}
            rows.append((row, fact))
        rows += self.refusals({str(f["account"]) for _, f in rows}, day)
        rng.shuffle(rows)
        for chunk in chunks(rows, 10):
            if rng.random() < 0.5:
                self.add(4, "drop", f"{self.next_id('STL')}.csv",
                         payments_csv([r for r, _ in chunk]), [f for _, f in chunk],
                         "refunds_write_offs")
            else:
                self.add(4, "payments", f"{self.next_id('STL')}.jsonl",
                         payments_jsonl([r for r, _ in chunk]), [f for _, f in chunk],
                         "refunds_write_offs")

    def refusals(self, used: set[str], day: date) -> list[tuple[dict[str, str], Fact]]:
        """One refund and two write-offs that a posting rule refuses whatever the order, on
        accounts with nothing else in phase 4."""
        free = [a for a in self.accounts if a.name not in used and a.patient_ar >= 0]
        out: list[tuple[dict[str, str], Fact]] = []
        for account, (kind, reason) in zip(self.rng.sample(free, min(3, len(free))), (
                ("refund", "patient"), ("write_off", "price_concession"),
                ("write_off", "small_balance")), strict=False):
            ref = self.next_id("RFD" if kind == "refund" else "WOF")
            if kind == "refund":  # more than the credit balance
                cents = account.unapplied + self.rng.randrange(100, 5_000)
                row = {"type": kind, "to": reason}
                fact: Fact = {"kind": kind, "to": reason, "event_id": f"refund:{ref}"}
            else:  # more than the patient AR / not under the small-balance threshold
                cents = account.patient_ar + 100 if reason == "price_concession" else \
                    self.rng.randrange(500, 5_000)
                row = {"type": kind, "reason": reason, "from_ar": "patient"}
                fact = {"kind": kind, "reason": reason, "from_ar": "patient",
                        "event_id": f"write_off:{ref}"}
            row |= {"account": account.name, "amount": money(cents), "date": day.isoformat(),
                    "reference": ref}
            out.append((row, fact | {"account": account.name, "cents": cents, "marker": ref}))
        return out


def chunks(items: list[_T], size: int) -> list[list[_T]]:
    return [items[n:n + size] for n in range(0, len(items), size)]
