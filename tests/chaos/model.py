"""What the workload generator hands the runner and the oracle hands the checks.

Plain data, no rcmflow imports: the oracle (``oracle.py``) and the generator
(``workload.py``) are written from the inputs they make, never from rcmflow's code, so a
bug in rcmflow's core cannot move the expected results with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: How a delivery reaches rcmflow:
#: ``mllp``     one HL7 v2 message to the MLLP listener; the client resends it until ACKed;
#: ``drop``     a file written into the watched drop folder (X12 835/837, payment .csv/.jsonl);
#: ``payments`` a file published with ``rcmflow ingest payments FILE`` (re-run on exit 3);
#: ``fhir``     a file published with ``rcmflow ingest fhir FILE`` (re-run on exit 3).
Channel = Literal["mllp", "drop", "payments", "fhir"]


@dataclass(frozen=True)
class Delivery:
    #: Every delivery of phase n is applied before the first of phase n+1 is sent, so the
    #: oracle's answer does not depend on the order the runner's channels race in.
    phase: int
    channel: Channel
    #: Unique in the workload: the MSH-10 of an MLLP message, the file name of a file.
    name: str
    payload: bytes
    #: The delivery whose bytes this one sends again (a replay), if any.
    replay_of: str | None = None
    #: What the generator meant by these bytes, as plain facts the oracle computes from (it
    #: never parses the payload): one dict per unit that becomes an event (``kind``,
    #: ``account``, ``event_id``, ``cents``, ...; ``workload.py`` lists them) or is refused
    #: by its connector (``kind`` "refused", ``reason``). Every fact has a ``marker``: a
    #: string of the payload that rcmflow's rcm.dlq record of that unit would contain.
    facts: tuple[dict[str, object], ...] = field(default=(), hash=False)
    #: How the delivery was made, for the run's counts: "charges", "835", "malformed", ...
    label: str = ""


@dataclass(frozen=True)
class Workload:
    seed: int
    deliveries: tuple[Delivery, ...]

    def phases(self) -> list[list[Delivery]]:
        last = max((d.phase for d in self.deliveries), default=-1)
        return [[d for d in self.deliveries if d.phase == n] for n in range(last + 1)]


@dataclass(frozen=True)
class Expected:
    #: account (and provider key) -> bucket -> integer cents, every bucket
    #: ``rcmflow accounts show ACCOUNT --json`` prints under "balances".
    balances: dict[str, dict[str, int]]
    #: Every posting id rcm.postings must hold, and no other.
    posting_ids: frozenset[str]
    #: (reason_code, marker): some rcm.dlq record has that reason code and contains the marker
    #: (a string unique to one input, e.g. its MSH-10 or a reference in it) in its JSON text;
    #: every rcm.dlq record must match one of them (nothing made up).
    dlq: frozenset[tuple[str, str]]
    #: Well-formed inputs (units that must apply exactly once), for the run's one line.
    inputs: int = 0
    notes: tuple[str, ...] = field(default=())
