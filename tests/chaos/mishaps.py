"""What goes wrong in a workload: conflicting re-sends, malformed inputs, replays.

- A conflicting re-send (phase 4) carries the ids of an earlier input with other amounts: an
  HL7 message (the same MSH-3/4/10), an 835 (the same TRN02 and CLP), a payment row (the same
  reference), a FHIR ChargeItem (the same identifier). rcmflow refuses it as ``conflict``;
  the first content stays.
- A malformed input of every format, in any phase, with a marker (MSH-10, TRN02 / BHT03, the
  payment batch, the FHIR identifier) and the reason code its connector gives.
- A replay sends the bytes of an earlier delivery again under a new name, in its phase or a
  later one: it changes nothing.
"""

from __future__ import annotations

from tests.chaos.builder import PAYER_ID, PHASES, SENDER, Builder, Fact
from tests.chaos.formats import (
    Clp,
    Ft1,
    Remit,
    charge_item,
    hl7_dft,
    json_amount,
    money,
    payments_csv,
    payments_jsonl,
    reconciliation,
    x12_835,
    x12_837,
)
from tests.chaos.model import Delivery

__all__ = ["conflicts", "malformed", "replays", "REPLAY_SHARE"]

#: Share of replays among all deliveries.
REPLAY_SHARE = 0.2


def conflicts(b: Builder, per_format: int) -> None:
    """The same ids as an earlier input, other amounts: refused as ``conflict``."""
    rng = b.rng
    for control, account, day, ft1s, facts in rng.sample(
            b.hl7_sent, min(per_format, len(b.hl7_sent))):
        first = ft1s[0]
        cents = int(facts[0]["cents"]) + 100  # type: ignore[call-overload]
        changed = [Ft1(first.type_code, money(cents), first.day, first.revenue_code),
                   *ft1s[1:]]
        payload = hl7_dft(sender=SENDER, facility=b.facility, control_id=control,
                          account=account.name, when=day, ft1s=changed)
        b.add(4, "mllp", f"hl7-{control}-conflict", payload,
              [facts[0] | {"cents": cents}, *facts[1:]], "conflict_hl7")
    usable = [r for r in b.remits_sent
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
        facts = [b.clp_fact(resent, c) for c in resent.claims]
        facts += [b.plb_fact(resent, p) for p in resent.plbs]
        b.add(4, "drop", f"{remit.trn02}-conflict.835",
              x12_835(resent, isa13=b.isa13()), facts, "conflict_835")
    for row, fact in rng.sample(b.rows_sent, min(per_format, len(b.rows_sent))):
        cents = int(fact["cents"]) + 100  # type: ignore[call-overload]
        changed_row = row | {"amount": money(cents)}
        facts = [fact | {"cents": cents}]
        if row["channel"] == "lockbox":
            b.add(4, "drop", f"{row['reference']}-conflict.csv",
                  payments_csv([changed_row]), facts, "conflict_payments")
        else:
            b.add(4, "payments", f"{row['reference']}-conflict.jsonl",
                  payments_jsonl([changed_row]), facts, "conflict_payments")
    for resource, fact in rng.sample(b.items_sent, min(per_format, len(b.items_sent))):
        cents = int(fact["cents"]) + 100  # type: ignore[call-overload]
        price = dict(resource["priceOverride"])  # type: ignore[call-overload]
        repriced = resource | {"priceOverride": price | {"value": json_amount(cents)}}
        b.fhir_file(4, [repriced], [fact | {"cents": cents}], "conflict_fhir")


def malformed(b: Builder, per_format: int) -> None:
    """Inputs each connector refuses, each with a marker its rcm.dlq record contains."""
    rng = b.rng
    for n in range(per_format):
        account = rng.choice(b.accounts)
        phase = rng.randrange(PHASES)
        day = b.day(phase)
        # HL7: refused whole (AE)
        control = b.next_id("BADH")
        variant = n % 4
        ft1 = Ft1("ZZ" if variant == 3 else "CG", "12.345" if variant == 0 else "10.00",
                  day, "0450")
        payload = hl7_dft(sender=SENDER, facility=b.facility, control_id=control,
                          account="" if variant == 1 else account.name, when=day,
                          ft1s=[ft1], ft1_day_text="19890101" if variant == 2 else None)
        reason = ("invalid_amount", "no_account", "date_out_of_range",
                  "unmapped_transaction_type")[variant]
        b.add(phase, "mllp", f"hl7-{control}", payload, [_refused(reason, control)],
              "malformed_hl7")
        # X12: the set parked
        marker = b.next_id("BADX")
        variant = n % 3
        if variant == 2:
            payload = x12_837([(account.name, 10_100, [10_000])], bht03=marker, when=day,
                              isa13=b.isa13(), payer_id=PAYER_ID)
            b.add(phase, "drop", f"{marker}.837", payload,
                  [_refused("x12_claim_total", marker)], "malformed_x12")
        else:
            clp = Clp(account.name, "1", 10_000, 6_000, account.filing, f"{marker}-1",
                      (("CO", "45", 4_000 + (100 if variant == 0 else 0)),))
            remit = Remit(marker, PAYER_ID, day, [clp],
                          bpr02=6_000 + (100 if variant == 1 else 0))
            reason = "x12_claim_unbalanced" if variant == 0 else "x12_transaction_unbalanced"
            b.add(phase, "drop", f"{marker}.835", x12_835(remit, isa13=b.isa13()),
                  [_refused(reason, marker)], "malformed_x12")
        # payment rows: the row refused (the batch column is the marker)
        marker = b.next_id("BADP")
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
            b.add(phase, "payments", f"{marker}.jsonl", payments_jsonl([line]),
                  [_refused(reason, marker)], "malformed_payments")
        elif variant == 0 or variant == 2 and rng.random() < 0.5:
            b.add(phase, "drop", f"{marker}.csv", payments_csv([row]),
                  [_refused(reason, marker)], "malformed_payments")
        else:
            b.add(phase, "payments", f"{marker}.jsonl", payments_jsonl([row]),
                  [_refused(reason, marker)], "malformed_payments")
        # FHIR: the resource refused
        marker = b.next_id("BADF")
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
        b.fhir_file(phase, [resource], [_refused(reason, marker)], "malformed_fhir")


def replays(b: Builder) -> None:
    """The same bytes again under a new name, in the original's phase or a later one."""
    rng = b.rng
    originals = list(b.deliveries)
    count = round(len(originals) * REPLAY_SHARE / (1 - REPLAY_SHARE))
    for n, original in enumerate(rng.choices(originals, k=count), start=1):
        stem, dot, ext = original.name.rpartition(".")
        name = f"{original.name}-replay{n}" if original.channel == "mllp" or not dot \
            else f"{stem}-replay{n}.{ext}"
        b.deliveries.append(Delivery(
            rng.randrange(original.phase, PHASES), original.channel, name,
            original.payload, replay_of=original.name, facts=original.facts,
            label="replay"))


def _refused(reason: str, marker: str) -> Fact:
    return {"kind": "refused", "reason": reason, "marker": marker}
