"""A seeded workload of real input bytes, in every format rcmflow reads, in phases.

``generate(seed, accounts)`` is deterministic from the seed. Each delivery carries its bytes
and the plain facts it means (``Delivery.facts``), from which ``oracle.py`` computes the end
state without parsing a byte. Phases make the end state independent of how the runner's
channels race: within one phase every effect on one account commutes.

====== =====================================================================================
phase  what
====== =====================================================================================
0      charges: HL7 DFT^P03 over MLLP (1-4 FT1 each), FHIR ChargeItems (Bundle / NDJSON);
       837P claims (drop folder)
1      835 remittances (drop): paid, CO/PR/OA adjustments, denials (CLP02 = 4), PLBs on
       provider keys (L6, WO, FB, 72); charge credits (HL7 FT1 CD, FHIR entered-in-error)
2      835 claim reversals (CLP02 = 22) with their corrected claims, in one set, reversal
       first (a reversal reads the claim's status); a PLB WO defers a negative payment
3      patient payments: lockbox CSV (drop), portal JSON lines (``rcmflow ingest
       payments``), FHIR PaymentReconciliation (portal); overpayments become credit balances
4      refunds and write-offs (at most one per account: they read the balances), some
       refused on purpose (refund_exceeds_credit, write_off_exceeds_balance,
       small_balance_over_threshold); conflicting re-sends of earlier inputs
====== =====================================================================================

Malformed inputs of every format are spread over the phases; ~20 % of the deliveries are
replays (the same bytes again, in the same or a later phase).

Facts (``kind`` and its keys; every fact has ``marker``, a string its rcm.dlq record would
contain, and, but for ``refused``, ``account`` and ``event_id``):

- ``charge`` cents; ``charge_reversal`` cents, reverses (an event id or None);
- ``claim`` cents (an 837 claim: no money moves);
- ``adjudication`` outcome (processed / denied / reversal), charge, paid,
  adjustments ([group, reason, cents], ...);
- ``plb`` code, cents (835 sign: positive reduces the payment);
- ``payment`` cents, channel; ``refund`` cents, to; ``write_off`` cents, reason, from_ar;
- ``refused`` reason: the connector refuses the unit (rcm.dlq ``reason_code``).

The generator imports nothing of rcmflow: it writes bytes (``formats.py``).
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
    json_amount,
    money,
    payments_csv,
    payments_jsonl,
    reconciliation,
    x12_835,
    x12_837,
)
from tests.chaos.model import Channel, Delivery, Workload

__all__ = ["generate", "counts", "PHASES", "REPLAY_SHARE"]

PHASES = 5
#: Share of replays among all deliveries.
REPLAY_SHARE = 0.2
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
class _Account:
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


class _Builder:
    def __init__(self, seed: int, accounts: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.accounts = [_Account(f"A{seed}-{n:04d}", self.rng.choice(FILING_CODES))
                         for n in range(accounts)]
        self.deliveries: list[Delivery] = []
        self.counters: dict[str, int] = {}
        self.facility = f"F{seed}"
        self.providers = [f"NPI{seed}X{k}" for k in (1, 2)]
        # Originals that conflicting re-sends copy (the same ids, other content).
        self.hl7_sent: list[tuple[str, _Account, date, list[Ft1], list[Fact]]] = []
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

    def hl7_charges(self, account: _Account) -> None:
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

    def fhir_charges(self, group: list[_Account]) -> None:
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

    def claims_837(self, group: list[_Account]) -> None:
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

    def split(self, account: _Account, charge: int, pcn: str) -> Clp:
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

    def denial(self, account: _Account, charge: int, pcn: str) -> Clp:
        reason = self.rng.choice(["50", "16", "197", "29"])
        return Clp(account.name, "4", charge, 0, account.filing, pcn, (("CO", reason, charge),))

    def book(self, account: _Account, clp: Clp) -> None:
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

    def remits(self, group: list[_Account]) -> None:
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

    def corrections(self, group: list[_Account]) -> None:
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

    def credits(self, account: _Account) -> None:
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

    def payments(self, accounts: list[_Account]) -> None:
        rng = self.rng
        by_channel: dict[str, list[tuple[_Account, int]]] = {"lockbox": [], "portal": [],
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
        for chunk in _chunks(by_channel["lockbox"], 8):
            rows, facts = self.payment_rows(chunk, "lockbox", "LBX", day)
            self.add(3, "drop", f"{self.next_id('LBF')}.csv", payments_csv(rows), facts,
                     "lockbox")
        for chunk in _chunks(by_channel["portal"], 8):
            rows, facts = self.payment_rows(chunk, "portal", "PTL", day)
            self.add(3, "payments", f"{self.next_id('PTF')}.jsonl", payments_jsonl(rows),
                     facts, "portal")
        for chunk in _chunks(by_channel["fhir"], 3):
            ident = self.next_id("PRC")
            details = [(self.next_id("PDT"), a.name, c) for a, c in chunk]
            paid: list[Fact] = [
                {"kind": "payment", "account": account, "cents": cents, "channel": "portal",
                 "event_id": f"fhir:PaymentReconciliation.detail:{ACCOUNT_SYSTEM}|{detail}",
                 "marker": detail} for detail, account, cents in details]
            self.fhir_file(3, [reconciliation(ident=ident, day=day, details=details)], paid,
                           "fhir_payments")

    def payment_rows(self, chunk: list[tuple[_Account, int]], channel: str, prefix: str,
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

    def settlements(self, accounts: list[_Account]) -> None:
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
        for chunk in _chunks(rows, 10):
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

    # -- conflicting re-sends (phase 4) and malformed inputs ------------------------------------

    def conflicts(self, per_format: int) -> None:
        """The same ids as an earlier input, other amounts: refused as ``conflict``."""
        rng = self.rng
        for control, account, day, ft1s, facts in rng.sample(
                self.hl7_sent, min(per_format, len(self.hl7_sent))):
            first = ft1s[0]
            cents = int(facts[0]["cents"]) + 100  # type: ignore[call-overload]
            changed = [Ft1(first.type_code, money(cents), first.day, first.revenue_code),
                       *ft1s[1:]]
            payload = hl7_dft(sender=SENDER, facility=self.facility, control_id=control,
                              account=account.name, when=day, ft1s=changed)
            self.add(4, "mllp", f"hl7-{control}-conflict", payload,
                     [facts[0] | {"cents": cents}, *facts[1:]], "conflict_hl7")
        usable = [r for r in self.remits_sent
                  if any(("CO", "45") == (g, r_) and c >= 200 for clp in r.claims
                         for g, r_, c in clp.cas)]
        for remit in rng.sample(usable, min(per_format, len(usable))):
            claims = list(remit.claims)
            n = next(k for k, clp in enumerate(claims)
                     if any((g, r) == ("CO", "45") and c >= 200 for g, r, c in clp.cas))
            old = claims[n]
            cas = tuple((g, r, c - 100 if (g, r) == ("CO", "45") else c) for g, r, c in old.cas)
            claims[n] = Clp(old.account, old.status, old.charge, old.paid + 100, old.filing,
                            old.pcn, cas, old.line, old.patient_resp)
            resent = Remit(remit.trn02, remit.payer_id, remit.paid_on, claims, remit.plbs)
            facts = [self.clp_fact(resent, c) for c in resent.claims]
            facts += [self.plb_fact(resent, p) for p in resent.plbs]
            self.add(4, "drop", f"{remit.trn02}-conflict.835",
                     x12_835(resent, isa13=self.isa13()), facts, "conflict_835")
        for row, fact in rng.sample(self.rows_sent, min(per_format, len(self.rows_sent))):
            cents = int(fact["cents"]) + 100  # type: ignore[call-overload]
            changed_row = row | {"amount": money(cents)}
            facts = [fact | {"cents": cents}]
            if row["channel"] == "lockbox":
                self.add(4, "drop", f"{row['reference']}-conflict.csv",
                         payments_csv([changed_row]), facts, "conflict_payments")
            else:
                self.add(4, "payments", f"{row['reference']}-conflict.jsonl",
                         payments_jsonl([changed_row]), facts, "conflict_payments")
        for resource, fact in rng.sample(self.items_sent, min(per_format, len(self.items_sent))):
            cents = int(fact["cents"]) + 100  # type: ignore[call-overload]
            price = dict(resource["priceOverride"])  # type: ignore[call-overload]
            repriced = resource | {"priceOverride": price | {"value": json_amount(cents)}}
            self.fhir_file(4, [repriced], [fact | {"cents": cents}], "conflict_fhir")

    def malformed(self, per_format: int) -> None:
        """Inputs each connector refuses, each with a marker its rcm.dlq record contains."""
        rng = self.rng
        for n in range(per_format):
            account = rng.choice(self.accounts)
            phase = rng.randrange(PHASES)
            day = self.day(phase)
            # HL7: refused whole (AE)
            control = self.next_id("BADH")
            variant = n % 4
            ft1 = Ft1("ZZ" if variant == 3 else "CG", "12.345" if variant == 0 else "10.00",
                      day, "0450")
            payload = hl7_dft(sender=SENDER, facility=self.facility, control_id=control,
                              account="" if variant == 1 else account.name, when=day,
                              ft1s=[ft1], ft1_day_text="19890101" if variant == 2 else None)
            reason = ("invalid_amount", "no_account", "date_out_of_range",
                      "unmapped_transaction_type")[variant]
            self.add(phase, "mllp", f"hl7-{control}", payload, [_refused(reason, control)],
                     "malformed_hl7")
            # X12: the set parked
            marker = self.next_id("BADX")
            variant = n % 3
            if variant == 2:
                payload = x12_837([(account.name, 10_100, [10_000])], bht03=marker, when=day,
                                  isa13=self.isa13(), payer_id=PAYER_ID)
                self.add(phase, "drop", f"{marker}.837", payload,
                         [_refused("x12_claim_total", marker)], "malformed_x12")
            else:
                clp = Clp(account.name, "1", 10_000, 6_000, account.filing, f"{marker}-1",
                          (("CO", "45", 4_000 + (100 if variant == 0 else 0)),))
                remit = Remit(marker, PAYER_ID, day, [clp],
                              bpr02=6_000 + (100 if variant == 1 else 0))
                reason = "x12_claim_unbalanced" if variant == 0 else "x12_transaction_unbalanced"
                self.add(phase, "drop", f"{marker}.835", x12_835(remit, isa13=self.isa13()),
                         [_refused(reason, marker)], "malformed_x12")
            # payment rows: the row refused (the batch column is the marker)
            marker = self.next_id("BADP")
            variant = n % 4
            row = {"type": "payment", "account": account.name, "amount": "25.00",
                   "date": day.isoformat(), "reference": f"{marker}-R", "channel": "lockbox",
                   "batch": marker}
            if variant == 0:
                row["amount"] = "12.345"
            elif variant == 1:
                row["date"] = "1989-01-01"
            elif variant == 2:
                row["type"] = "chargeback"
            reason = ("row_invalid_amount", "date_out_of_range", "row_unknown_type",
                      "row_invalid_json")[variant]
            if variant == 3:
                line = f'{{"type": "payment", "batch": "{marker}", "amount": "25.00"'
                self.add(phase, "payments", f"{marker}.jsonl", payments_jsonl([line]),
                         [_refused(reason, marker)], "malformed_payments")
            elif variant == 0 or variant == 2 and rng.random() < 0.5:
                self.add(phase, "drop", f"{marker}.csv", payments_csv([row]),
                         [_refused(reason, marker)], "malformed_payments")
            else:
                self.add(phase, "payments", f"{marker}.jsonl", payments_jsonl([row]),
                         [_refused(reason, marker)], "malformed_payments")
            # FHIR: the resource refused
            marker = self.next_id("BADF")
            variant = n % 3
            if variant == 2:
                resource = reconciliation(ident=marker, day=day,
                                          details=[(f"{marker}-D", account.name, 2_500)],
                                          total=3_000)
                reason = "fhir_unbalanced"
            else:
                resource = charge_item(ident=marker, account=account.name,
                                       cents=None if variant == 1 else 4_000, day=day,
                                       revenue_code="0450", currency="EUR")
                reason = "fhir_no_price" if variant == 1 else "fhir_currency"
            self.fhir_file(phase, [resource], [_refused(reason, marker)], "malformed_fhir")

    def replays(self) -> None:
        """The same bytes again under a new name, in the original's phase or a later one."""
        rng = self.rng
        originals = list(self.deliveries)
        count = round(len(originals) * REPLAY_SHARE / (1 - REPLAY_SHARE))
        for n, original in enumerate(rng.choices(originals, k=count), start=1):
            stem, dot, ext = original.name.rpartition(".")
            name = f"{original.name}-replay{n}" if original.channel == "mllp" or not dot \
                else f"{stem}-replay{n}.{ext}"
            self.deliveries.append(Delivery(
                rng.randrange(original.phase, PHASES), original.channel, name,
                original.payload, replay_of=original.name, facts=original.facts,
                label="replay"))


def _refused(reason: str, marker: str) -> Fact:
    return {"kind": "refused", "reason": reason, "marker": marker}




def generate(seed: int, accounts: int = 30) -> Workload:
    """The workload of ``seed``: ``accounts`` patient accounts (30: a short CI run of about
    100 deliveries; 200: a long one), in delivery order within each phase."""
    b = _Builder(seed, accounts)
    rng = b.rng
    fhir_only = [a for a in b.accounts if rng.random() < 0.25]
    for account in b.accounts:
        if account not in fhir_only:
            b.hl7_charges(account)
    for group in _chunks(fhir_only + [a for a in b.accounts if rng.random() < 0.1
                                      and a not in fhir_only], 4):
        b.fhir_charges(group)
    insured = [a for a in b.accounts if rng.random() < 0.9]
    for group in _chunks(insured, 6):
        b.claims_837(group)
    for group in _chunks([a for a in insured if rng.random() < 0.9], 6):
        b.remits(group)
    credited = [a for a in b.accounts if a.charges and rng.random() < 0.12]
    for wanted in (fhir_only[:1], [a for a in b.accounts if a not in fhir_only][:1]):
        credited += [a for a in wanted if a not in credited]  # one of each kind at least
    for account in credited:
        b.credits(account)
    redo = [a for a in b.accounts if a.outcome == "processed" and rng.random() < 0.15
            or a.outcome == "denied" and rng.random() < 0.3]
    for group in _chunks(redo, 4):
        b.corrections(group)
    b.payments(b.accounts)
    b.settlements(b.accounts)
    b.conflicts(max(1, accounts // 40))
    b.malformed(max(4, accounts // 20))  # 4: every variant of every format
    b.replays()
    ordered = sorted(b.deliveries, key=lambda d: d.phase)  # stable: in order within a phase
    return Workload(seed, tuple(ordered))


def counts(workload: Workload) -> dict[str, int]:
    """Deliveries per label and facts per kind (replays' facts not counted again), for a
    run's report: ``{"deliveries": 85, "replay": 17, "hl7_charges": 24, ..., "fact:charge":
    79, ...}``."""
    out: dict[str, int] = {"deliveries": len(workload.deliveries)}
    for delivery in workload.deliveries:
        out[delivery.label] = out.get(delivery.label, 0) + 1
        if delivery.replay_of is None:
            for fact in delivery.facts:
                key = f"fact:{fact['kind']}"
                out[key] = out.get(key, 0) + 1
    return out


def _chunks(items: list[_T], size: int) -> list[list[_T]]:
    return [items[n:n + size] for n in range(0, len(items), size)]

