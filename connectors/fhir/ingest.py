"""A FHIR file -> events for the resources that move money, rcm.dlq records for the rest.

A file is one resource, a Bundle (batch / transaction / collection: every entry on its own),
or NDJSON (one resource per line). ``process_fhir`` is pure; ``ingest_fhir_files`` publishes
with acks=all. A bad entry or line goes to rcm.dlq with its place (``entry[3]``, ``line 7``)
and the reason; the others go through. Every resource read is kept as received on
rcm.raw.fhir with what became of it; an applied (or partly applied) one also with what its
applied parts say in money and the events they made (``source_totals``, connectors/totals.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from rich.console import Console
from rich.markup import escape

from rcmflow.connectors.files import Record, WholeFile, ingest_files, say
from rcmflow.connectors.totals import SourceTotals
from rcmflow.kafka_connection import KafkaConnection
from rcmflow.settings import Settings
from rcmflow.streams.date_window import DateWindow
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.topics import DLQ, EVENTS, RAW_FHIR

from .mapping import (
    FhirEvent,
    Mapped,
    MappingOptions,
    Problem,
    known_type,
    map_resource,
    resource_key,
    source_amount,
)
from .values import code_text, dumps, read_json

__all__ = ["FhirLimits", "FhirOutcome", "Rejected", "process_fhir", "ingest_fhir_files",
           "limits_from", "BUNDLE_TYPES"]

#: Bundle types whose entries are resources on their own. A searchset / history / message /
#: document is a view or a unit of another kind: refused whole, with the reason.
BUNDLE_TYPES = ("batch", "transaction", "collection")
BUNDLE_TYPES_ALL = ("document", "message", "transaction", "transaction-response", "batch",
                    "batch-response", "history", "searchset", "collection")
_NDJSON_SUFFIXES = (".ndjson", ".jsonl")
#: Reasons printed per file; all of them are in rcm.dlq.
SHOWN_MAX = 10


@dataclass(frozen=True)
class FhirLimits:
    resources_max: int = 100_000
    resource_bytes_max: int = 1024 * 1024
    dlq_payload_bytes_max: int = 512 * 1024
    options: MappingOptions = MappingOptions()


def limits_from(settings: Settings, currency: str) -> FhirLimits:
    return FhirLimits(
        resources_max=settings.fhir_resources_max,
        resource_bytes_max=settings.fhir_resource_bytes_max,
        dlq_payload_bytes_max=settings.dlq_payload_bytes_max,
        options=MappingOptions(currencies=frozenset({currency}),
                               account_systems=tuple(settings.fhir_account_systems),
                               date_window=DateWindow.from_settings(settings)),
    )


@dataclass(frozen=True)
class Unit:
    """One resource as found in the file."""

    location: str  # "resource", "entry[3]", "line 7"
    index: int  # entry index, line number, 0: the DLQ origin offset
    text: str  # as received (a Bundle entry's resource written out exactly)
    doc: Any
    full_url: str | None = None


@dataclass(frozen=True)
class Rejected:
    location: str
    index: int
    code: str
    detail: str
    payload: str | bytes  # bytes: input that is not text (kept as received)
    severity: Literal["error", "warning"] = "error"
    account: str | None = None
    resource_type: str | None = None
    part: str = ""  # a part of the resource (detail[1]); "" for all of it


@dataclass
class FhirOutcome:
    origin: str
    resources: int = 0
    events: list[tuple[Unit, FhirEvent]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    notes: list[tuple[Unit, str]] = field(default_factory=list)
    raw: list[tuple[Unit, str]] = field(default_factory=list)  # (unit, status)
    totals: dict[str, SourceTotals] = field(default_factory=dict)  # by unit location

    def ok(self) -> bool:
        return not self.rejected

    def reason_text(self) -> str:
        lines = [f"{self.resources} resources: {len(self.events)} events, "
                 f"{len(self.rejected)} to {DLQ}, {len(self.notes)} notices"]
        lines += [f"{r.location}: {r.code}: {r.detail}" for r in self.rejected]
        return "\n".join(lines) + "\n"

    def records(self, payload_bytes_max: int = 512 * 1024) -> list[Record]:
        out: list[Record] = []
        for unit, status in self.raw:
            key = _raw_key(unit, self.origin)
            totals = self.totals.get(unit.location)
            out.append((RAW_FHIR, key.encode(), orjson.dumps(
                {"origin": self.origin, "location": unit.location, "status": status,
                 "resource": unit.text,
                 **({"source_totals": totals.to_json()} if totals else {})})))
        for _, event in self.events:
            out.append((EVENTS, event.account.encode(), event.model_dump_json().encode()))
        received = datetime.now(UTC)
        for n, r in enumerate(self.rejected):
            payload = r.payload if isinstance(r.payload, bytes) else r.payload.encode()
            cut = len(payload) > payload_bytes_max
            context: dict[str, Any] = {"location": r.location}
            if r.part:
                context["part"] = r.part
            if r.resource_type:
                context["resourceType"] = r.resource_type[:40]
            if r.account:
                context["account"] = r.account
            if cut:
                context["payload_cut"] = {"bytes": len(payload), "kept": payload_bytes_max}
            record = dlq_record(
                stage="decode", reason_code=r.code, severity=r.severity,
                reason=f"{self.origin.removeprefix('file:')} {r.location}"
                       f"{' ' + r.part if r.part else ''}: {r.detail}",
                origin=Origin(topic=self.origin, partition=0, offset=r.index, key=None),
                payload=payload[:payload_bytes_max] if cut else payload, received_at=received,
                context=context, discriminator=f"{r.location}|{r.part}|{n}")
            out.append((DLQ, None, record.model_dump_json().encode()))
        return out


def _raw_key(unit: Unit, origin: str) -> str:
    if isinstance(unit.doc, dict):
        key = resource_key(unit.doc, unit.full_url)
        if key:
            return key
    return f"{origin}:{unit.location}"


def process_fhir(data: bytes, *, name: str, origin: str,
                 limits: FhirLimits = FhirLimits()) -> FhirOutcome:
    """Every resource of a file, as events, notices or rejections (never raises on input)."""
    outcome = FhirOutcome(origin=origin)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # The bytes as received (base64 in the DLQ record), cut at the DLQ payload bound.
        outcome.rejected.append(Rejected("file", 0, "fhir_not_utf8", f"file: byte {exc.start} "
                                         "is not UTF-8 (FHIR JSON is UTF-8)", data))
        return outcome
    units = _units(text, name, limits, outcome)
    if not units and not outcome.rejected:
        outcome.rejected.append(Rejected("file", 0, "fhir_empty", "file: no resource in it "
                                         "(empty, blank lines or a Bundle without entries)",
                                         text[:4096], severity="warning"))
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for unit in units:
        outcome.resources += 1
        _one(unit, limits, outcome, seen)
    assert outcome.resources <= limits.resources_max, "the readers stop at resources_max"
    return outcome


def _past_max(read: int, location: str, index: int, limits: FhirLimits,
              outcome: FhirOutcome) -> bool:
    """True (and one DLQ record saying where reading stopped) once ``read`` entries or lines
    were taken: the bound counts refused ones too, so a file of junk stays bounded."""
    if read < limits.resources_max:
        return False
    outcome.rejected.append(Rejected(
        location, index, "fhir_resources_max", f"resources from {location} on were not read "
        f"(more than {limits.resources_max}, RCMFLOW_FHIR_RESOURCES_MAX): split the file", ""))
    return True


def _one(unit: Unit, limits: FhirLimits, outcome: FhirOutcome,
         seen: dict[tuple[str, str], tuple[str, str]]) -> None:
    kind = _kind(unit.doc)

    def reject(p: Problem) -> None:
        outcome.rejected.append(Rejected(unit.location, unit.index, p.code, p.detail, unit.text,
                                         p.severity, p.account, kind, p.where))

    result = map_resource(unit.doc, full_url=unit.full_url, options=limits.options)
    if isinstance(result, Problem):
        reject(result)
        outcome.raw.append((unit, "rejected"))
        return
    accepted = _dedup(unit, result, seen, reject)
    for problem in result.problems:
        reject(problem)
    outcome.events.extend((unit, event) for event in accepted)
    if accepted:
        outcome.totals[unit.location] = _totals(unit, result, accepted, limits)
    if result.note:
        outcome.notes.append((unit, result.note))
    whole = not result.problems and len(accepted) == len(result.events)
    status = ("notice" if result.note else "applied" if whole and accepted
              else "partly" if accepted else "rejected")
    outcome.raw.append((unit, status))


def _totals(unit: Unit, result: Mapped, accepted: list[FhirEvent],
            limits: FhirLimits) -> SourceTotals:
    """What the accepted parts of a resource say in money, read from the resource, each
    attributed to the event its part (``Mapped.origins``) became."""
    origin_of = {id(e): o for e, o in zip(result.events, result.origins, strict=True)}
    totals = SourceTotals(event_ids=[(e.account, e.event_id) for e in accepted])
    for event in accepted:
        totals.add(*source_amount(unit.doc, origin_of[id(event)], limits.options),
                   event_id=event.event_id)
    return totals


def _dedup(unit: Unit, result: Mapped, seen: dict[tuple[str, str], tuple[str, str]],
           reject: Callable[[Problem], None]) -> list[FhirEvent]:
    """The same event twice in one file is refused on the second place (as payment rows)."""
    kept: list[FhirEvent] = []
    for event in result.events:
        key = (event.account, event.event_id)
        body = event.model_dump_json()
        if key in seen:
            first, first_body = seen[key]
            same = "the same content" if first_body == body else "other content"
            reject(Problem("fhir_duplicate", f"the same resource (same identifier / id) for "
                           f"account {event.account} is already at {first} ({same})",
                           account=event.account))
            continue
        seen[key] = (unit.location, body)
        kept.append(event)
    return kept


def _units(text: str, name: str, limits: FhirLimits, outcome: FhirOutcome) -> list[Unit]:
    if name.lower().endswith(_NDJSON_SUFFIXES):
        return _ndjson(text, limits, outcome)
    try:
        doc = read_json(text)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("Extra data") and text.lstrip().startswith("{"):
            return _ndjson(text, limits, outcome)  # NDJSON under another name
        outcome.rejected.append(Rejected("file", 0, "fhir_invalid_json",
                                         f"file is not JSON: {message[:120]}", text))
        return []
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        return _bundle(doc, text, limits, outcome)
    if len(text.encode()) > limits.resource_bytes_max:
        outcome.resources += 1
        outcome.rejected.append(Rejected("resource", 0, "fhir_too_large", _too_large(
            len(text.encode()), limits), text[:4096], resource_type=_kind(doc)))
        return []
    return [Unit("resource", 0, text, doc, None)]


def _kind(doc: Any) -> str | None:
    """The resourceType when it is a FHIR type's name, else None (never echo free text)."""
    kind = doc.get("resourceType") if isinstance(doc, dict) else None
    return kind if known_type(kind) else None


def _too_large(size: int, limits: FhirLimits) -> str:
    return (f"resource is {size} bytes, more than {limits.resource_bytes_max} "
            "(RCMFLOW_FHIR_RESOURCE_BYTES_MAX): not read")


def _ndjson(text: str, limits: FhirLimits, outcome: FhirOutcome) -> list[Unit]:
    units: list[Unit] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        if _past_max(len(units) + outcome.resources, where, number, limits, outcome):
            break
        size = len(line.encode())
        if size > limits.resource_bytes_max:
            outcome.resources += 1
            outcome.rejected.append(Rejected(where, number, "fhir_too_large",
                                             _too_large(size, limits), line[:4096]))
            continue
        try:
            doc = read_json(line)
        except ValueError as exc:
            outcome.resources += 1
            outcome.rejected.append(Rejected(where, number, "fhir_invalid_json",
                                             f"line {number} is not JSON: {str(exc)[:120]}",
                                             line))
            continue
        units.append(Unit(where, number, line, doc, None))
    return units


def _bundle(doc: dict[str, Any], text: str, limits: FhirLimits,
            outcome: FhirOutcome) -> list[Unit]:
    kind = doc.get("type")
    entries = doc.get("entry", [])
    if kind not in BUNDLE_TYPES or not isinstance(entries, list):
        what = (f"Bundle type {code_text(kind, BUNDLE_TYPES_ALL)} is not one of "
                f"{', '.join(BUNDLE_TYPES)}"
                if kind not in BUNDLE_TYPES else "Bundle entry is not a list")
        outcome.rejected.append(Rejected("file", 0, "fhir_bundle", f"{what}: nothing read",
                                         text, resource_type="Bundle"))
        return []
    units: list[Unit] = []
    for n, entry in enumerate(entries):
        where = f"entry[{n}]"
        if _past_max(len(units) + outcome.resources, where, n, limits, outcome):
            break
        resource = entry.get("resource") if isinstance(entry, dict) else None
        method = ((entry.get("request") or {}).get("method")
                  if isinstance(entry, dict) and isinstance(entry.get("request"), dict) else None)
        if not isinstance(resource, dict) or method == "DELETE":
            outcome.resources += 1
            why = ("a DELETE: rcmflow reverses nothing by deletion (send the ChargeItem with "
                   "status entered-in-error)" if method == "DELETE" else "no resource")
            outcome.rejected.append(Rejected(where, n, "fhir_bundle_entry", f"{where} is {why}",
                                             dumps(entry), resource_type=_kind(resource)))
            continue
        body = dumps(resource)
        if len(body.encode()) > limits.resource_bytes_max:
            outcome.resources += 1
            outcome.rejected.append(Rejected(where, n, "fhir_too_large",
                                             _too_large(len(body.encode()), limits),
                                             body[:4096], resource_type=_kind(resource)))
            continue
        full_url = entry.get("fullUrl")
        units.append(Unit(where, n, body, resource,
                          full_url if isinstance(full_url, str) and full_url else None))
    return units


def ingest_fhir_files(settings: Settings, kafka: KafkaConnection, files: list[Path], *,
                      currency: str, console: Console) -> int:
    """Publish every file; the exit code says whether anything went to rcm.dlq."""
    limits = limits_from(settings, currency)
    return ingest_files(
        files, kafka=kafka, console=console, bytes_max=settings.fhir_file_bytes_max,
        bytes_setting="RCMFLOW_FHIR_FILE_BYTES_MAX",
        open_file=lambda path: WholeFile(
            path, lambda p: process_fhir(p.read_bytes(), name=p.name, origin=f"file:{p}",
                                         limits=limits),
            lambda outcome: outcome.records(limits.dlq_payload_bytes_max)),
        report=lambda path, whole, console: report_fhir(path, whole.outcome, console))


def report_fhir(path: Path, outcome: FhirOutcome, console: Console) -> None:
    """Counts and reasons: places, resource types, codes, amounts and account numbers only."""
    accounts = sorted({e.account for _, e in outcome.events})
    shown = ", ".join(accounts[:5]) + (f" (+{len(accounts) - 5})" if len(accounts) > 5 else "")
    say(console, f"{escape(str(path))}: {outcome.resources} resources, "
                  f"{len(outcome.events)} events to {EVENTS}"
                  + (f" (accounts {escape(shown)})" if accounts else "")
                  + (f", {len(outcome.notes)} notices" if outcome.notes else "")
                  + (f", [yellow]{len(outcome.rejected)} to {DLQ}[/yellow]"
                     if outcome.rejected else ""))
    for r in outcome.rejected[:SHOWN_MAX]:
        part = f" {r.part}" if r.part else ""
        say(console, escape(f"  {r.location}{part} {r.resource_type or ''}: {r.code}: "
                             f"{r.detail}"))
    if len(outcome.rejected) > SHOWN_MAX:
        say(console, f"  ... {len(outcome.rejected) - SHOWN_MAX} more (rcmflow dlq list)")
