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

from tests.chaos.builder import PHASES, Builder, chunks
from tests.chaos.mishaps import REPLAY_SHARE, conflicts, malformed, replays
from tests.chaos.model import Workload

__all__ = ["generate", "counts", "PHASES", "REPLAY_SHARE"]


def generate(seed: int, accounts: int = 30) -> Workload:
    """The workload of ``seed``: ``accounts`` patient accounts (30: a short CI run of about
    100 deliveries; 200: a long one), in delivery order within each phase."""
    b = Builder(seed, accounts)
    rng = b.rng
    fhir_only = [a for a in b.accounts if rng.random() < 0.25]
    for account in b.accounts:
        if account not in fhir_only:
            b.hl7_charges(account)
    for group in chunks(fhir_only + [a for a in b.accounts if rng.random() < 0.1
                                      and a not in fhir_only], 4):
        b.fhir_charges(group)
    insured = [a for a in b.accounts if rng.random() < 0.9]
    for group in chunks(insured, 6):
        b.claims_837(group)
    for group in chunks([a for a in insured if rng.random() < 0.9], 6):
        b.remits(group)
    credited = [a for a in b.accounts if a.charges and rng.random() < 0.12]
    for wanted in (fhir_only[:1], [a for a in b.accounts if a not in fhir_only][:1]):
        credited += [a for a in wanted if a not in credited]  # one of each kind at least
    for account in credited:
        b.credits(account)
    redo = [a for a in b.accounts if a.outcome == "processed" and rng.random() < 0.15
            or a.outcome == "denied" and rng.random() < 0.3]
    for group in chunks(redo, 4):
        b.corrections(group)
    b.payments(b.accounts)
    b.settlements(b.accounts)
    conflicts(b, max(1, accounts // 40))
    malformed(b, max(4, accounts // 20))  # 4: every variant of every format
    replays(b)
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
