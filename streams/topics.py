"""The rcm.* topics (ARCHITECTURE.md) with every setting spelled out at creation.

Tansu reports only the configs a topic was created with, so nothing is left to broker defaults.

Every topic has its largest record (``max.message.bytes``) set here, sized for the largest
input the settings allow: Apache Kafka refuses a larger record (1 MiB by default; Tansu has no
limit), and a refused record must never be a worker that crashes on the same batch for ever
or an ingest told to "run again". Each writer keeps under these bounds: producers are sized to
them, the worker turns an event whose outputs would not fit into a DLQ record
(``output_too_large``, ``account_too_large``), DLQ payloads are cut to
RCMFLOW_DLQ_PAYLOAD_BYTES_MAX (the origin names the full record), and ingest refuses at the
edge a record that cannot fit (exit 2, with the reason).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "RAW_HL7",
    "RAW_X12",
    "RAW_PAYMENTS",
    "RAW_FHIR",
    "EVENTS",
    "POSTINGS",
    "ACCOUNTS",
    "DLQ",
    "POSTINGS_DLQ",
    "DLQ_STATE",
    "ERP_OUTCOMES",
    "TopicSpec",
    "topic_specs",
    "record_bytes_max",
    "EVENT_RECORD_BYTES_MAX",
    "OUTPUT_RECORD_BYTES_MAX",
    "RAW_HL7_RECORD_BYTES_MAX",
    "dedup_changelog",
]

RAW_HL7 = "rcm.raw.hl7"
RAW_X12 = "rcm.raw.x12"
RAW_PAYMENTS = "rcm.raw.payments"
RAW_FHIR = "rcm.raw.fhir"
EVENTS = "rcm.events"
POSTINGS = "rcm.postings"
ACCOUNTS = "rcm.accounts"  # compacted heads and items; also the accounts table's changelog
DLQ = "rcm.dlq"
POSTINGS_DLQ = "rcm.postings.dlq"
#: The exception work queue's states (compacted, keyed by dlq_id): the DLQ records stay the
#: items, this holds only what operators did with them (ops/workqueue.py).
DLQ_STATE = "rcm.dlq.state"
#: What each ERP connector did with each delta, when (posted, already there, rejected), by
#: posting id: `rcmflow trace` reads a unit's latency to the ledger from it. Informational:
#: the ERP's own journal and the connector's commits are what make a posting exactly once.
ERP_OUTCOMES = "rcm.erp.outcomes"

_KEEP = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
_COMPACT = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
_WEEK = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000),
         "retention.bytes": "-1"}
#: The largest rcm.raw.hl7 record the settings can allow: a 64 MiB message (the ceiling of
#: RCMFLOW_MLLP_MESSAGE_BYTES_MAX) with 10,000 FT1s' reconcile headers
#: (connectors/inbound/hl7/intake.raw_record_bytes_max). Apache Kafka's 1 MiB default would refuse a
#: message near the default 1 MiB bound once its headers are added.
RAW_HL7_RECORD_BYTES_MAX = 64 * 1024 * 1024 + 10_000 * 512 + 64 * 1024
#: rcm.events: the ceiling of RCMFLOW_EVENT_BYTES_MAX (16 MiB), its key and record overhead.
EVENT_RECORD_BYTES_MAX = 16 * 1024 * 1024 + 64 * 1024
#: The worker's and the ERP connector's records (deltas, DLQ records, account heads and
#: items, dedup records) and the other raw topics' (an X12 transaction set, a FHIR resource,
#: a payment row, each with its source totals). Apache Kafka's 1 MiB default would refuse a
#: large delta or DLQ record (account records stay small: streams/layout.py).
OUTPUT_RECORD_BYTES_MAX = 8 * 1024 * 1024


class TopicSpec(NamedTuple):
    name: str
    config: dict[str, str]
    purpose: str


def dedup_changelog(app_id: str) -> str:
    """Faust's name for the dedup table's changelog."""
    return f"{app_id}-dedup-changelog"


def record_bytes_max(topic: str) -> int:
    """The largest record ``topic`` takes (``max.message.bytes``)."""
    return {RAW_HL7: RAW_HL7_RECORD_BYTES_MAX,
            EVENTS: EVENT_RECORD_BYTES_MAX}.get(topic, OUTPUT_RECORD_BYTES_MAX)


def _sized(topic: str, config: dict[str, str]) -> dict[str, str]:
    return config | {"max.message.bytes": str(record_bytes_max(topic))}


def topic_specs(app_id: str) -> list[TopicSpec]:
    dedup = dedup_changelog(app_id)
    return [
        TopicSpec(RAW_HL7, _sized(RAW_HL7, _WEEK), "HL7 v2 messages as received"),
        TopicSpec(RAW_X12, _sized(RAW_X12, _WEEK), "X12 files as received"),
        TopicSpec(RAW_PAYMENTS, _sized(RAW_PAYMENTS, _WEEK),
                  "payment / lockbox / refund rows as received"),
        TopicSpec(RAW_FHIR, _sized(RAW_FHIR, _WEEK), "FHIR resources as received"),
        # The event log is the source of truth: `rcmflow rebuild` replays it.
        TopicSpec(EVENTS, _sized(EVENTS, _KEEP), "canonical events, keyed by account"),
        TopicSpec(POSTINGS, _sized(POSTINGS, _KEEP), "balanced posting deltas, keyed by account"),
        TopicSpec(ACCOUNTS, _sized(ACCOUNTS, _COMPACT),
                  "latest account snapshot (accounts table changelog)"),
        TopicSpec(DLQ, _sized(DLQ, _KEEP), "rejected input and exceptions, with the reason"),
        TopicSpec(POSTINGS_DLQ, _sized(POSTINGS_DLQ, _KEEP), "postings an ERP refused for good"),
        TopicSpec(DLQ_STATE, _sized(DLQ_STATE, _COMPACT),
                  "the exception work queue: each DLQ item's state and history, by dlq_id"),
        TopicSpec(ERP_OUTCOMES, _sized(ERP_OUTCOMES, _WEEK),
                  "each ERP connector's outcome of each delta, with its time, by posting id"),
        TopicSpec(dedup, _sized(dedup, _COMPACT), "dedup table changelog"),
    ]
