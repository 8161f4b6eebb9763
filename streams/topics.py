"""The rcm.* topics (ARCHITECTURE.md) with every setting spelled out at creation.

Tansu reports only the configs a topic was created with, so nothing is left to broker defaults.
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
    "TopicSpec",
    "topic_specs",
    "dedup_changelog",
]

RAW_HL7 = "rcm.raw.hl7"
RAW_X12 = "rcm.raw.x12"
RAW_PAYMENTS = "rcm.raw.payments"
RAW_FHIR = "rcm.raw.fhir"
EVENTS = "rcm.events"
POSTINGS = "rcm.postings"
ACCOUNTS = "rcm.accounts"  # compacted snapshots; also the accounts table's changelog
DLQ = "rcm.dlq"
POSTINGS_DLQ = "rcm.postings.dlq"

_KEEP = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
_COMPACT = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
_WEEK = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000),
         "retention.bytes": "-1"}
#: The largest rcm.raw.hl7 record the settings can allow: a 64 MiB message (the ceiling of
#: RCMFLOW_MLLP_MESSAGE_BYTES_MAX) with 10,000 FT1s' reconcile headers
#: (connectors/hl7/intake.raw_record_bytes_max). Apache Kafka's 1 MiB default would refuse a
#: message near the default 1 MiB bound once its headers are added.
RAW_HL7_RECORD_BYTES_MAX = 64 * 1024 * 1024 + 10_000 * 512 + 64 * 1024


class TopicSpec(NamedTuple):
    name: str
    config: dict[str, str]
    purpose: str


def dedup_changelog(app_id: str) -> str:
    """Faust's name for the dedup table's changelog."""
    return f"{app_id}-dedup-changelog"


def topic_specs(app_id: str) -> list[TopicSpec]:
    return [
        TopicSpec(RAW_HL7, _WEEK | {"max.message.bytes": str(RAW_HL7_RECORD_BYTES_MAX)},
                  "HL7 v2 messages as received"),
        TopicSpec(RAW_X12, _WEEK, "X12 files as received"),
        TopicSpec(RAW_PAYMENTS, _WEEK, "payment / lockbox / refund rows as received"),
        TopicSpec(RAW_FHIR, _WEEK, "FHIR resources as received"),
        # The event log is the source of truth: `rcmflow rebuild` replays it.
        TopicSpec(EVENTS, _KEEP, "canonical events, keyed by account"),
        TopicSpec(POSTINGS, _KEEP, "balanced posting deltas, keyed by account"),
        TopicSpec(ACCOUNTS, _COMPACT, "latest account snapshot (accounts table changelog)"),
        TopicSpec(DLQ, _KEEP, "rejected input and exceptions, with the reason"),
        TopicSpec(POSTINGS_DLQ, _KEEP, "postings an ERP refused for good"),
        TopicSpec(dedup_changelog(app_id), _COMPACT, "dedup table changelog"),
    ]
