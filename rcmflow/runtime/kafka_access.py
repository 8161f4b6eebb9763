"""What each rcmflow component touches on Kafka, and the least-privilege ACLs that allow it.

One table for two readers: the preflight (``rcmflow/runtime/kafka_preflight.py``) checks at startup
that the principal a command runs as can do exactly this, and the docs' "Secure
connections" page (docs/operations/security.md) lists the same ACLs for the cluster's
administrators (a test checks the two agree). Found by running each command against
Apache Kafka with these ACLs only and reading the broker's denials (tests/security).

Kafka implies DESCRIBE from READ, WRITE, DELETE and ALTER, and IDEMPOTENT_WRITE on the
cluster from WRITE on any topic (KIP-679), so neither is granted separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from rcmflow.streams.topics import (
    ACCOUNTS,
    DLQ,
    DLQ_STATE,
    ERP_OUTCOMES,
    EVENTS,
    POSTINGS,
    POSTINGS_DLQ,
    RAW_FHIR,
    RAW_HL7,
    RAW_PAYMENTS,
    RAW_X12,
    dedup_changelog,
    topic_specs,
)

__all__ = [
    "Access",
    "AclBinding",
    "ResourceType",
    "PatternType",
    "Operation",
    "worker_access",
    "facade_access",
    "erp_access",
    "erp_group",
    "ingest_access",
    "mllp_access",
    "consume_access",
    "consume_group",
    "reconcile_access",
    "reader_access",
    "audit_access",
    "dlq_access",
    "refunds_access",
    "variance_access",
    "documented_components",
    "INGEST_KINDS",
]

ResourceType = Literal["TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID"]
PatternType = Literal["LITERAL", "PREFIXED"]
Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS",
                    "IDEMPOTENT_WRITE", "ALTER", "DELETE", "ALL"]

#: `rcmflow ingest KIND` -> the raw topic its source units go to (events: none).
INGEST_KINDS: dict[str, tuple[str, ...]] = {
    "hl7": (RAW_HL7,),
    "x12": (RAW_X12,),
    "payments": (RAW_PAYMENTS,),
    "fhir": (RAW_FHIR,),
    "events": (),
    # `rcmflow watch DIR`: X12 and payment files.
    "watch": (RAW_X12, RAW_PAYMENTS),
}


class AclBinding(NamedTuple):
    """One ALLOW ACL (any host) for the principal a component runs as."""

    resource_type: ResourceType
    name: str
    operation: Operation
    pattern: PatternType = "LITERAL"

    def __str__(self) -> str:
        where = self.name + ("*" if self.pattern == "PREFIXED" else "")
        return f"{self.operation} on {self.resource_type.lower().replace('_', ' ')} {where}"


@dataclass(frozen=True)
class Access:
    """What one component reads, writes and joins; ``acls()`` grants exactly that."""

    component: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    #: The consumer group it joins and commits offsets in (READ on the group).
    group: str | None = None
    #: Prefix of its transactional ids (exactly_once): WRITE on TRANSACTIONAL_ID prefixed.
    transactional_id_prefix: str | None = None
    #: Topics it creates when they are missing (CREATE on each; not needed if they exist).
    creates: tuple[str, ...] = ()
    #: Prefix of the consumer groups whose committed offsets it reads (DESCRIBE on GROUP
    #: prefixed): the work queue asks whether the worker or an ERP connector read a replay.
    describes_groups: str | None = None

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic it touches, each once, in a stable order."""
        return tuple(dict.fromkeys((*self.read, *self.write, *self.creates)))

    def acls(self, *, with_create: bool = False) -> list[AclBinding]:
        """The least-privilege ACLs; ``with_create`` adds CREATE for the topics it would
        create (a cluster whose topics an administrator made needs none)."""
        bindings = [AclBinding("TOPIC", topic, "READ") for topic in self.read]
        bindings += [AclBinding("TOPIC", topic, "WRITE") for topic in self.write]
        if with_create:
            bindings += [AclBinding("TOPIC", topic, "CREATE") for topic in self.creates]
        if self.group is not None:
            bindings.append(AclBinding("GROUP", self.group, "READ"))
        if self.transactional_id_prefix is not None:
            bindings.append(AclBinding("TRANSACTIONAL_ID", self.transactional_id_prefix,
                                       "WRITE", "PREFIXED"))
        if self.describes_groups is not None:
            bindings.append(AclBinding("GROUP", self.describes_groups, "DESCRIBE", "PREFIXED"))
        return bindings


def worker_access(app_id: str, *, exactly_once: bool = False) -> Access:
    """`rcmflow worker`: Faust's consumer group (the app id) reads rcm.events and, while
    recovering, the changelogs; the outbox writes deltas, DLQ records, dedup records and
    states (rcm.accounts is the accounts table's changelog). Faust's leader-assignor topic
    is switched off (``streams/shell/worker.py``): rcmflow elects no leader."""
    changelogs = (ACCOUNTS, dedup_changelog(app_id))
    own = {EVENTS, POSTINGS, DLQ, *changelogs}
    return Access(
        component="worker",
        read=(EVENTS, *changelogs),
        write=(POSTINGS, DLQ, *changelogs),
        group=app_id,
        # The outbox's transactional ids are "<app id>-events-<partition>".
        transactional_id_prefix=f"{app_id}-" if exactly_once else None,
        creates=tuple(spec.name for spec in topic_specs(app_id) if spec.name in own),
    )


def facade_access() -> Access:
    """`rcmflow facade`: reads rcm.accounts with no group (it moves nobody's partitions);
    writes a resource it cannot build to rcm.dlq."""
    return Access(component="facade", read=(ACCOUNTS,), write=(DLQ,))


def ops_site_access(app_id: str) -> Access:
    """`rcmflow ops`: reads what its pages show (group-less) and acts on the work queue as
    `rcmflow dlq assign, replay, resolve` does."""
    queue = dlq_access(app_id, changes=True)
    return Access(component="ops", read=(ACCOUNTS, *queue.read),
                  write=tuple(dict.fromkeys((*queue.write, EVENTS))),
                  creates=queue.creates, describes_groups=queue.describes_groups)


def erp_group(app_id: str, adapter: str) -> str:
    """The ERP connector's own consumer group: one per adapter, apart from the workers'."""
    return f"{app_id}-erp-{adapter}"


def erp_access(app_id: str, adapter: str) -> Access:
    """`rcmflow erp ADAPTER`: reads rcm.postings in its group, writes refused deltas and
    each delta's outcome."""
    return Access(component=f"erp {adapter}", read=(POSTINGS,),
                  write=(POSTINGS_DLQ, ERP_OUTCOMES), creates=(ERP_OUTCOMES,),
                  group=erp_group(app_id, adapter))


def ingest_access(kind: str) -> Access:
    """`rcmflow ingest KIND` / `rcmflow watch`: raw records, their events, refusals."""
    raw = INGEST_KINDS[kind]
    return Access(component=f"ingest {kind}" if kind != "watch" else "watch",
                  write=(*raw, EVENTS, DLQ))


def consume_group(app_id: str, fmt: str, topic: str) -> str:
    """`rcmflow consume`'s default group: one per format and source topic."""
    return f"{app_id}-consume-{fmt}-{topic}"


def consume_access(fmt: str, topic: str, group: str) -> Access:
    """`rcmflow consume FORMAT --topic T`: reads the source topic in its group, writes what
    `ingest FORMAT` writes."""
    return Access(component=f"consume {fmt}", read=(topic,),
                  write=(*INGEST_KINDS[fmt], EVENTS, DLQ), group=group)


def mllp_access() -> Access:
    """`rcmflow mllp`: as `ingest hl7`."""
    return Access(component="mllp", write=(RAW_HL7, EVENTS, DLQ))


def reconcile_access() -> Access:
    """`rcmflow reconcile`: reads the source totals, events, postings, snapshots and the
    posting DLQ (group-less consumers, nothing written)."""
    return Access(component="reconcile",
                  read=(RAW_HL7, RAW_X12, RAW_PAYMENTS, RAW_FHIR, EVENTS, POSTINGS, ACCOUNTS,
                        POSTINGS_DLQ))


def reader_access(component: str, *topics: str) -> Access:
    """Operator commands (`accounts`, `dlq`, `digest`, `rebuild`, `aging`) read their topics,
    group-less."""
    return Access(component=component, read=topics)


def audit_access(*, follow: bool = False) -> Access:
    """`rcmflow audit`: reads the heads and the deltas, group-less; ``--follow`` also writes
    one rcm.dlq record per mismatching account, and reads both DLQs and the work queue's
    states for its metrics (open items)."""
    return Access(component="audit",
                  read=(ACCOUNTS, POSTINGS,
                        *((DLQ, POSTINGS_DLQ, DLQ_STATE) if follow else ())),
                  write=(DLQ,) if follow else ())


def dlq_access(app_id: str, *, changes: bool) -> Access:
    """`rcmflow dlq`: reads both DLQ topics, the work queue's states and the deltas (what a
    replay produced), and the committed offsets of the worker's and the ERP connectors'
    groups (whether they read a replay yet: groups named after the app id). ``changes``
    (`assign`, `replay`, `resolve`): also writes states and re-sends events and deltas."""
    read = (DLQ, POSTINGS_DLQ, DLQ_STATE, POSTINGS)
    if not changes:
        return Access(component="dlq", read=read, describes_groups=app_id)
    return Access(component="dlq", read=read, write=(DLQ_STATE, EVENTS, POSTINGS),
                  creates=(DLQ_STATE,), describes_groups=app_id)


def refunds_access(*, changes: bool) -> Access:
    """`rcmflow refunds`: reads the requests (rcm.accounts); ``changes`` (`request`,
    `approve`, `reject`): also sends the event and reads rcm.dlq for the worker's refusal."""
    if not changes:
        return Access(component="refunds", read=(ACCOUNTS,))
    return Access(component="refunds", read=(ACCOUNTS, DLQ), write=(EVENTS,))


def variance_access() -> Access:
    """`rcmflow variance list`: reads the contract records (rcm.dlq) and their work-queue
    states (rcm.dlq.state)."""
    return Access(component="variance", read=(DLQ, DLQ_STATE))


def documented_components(app_id: str = "rcmflow") -> dict[str, Access]:
    """The rows of the docs' ACL table (docs/operations/security.md), by command."""
    return {
        "rcmflow worker, rcmflow upgrade": worker_access(app_id),
        "rcmflow worker (exactly_once)": worker_access(app_id, exactly_once=True),
        "rcmflow erp csv (any adapter: its own group)": erp_access(app_id, "csv"),
        "rcmflow facade": facade_access(),
        "rcmflow mllp, rcmflow ingest hl7": mllp_access(),
        "rcmflow ingest x12": ingest_access("x12"),
        "rcmflow ingest payments": ingest_access("payments"),
        "rcmflow ingest fhir": ingest_access("fhir"),
        "rcmflow ingest events": ingest_access("events"),
        "rcmflow watch": ingest_access("watch"),
        "rcmflow consume hl7 --topic ehr.dft (any format: its raw topic as ingest's)":
            consume_access("hl7", "ehr.dft", consume_group(app_id, "hl7", "ehr.dft")),
        "rcmflow reconcile": reconcile_access(),
        "rcmflow audit": audit_access(),
        "rcmflow audit --follow": audit_access(follow=True),
        "rcmflow digest": reader_access("digest", ACCOUNTS),
        "rcmflow rebuild": reader_access("rebuild", EVENTS),
        "rcmflow rebuild --compare": reader_access("rebuild", EVENTS, ACCOUNTS),
        "rcmflow accounts list, show": reader_access("accounts", ACCOUNTS),
        "rcmflow accounts history": reader_access("accounts history", POSTINGS),
        "rcmflow dlq list, show": dlq_access(app_id, changes=False),
        "rcmflow dlq assign, replay, resolve": dlq_access(app_id, changes=True),
        "rcmflow trace": reader_access("trace", RAW_HL7, RAW_X12, RAW_PAYMENTS, RAW_FHIR,
                                       EVENTS, POSTINGS, DLQ, POSTINGS_DLQ, ERP_OUTCOMES),
        "rcmflow lag (and DESCRIBE on the groups it reports)":
            reader_access("lag", EVENTS, POSTINGS, ACCOUNTS),
        "rcmflow aging": reader_access("aging", ACCOUNTS, POSTINGS),
        "rcmflow refunds list, show": refunds_access(changes=False),
        "rcmflow refunds request, approve, reject": refunds_access(changes=True),
        "rcmflow variance list": variance_access(),
        "rcmflow denials list, show": reader_access("denials", ACCOUNTS),
        "rcmflow ops": ops_site_access(app_id),
    }
