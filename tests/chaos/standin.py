"""A small hand-written workload and its hand-computed expectation, for the runner's own
tests until the seeded generator (workload.py) and the oracle (oracle.py) are there.

Two accounts, three phases, every channel:

- phase 0: DFT^P03 for CH1 over MLLP (charges 100.00 + 50.00), DFT^P03 for CH2 (200.00), a
  malformed DFT (amount "12.x": AE, rcm.dlq), the 837P claim for CH1 (150.00) in the drop
  folder;
- phase 1: the CH1 DFT sent again (a replay: AA, nothing applied), the payer's 835 for CH1
  in the drop folder (paid 90.00, CO-45 40.00, PR-1 20.00);
- phase 2: the patient's lockbox payment for CH1 (20.00) with `rcmflow ingest payments`.

CH1 ends as tests/integration/test_inbound_e2e.py's account does: nothing owed, every bucket
saying where the money went. The posting ids are those the five ledger-moving events make
(two charges and the adjudication of CH1, CH2's charge, the payment), written out here.
"""

from __future__ import annotations

from rcmflow.cli.demo_sources import HL7_FILE, X12_FILES
from tests.chaos.model import Delivery, Expected, Workload

__all__ = ["standin_workload", "standin_expected"]

_BUCKETS = ("gross_charges", "payer_paid", "contractual_adjustments", "patient_responsibility",
            "other_adjustments", "denied", "patient_paid", "refunds", "write_offs",
            "insurance_ar", "patient_ar", "unapplied_credit", "interest_income",
            "payer_overpayments", "balance")


def _dft(control_id: str, account: str, charges: list[tuple[str, str]]) -> bytes:
    """The demo DFT with its MSH-10, account and FT1s replaced."""
    lines = HL7_FILE.read_text().replace("\r\n", "\r").replace("\n", "\r").split("\r")
    head = [line for line in lines if line and not line.startswith("FT1")]
    head = [line.replace("DEMO3001", control_id).replace("A3001", account) for line in head]
    ft1 = [f"FT1|{n}|{control_id}-{n}||20261102|20261102|CG|71045^Chest x-ray^C4|||1|"
           f"{amount}||{dept}|||||||||||||71045"
           for n, (amount, dept) in enumerate(charges, start=1)]
    return ("\r".join(head + ft1) + "\r").encode()


def _x12(path_index: int, account: str) -> bytes:
    return X12_FILES[path_index].read_bytes().replace(b"A3001", account.encode())


def standin_workload(seed: int = 0) -> Workload:
    ch1 = _dft("CHMSG1", "CH1", [("100.00", "RAD"), ("50.00", "LAB")])
    deliveries = (
        Delivery(0, "mllp", "CHMSG1", ch1),
        Delivery(0, "mllp", "CHMSG2", _dft("CHMSG2", "CH2", [("200.00", "RAD")])),
        Delivery(0, "mllp", "CHBAD1", _dft("CHBAD1", "CH2", [("12.x", "RAD")])),
        Delivery(0, "drop", "claim_CH1.837", _x12(0, "CH1")),
        Delivery(1, "mllp", "CHMSG1-again", ch1, replay_of="CHMSG1"),
        Delivery(1, "drop", "remit_CH1.835", _x12(1, "CH1")),
        Delivery(2, "payments", "lockbox_CH1.csv",
                 b"type,account,amount,date,reference\n"
                 b"payment,CH1,20.00,2026-11-10,LBX-CH1-1\n"),
    )
    return Workload(seed, deliveries)


def _account(**cents: int) -> dict[str, int]:
    return {bucket: cents.get(bucket, 0) for bucket in _BUCKETS}


def standin_expected(workload: Workload) -> Expected:
    # CH1: charges 150.00; the payer paid 90.00, CO-45 wrote off 40.00, PR-1 moved 20.00 to
    # the patient, who paid it. CH2: one charge of 200.00, billed to nobody yet.
    return Expected(
        balances={
            "CH1": _account(gross_charges=15000, payer_paid=9000, contractual_adjustments=4000,
                            patient_responsibility=2000, patient_paid=2000),
            "CH2": _account(gross_charges=20000, insurance_ar=20000, balance=20000),
        },
        posting_ids=frozenset(STANDIN_POSTING_IDS),
        dlq=frozenset({("invalid_amount", "CHBAD1")}),
        inputs=5,
    )


#: pst_ + sha256(account, event id, chart version, rule version)[:32] of the five events that
#: move ledger buckets (the 837 moves none: its claim is tracked, not posted), as the first
#: clean run printed them, each read against its event.
STANDIN_POSTING_IDS: tuple[str, ...] = (
    "pst_6689c479dec2886c7a7eb73adb83edc4",  # CH1 hl7:DEMOEHR|DEMOHOSP|CHMSG1:ft1-1
    "pst_09d9c101d1ea0f0869c7c75ecc110e72",  # CH1 hl7:DEMOEHR|DEMOHOSP|CHMSG1:ft1-2
    "pst_254223f05523ad6265e4b7149937bb83",  # CH2 hl7:DEMOEHR|DEMOHOSP|CHMSG2:ft1-1
    "pst_640e9ff0b84838349a278a6e6166a2ce",  # CH1 x12-835:...:DEMOEFT3001:CH1:DEMOPCN3001:1
    "pst_cc116b859f5a68c70950faba87111784",  # CH1 payment:lockbox:LBX-CH1-1
)
