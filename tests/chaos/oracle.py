"""What rcmflow must end with after a workload, computed from the workload's facts alone.

Plain Python, importing nothing of rcmflow: the rules are those rcmflow documents
(/work/shared/ACCOUNTING.md, docs/events.md, docs/inbound/*.md), restated here; the chart of
accounts is read as data (its version, CARC and PLB treatments, thresholds). Facts are
applied phase by phase, in delivery order, which is one of the orders the runner's channels
may take (the workload makes every order within a phase give the same end state).

Dedup is by (account, event id), as rcmflow's: the same content again changes nothing; other
content is refused as ``conflict`` (the first content stays). An event a rule refuses uses up
its id all the same.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.chaos.model import Delivery, Expected, Workload

__all__ = ["expect", "expect_through", "posting_id", "BUCKETS", "Ledger", "CHART_PATH"]

CHART_PATH = Path(__file__).resolve().parents[2] / "streams" / "chart_of_accounts.yaml"
POLICY_PATH = Path(__file__).resolve().parents[2] / "streams" / "refund_policy.yaml"
#: The posting rules' version (docs/events.md): part of every posting id.
RULE_VERSION = 1
#: Every bucket ``rcmflow accounts show --json`` prints under "balances".
BUCKETS = ("gross_charges", "payer_paid", "contractual_adjustments", "patient_responsibility",
           "other_adjustments", "denied", "patient_paid", "refunds", "write_offs",
           "insurance_ar", "patient_ar", "unapplied_credit", "interest_income",
           "payer_overpayments", "balance")
#: Where an unmapped (suspense) CAS amount is counted, by group.
SUSPENSE_BUCKET = {"CO": "contractual_adjustments", "PR": "patient_ar",
                   "OA": "other_adjustments", "PI": "other_adjustments",
                   "CR": "other_adjustments"}
CLAIM_STATUS = {"processed": "adjudicated", "denied": "denied", "reversal": "reversed"}


def posting_id(account: str, event_id: str, coa_version: str) -> str:
    """docs/events.md: sha256 over account, event id, chart version and rule version."""
    material = f"{account}\x00{event_id}\x00{coa_version}\x00{RULE_VERSION}".encode()
    return "pst_" + hashlib.sha256(material).hexdigest()[:32]


@dataclass(frozen=True)
class Chart:
    version: str
    carc_rules: tuple[tuple[str, str], ...]
    plb_rules: dict[str, str]
    small_balance_cents: int
    #: Per entity ("" for the default): refunds up to this post at once, approved by the
    #: refund policy's automatic rule; larger ones wait for an approval (docs: refunds).
    auto_refund_cents: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = CHART_PATH, policy: Path = POLICY_PATH) -> Chart:
        doc = yaml.safe_load(path.read_text())
        rules = yaml.safe_load(policy.read_text())
        auto = {name: _automatic(entity["rules"]) for name, entity in
                [("", rules["default"]), *rules.get("entities", {}).items()]}
        return cls(str(doc["version"]), tuple((str(k), str(v)) for k, v in
                                              doc["carc_rules"].items()),
                   {str(k): str(v) for k, v in doc["plb_rules"].items()},
                   int(doc["thresholds"]["small_balance_cents"]), auto)

    def refund_waits(self, entity: str, cents: int) -> bool:
        limit = self.auto_refund_cents.get(entity, self.auto_refund_cents[""])
        return cents > limit

    def carc(self, group: str, reason: str) -> str:
        """The first rule whose "GROUP-REASON" pattern matches (``*`` wildcards)."""
        for pattern, treatment in self.carc_rules:
            if fnmatch.fnmatchcase(f"{group}-{reason}", pattern):
                return treatment
        return "suspense"

    def plb(self, code: str) -> str:
        return self.plb_rules.get(code, self.plb_rules.get("*", "suspense"))


def _automatic(rules: list[dict[str, Any]]) -> int:
    """The largest amount the first rule approves by itself (0: none)."""
    first = rules[0]
    return int(first.get("up_to_cents") or 0) if int(first["approvals"]) == 0 else 0


class Refused(Exception):
    """A posting rule refuses the event: its rcm.dlq reason code."""


@dataclass
class Account:
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS[:-1], 0))
    charges: dict[str, list[int]] = field(default_factory=dict)  # event id -> [cents, reversed]
    claims: dict[str, str] = field(default_factory=dict)  # claim id -> status

    def move(self, **cents: int) -> None:
        for bucket, amount in cents.items():
            self.buckets[bucket] += amount

    def balances(self) -> dict[str, int]:
        b = self.buckets
        return b | {"balance": b["insurance_ar"] + b["patient_ar"] - b["unapplied_credit"]}


@dataclass
class Ledger:
    """The oracle's state: accounts that applied an event, dedup keys, postings, the DLQ."""

    chart: Chart = field(default_factory=Chart.load)
    accounts: dict[str, Account] = field(default_factory=dict)
    seen: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)
    posting_ids: set[str] = field(default_factory=set)
    dlq: set[tuple[str, str]] = field(default_factory=set)
    applied: int = 0

    def take(self, fact: dict[str, object]) -> None:
        marker = str(fact["marker"])
        if fact["kind"] == "refused":
            self.dlq.add((str(fact["reason"]), marker))
            return
        account, event_id = str(fact["account"]), str(fact["event_id"])
        key = (account, event_id)
        content = {k: v for k, v in fact.items() if k != "marker"}
        if key in self.seen:
            if self.seen[key] != content:
                self.dlq.add(("conflict", marker))
            return
        self.seen[key] = content
        state = self.accounts.get(account, Account())
        trial = Account(dict(state.buckets), {k: list(v) for k, v in state.charges.items()},
                        dict(state.claims))
        try:
            posts = self._apply(trial, fact)
        except Refused as refusal:
            self.dlq.add((str(refusal), marker))
            return
        self.accounts[account] = trial
        self.applied += 1
        if posts:
            self.posting_ids.add(posting_id(account, event_id, self.chart.version))

    def _apply(self, acct: Account, f: dict[str, Any]) -> bool:
        """Move ``acct`` by one fact; True when the event posts a delta (money moved)."""
        kind, cents = f["kind"], int(f.get("cents") or 0)
        if kind == "charge":
            acct.move(insurance_ar=cents, gross_charges=cents)
            acct.charges[f["event_id"]] = [cents, 0]
            return True
        if kind == "charge_reversal":
            original = f.get("reverses")
            if original is not None:
                charge = acct.charges.get(original)
                if charge is None:
                    raise Refused("unknown_charge")
                if cents > charge[0] - charge[1]:
                    raise Refused("reversal_exceeds_charge")
                charge[1] += cents
            acct.move(insurance_ar=-cents, gross_charges=-cents)
            return True
        if kind == "claim":
            acct.claims[str(f["account"])] = "submitted"
            return False
        if kind == "adjudication":
            return self._adjudication(acct, f)
        if kind == "plb":
            return self._plb(acct, f, cents)
        if kind == "payment":
            applied = min(cents, max(acct.buckets["patient_ar"], 0))
            acct.move(patient_paid=cents, patient_ar=-applied, unapplied_credit=cents - applied)
            return True
        if kind == "refund":
            return self._refund(acct, f, cents)
        if kind == "write_off":
            return self._write_off(acct, f, cents)
        raise AssertionError(f"no rule for a {kind} fact")

    def _adjudication(self, acct: Account, f: dict[str, Any]) -> bool:
        paid = int(f["paid"])
        acct.move(payer_paid=paid, insurance_ar=-paid)
        posts = paid != 0
        patient_share = 0
        for group, reason, cents in f["adjustments"]:
            treatment = self.chart.carc(group, reason)
            if group == "PR":
                patient_share += cents
            bucket = {"contractual": "contractual_adjustments", "patient_reclass": "patient_ar",
                      "other_adjustment": "other_adjustments",
                      "suspense": SUSPENSE_BUCKET[group]}.get(treatment)
            if bucket is None or cents == 0:  # denial_hold, no_entry: tracked, not posted
                continue
            acct.move(**{bucket: cents, "insurance_ar": -cents})
            posts = True
            if treatment == "suspense":
                self.dlq.add(("unmapped_dimension", str(f["event_id"])))
        claim = str(f["account"])  # an 835's claim id is CLP01, the account
        was_denied = acct.claims.get(claim) == "denied"
        outcome = f["outcome"]
        if outcome == "denied" or outcome == "reversal" and was_denied:
            acct.move(denied=int(f["charge"]))
        acct.move(patient_responsibility=patient_share)
        acct.claims[claim] = CLAIM_STATUS[outcome]
        return posts

    def _plb(self, acct: Account, f: dict[str, Any], cents: int) -> bool:
        # 835 sign: a positive PLB amount reduces the payment (money back to the payer).
        treatment = self.chart.plb(str(f["code"]))
        if treatment == "pair_with_WO" or cents == 0:
            return False
        if treatment == "interest":
            acct.move(payer_paid=-cents, interest_income=-cents)
        elif treatment == "payer_overpayment":
            acct.move(payer_paid=-cents, payer_overpayments=-cents)
        else:
            acct.move(payer_paid=-cents, other_adjustments=cents)
            self.dlq.add(("unmapped_dimension", str(f["event_id"])))
        return True

    def _refund(self, acct: Account, f: dict[str, Any], cents: int) -> bool:
        """A refund request: refused past the credit balance (the shipped policy lets no
        role allow it); above the policy's automatic rule it waits for an approval the
        workload never sends (no money moves, no posting); else it posts."""
        b = acct.buckets
        credit = (max(-b["insurance_ar"], 0) if f["to"] == "payer"
                  else b["unapplied_credit"] + max(-b["patient_ar"], 0))
        if cents > credit:
            raise Refused("refund_exceeds_credit")
        if self.chart.refund_waits(str(f.get("entity") or "01"), cents):
            return False
        if f["to"] == "payer":
            acct.move(insurance_ar=cents, refunds=cents)
            return True
        from_unapplied = min(cents, b["unapplied_credit"])
        acct.move(refunds=cents, unapplied_credit=-from_unapplied,
                  patient_ar=cents - from_unapplied)
        return True

    def _write_off(self, acct: Account, f: dict[str, Any], cents: int) -> bool:
        if f["reason"] == "small_balance" and cents >= self.chart.small_balance_cents:
            raise Refused("small_balance_over_threshold")
        side = f.get("from_ar") or ("insurance" if f["reason"] == "denial" else "patient")
        bucket = "insurance_ar" if side == "insurance" else "patient_ar"
        if cents > acct.buckets[bucket]:
            raise Refused("write_off_exceeds_balance")
        acct.move(**{"write_offs": cents, bucket: -cents})
        return True


def ledger_of(deliveries: Iterable[Delivery], chart: Chart | None = None) -> Ledger:
    ledger = Ledger(chart or Chart.load())
    for delivery in deliveries:
        for fact in delivery.facts:
            ledger.take(fact)
    return ledger


def expect(workload: Workload) -> Expected:
    """Buckets of every account (and provider key) that applied an event, the posting ids,
    the DLQ (reason code, marker) pairs, and the events applied (each exactly once)."""
    return expect_through(workload, len(workload.phases()) - 1)


def expect_through(workload: Workload, phase: int) -> Expected:
    """What rcmflow holds once phases 0 to ``phase`` are applied (a runner may wait for it
    before it sends the next phase)."""
    ledger = ledger_of(d for n, deliveries in enumerate(workload.phases()) if n <= phase
                       for d in deliveries)
    units = {(str(f["account"]), str(f["event_id"])) for d in workload.deliveries
             if d.phase <= phase for f in d.facts if f["kind"] != "refused"}
    return Expected(
        balances={name: acct.balances() for name, acct in sorted(ledger.accounts.items())},
        posting_ids=frozenset(ledger.posting_ids),
        dlq=frozenset(ledger.dlq),
        inputs=ledger.applied,
        notes=(f"chart {ledger.chart.version}, rule version {RULE_VERSION}",
               f"{ledger.applied} events applied, {len(units) - ledger.applied} refused"),
    )
