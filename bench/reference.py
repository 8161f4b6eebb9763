"""What the reference implementations compute, shared by the aiokafka and Quix versions.

Same contract as rcmflow at its core, without its schema validation, chart of accounts or
crash-safe write ordering: dedup by (account, event_id) with a content digest (same digest: a
replay, nothing emitted; other digest: a conflict, nothing emitted), a per-account version and
balance in integer cents, and one JSON delta per new event that moves money.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from typing import Any

__all__ = [
    "MONEY_KINDS",
    "digest",
    "balance_effect",
    "delta_json",
    "vmhwm_kb",
    "emit_result",
    "RESULT_PREFIX",
    "RESULT_FILE_ENV",
]

MONEY_KINDS = frozenset({"charge_posted", "claim_adjudicated", "patient_payment",
                         "charge_reversed", "refund", "write_off", "manual_adjustment",
                         "provider_adjustment"})
#: The line a benchmark process prints its own numbers on (parsed by the harness).
RESULT_PREFIX = "BENCH_RESULT "
RESULT_FILE_ENV = "BENCH_RESULT_FILE"


def digest(value: bytes) -> str:
    """Content digest of the raw event: replays are byte-identical re-sends."""
    return hashlib.sha256(value).hexdigest()


def balance_effect(doc: dict[str, Any]) -> int:
    """How much the account's open balance moves, in cents (PR amounts only reclassify)."""
    kind = doc["kind"]
    if kind == "charge_posted":
        return int(doc["amount_cents"])
    if kind == "claim_adjudicated":
        adjusted = sum(int(a["amount_cents"]) for a in doc.get("adjustments", ())
                       if a["group"] != "PR")
        return -(int(doc["paid_cents"]) + adjusted)
    if kind == "patient_payment":
        return -int(doc["amount_cents"])
    return 0


def delta_json(doc: dict[str, Any], version: int, effect: int, balance: int) -> bytes:
    return json.dumps({
        "event_id": doc["event_id"],
        "account": doc["account"],
        "kind": doc["kind"],
        "account_version": version,
        "amount_cents": effect,
        "balance_cents": balance,
    }, separators=(",", ":")).encode()


def vmhwm_kb(pid: int | str = "self") -> int | None:
    """The process's peak resident set size (kernel-tracked high-water mark), in KiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            match = re.search(r"^VmHWM:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reference_arguments(description: str) -> argparse.ArgumentParser:
    """The command line every reference system takes (the harness passes these)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--input", default="rcm.events")
    parser.add_argument("--output", required=True)
    return parser


def emit_result(**fields: Any) -> None:
    """Print the process's own numbers; also to $BENCH_RESULT_FILE (Faust reroutes stdout)."""
    fields.setdefault("pid", os.getpid())
    fields.setdefault("vmhwm_kb", vmhwm_kb())
    fields.setdefault("printed_at", time.time())
    line = RESULT_PREFIX + json.dumps(fields) + "\n"
    path = os.environ.get(RESULT_FILE_ENV)
    if path:
        with open(path, "a") as out:
            out.write(line)
    sys.stdout.write(line)
    sys.stdout.flush()
