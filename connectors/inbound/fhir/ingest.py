"""A FHIR file -> events for the resources that move money, rcm.dlq records for the rest.

A file is one resource, a Bundle (batch / transaction / collection: every entry on its own),
or NDJSON (one resource per line). ``fhir_steps`` reads a file as a stream and yields one step
per resource; ``FhirIngest`` publishes them as they are read (`rcmflow ingest fhir`),
``process_fhir`` collects them (a record consumed from Kafka, tests). A bad entry or line goes
to rcm.dlq with its place (``entry[3]``, ``line 7``, ``entry[3] detail[1]``) and the reason;
the others go through. Each refusal is a core ``Rejection`` (streams/rejections.py), its
problem placed in the file, and becomes its record through ``streams.dlq.dlq_record``.
Every resource read is kept as received on rcm.raw.fhir with what became of it; an applied (or
partly applied) one also with what its applied parts say in money and the events they made
(``source_totals``, connectors/inbound/totals.py).

Memory is bounded by one resource, not the file: a file up to ``stream_from_bytes`` (one
resource's bound, RCMFLOW_FHIR_RESOURCE_BYTES_MAX) is parsed whole; a larger one must be a
Bundle or NDJSON and is read entry by entry (ijson) or line by line, an entry being built only
up to that bound. What stays per file: the duplicate check (``SeenKeys``, ~200 bytes per
event), counts, the first ``REASONS_KEPT`` reasons and one tally per warning kind.

Warnings (``WARNING_CODES``: resources that carry no money for rcmflow) are aggregated: one
rcm.dlq record per kind per file with the count and the first places (streams/dlq.py
``WarningTally``). Errors stay one record each.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeAlias

import ijson  # type: ignore[import-untyped]
import orjson
from rich.console import Console
from rich.markup import escape

from rcmflow.connectors.inbound.fhir.mapping import (
    NO_MONEY,
    FhirEvent,
    Mapped,
    MappingOptions,
    Refused,
    known_type,
    map_resource,
    refused,
    resource_key,
    source_amount,
)
from rcmflow.connectors.inbound.fhir.values import code_text, dumps, read_json
from rcmflow.connectors.inbound.files import ReadPosition, Record, ingest_files, say
from rcmflow.connectors.inbound.seen import SeenKeys
from rcmflow.connectors.inbound.totals import SourceTotals
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.settings import Settings, default_of
from rcmflow.streams.date_window import DateWindow
from rcmflow.streams.dlq import Origin, WarningTally, dlq_record
from rcmflow.streams.rejections import Problem, Rejection, Severity
from rcmflow.streams.topics import DLQ, EVENTS, RAW_FHIR

__all__ = ["FhirLimits", "FhirOutcome", "FhirIngest", "Rejected", "Read", "process_fhir",
           "fhir_steps", "ingest_fhir_files", "limits_from", "BUNDLE_TYPES", "WARNING_CODES"]

#: Bundle types whose entries are resources on their own. A searchset / history / message /
#: document is a view or a unit of another kind: refused whole, with the reason.
BUNDLE_TYPES = ("batch", "transaction", "collection")
BUNDLE_TYPES_ALL = ("document", "message", "transaction", "transaction-response", "batch",
                    "batch-response", "history", "searchset", "collection")
_NDJSON_SUFFIXES = (".ndjson", ".jsonl")
#: Reasons printed per file; all of them are in rcm.dlq.
SHOWN_MAX = 10
#: Reasons kept for the report of a streamed file.
REASONS_KEPT = 100
#: The reason codes that are warnings (severity "warning" in connectors/inbound/fhir/mapping.py and
#: here): the resource carries no money for rcmflow, nothing is to be worked. One rcm.dlq
#: record per kind per file. Every other code is an error: one record per resource or part.
WARNING_CODES = frozenset({
    "fhir_unsupported_resource",  # a FHIR type rcmflow does not take (Observation, Patient...)
    "fhir_not_billable",  # a ChargeItem planned / aborted / not-billable
    "fhir_not_complete",  # a PaymentReconciliation / eligibility response not complete
    "fhir_not_active",  # a PaymentNotice or CoverageEligibilityResponse not active
    "fhir_task_not_completed",  # a Task not done yet (a workflow step counts once done)
    "fhir_empty",  # a file with no resource in it
})


@dataclass(frozen=True)
class FhirLimits:
    """The bounds of one FHIR file; the defaults are the settings' (``limits_from``)."""

    resources_max: int = default_of("fhir_resources_max")
    resource_bytes_max: int = default_of("fhir_resource_bytes_max")
    dlq_payload_bytes_max: int = default_of("dlq_payload_bytes_max")
    options: MappingOptions = MappingOptions()
    #: Files larger than this are read as a stream (None: ``resource_bytes_max``).
    stream_from_bytes: int | None = None


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
    """A resource, a part of one, or a stretch of the file refused: the core ``Rejection``,
    its problem placed in the file (``entry[3]``, ``line 7 detail[1]``, ``file``), and what
    its DLQ record keeps beside it."""

    location: str  # the unit it is in: "resource", "entry[3]", "line 7", "file"
    index: int  # entry index, line number, 0: the DLQ origin offset
    rejection: Rejection
    payload: str | bytes  # bytes: input that is not text (kept as received)
    account: str | None = None
    resource_type: str | None = None

    @property
    def place(self) -> str:
        return self.rejection.problems[0].place

    @property
    def part(self) -> str:
        """The part of the resource refused (``detail[1]``); "" for all of it."""
        return self.place.removeprefix(self.location).lstrip()


def _stops(step: Unit | Rejected) -> bool:
    """Reading stopped there (``resources_max``): nothing after it is read."""
    return isinstance(step, Rejected) and step.rejection.reason_code == "fhir_resources_max"


def _rejected(location: str, index: int, code: str, detail: str, payload: str | bytes, *,
              severity: Severity = "error", resource_type: str | None = None) -> Rejected:
    """A refusal of the unit at ``location`` as a whole."""
    problem = Problem(reason_code=code, detail=detail, place=location)
    return Rejected(location, index, Rejection.of("decode", [problem], severity), payload,
                    resource_type=resource_type)


def _placed(rejection: Rejection, location: str) -> Rejection:
    """A mapping's rejection placed in the file: 'detail[1]' in entry[3] is 'entry[3]
    detail[1]', the whole resource is 'entry[3]'."""
    return rejection.model_copy(update={"problems": tuple(
        p.model_copy(update={"place": f"{location} {p.place}".rstrip()})
        for p in rejection.problems)})


@dataclass
class Read:
    """What became of one resource read (its raw record's status, events, refused parts)."""

    unit: Unit
    status: str
    events: list[FhirEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    note: str | None = None
    totals: SourceTotals | None = None


Step: TypeAlias = Read | Rejected


@dataclass
class Counter:
    """Resources read so far (refused ones too): the bound ``resources_max`` counts these."""

    resources: int = 0


def fhir_steps(stream: BinaryIO, *, name: str, size: int, limits: FhirLimits,
               counter: Counter | None = None) -> Iterator[Step]:
    """Every resource of a file as it is read: a ``Read`` per resource, a ``Rejected`` for
    what could not be read as one (never raises on input)."""
    counter = counter or Counter()
    seen = SeenKeys()
    any_step = False
    for step in _units(stream, name, size, limits, counter):
        any_step = True
        if isinstance(step, Unit):
            counter.resources += 1
            yield _one(step, limits, seen)
        else:
            yield step
    if not any_step:
        stream.seek(0)
        yield _rejected("file", 0, "fhir_empty", "file: no resource in it (empty, blank lines "
                        "or a Bundle without entries)", stream.read(4096).decode(errors="replace"),
                        severity="warning")
    assert counter.resources <= limits.resources_max, "the readers stop at resources_max"


def _units(stream: BinaryIO, name: str, size: int, limits: FhirLimits,
           counter: Counter) -> Iterator[Unit | Rejected]:
    if name.lower().endswith(_NDJSON_SUFFIXES):
        yield from _ndjson(stream, limits, counter)
        return
    stream_from = (limits.resource_bytes_max if limits.stream_from_bytes is None
                   else limits.stream_from_bytes)
    if size > stream_from:
        yield from _large(stream, size, limits, counter)
        return
    data = stream.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # The bytes as received (base64 in the DLQ record), cut at the DLQ payload bound.
        yield _rejected("file", 0, "fhir_not_utf8", f"file: byte {exc.start} is not UTF-8 "
                        "(FHIR JSON is UTF-8)", data)
        return
    try:
        doc = read_json(text)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("Extra data") and text.lstrip().startswith("{"):
            yield from _ndjson(io.BytesIO(data), limits, counter)  # NDJSON under another name
            return
        yield _rejected("file", 0, "fhir_invalid_json", f"file is not JSON: {message[:120]}",
                        text)
        return
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        kind, entries = doc.get("type"), doc.get("entry", [])
        if kind not in BUNDLE_TYPES or not isinstance(entries, list):
            yield _bad_bundle(kind, text)
            return
        for n, entry in enumerate(entries):
            step = _entry(n, entry, limits, counter)
            yield step
            if _stops(step):
                return
        return
    if len(text.encode()) > limits.resource_bytes_max:
        counter.resources += 1
        yield _rejected("resource", 0, "fhir_too_large", _too_large(len(text.encode()), limits),
                        text[:4096], resource_type=_kind(doc))
        return
    yield Unit("resource", 0, text, doc, None)


def _bad_bundle(kind: Any, payload: str | bytes) -> Rejected:
    what = (f"Bundle type {code_text(kind, BUNDLE_TYPES_ALL)} is not one of "
            f"{', '.join(BUNDLE_TYPES)}" if kind not in BUNDLE_TYPES
            else "Bundle entry is not a list")
    return _rejected("file", 0, "fhir_bundle", f"{what}: nothing read", payload,
                     resource_type="Bundle")


def _past_max(location: str, index: int, limits: FhirLimits, counter: Counter) -> Rejected | None:
    """One DLQ record saying where reading stopped once ``resources_max`` entries or lines
    were taken: the bound counts refused ones too, so a file of junk stays bounded."""
    if counter.resources < limits.resources_max:
        return None
    return _rejected(location, index, "fhir_resources_max", f"resources from {location} on "
                     f"were not read (more than {limits.resources_max}, "
                     "RCMFLOW_FHIR_RESOURCES_MAX): split the file", "")


def _entry(n: int, entry: Any, limits: FhirLimits, counter: Counter) -> Unit | Rejected:
    """One Bundle entry, parsed: a unit, or why it is not one."""
    where = f"entry[{n}]"
    stop = _past_max(where, n, limits, counter)
    if stop is not None:
        return stop
    resource = entry.get("resource") if isinstance(entry, dict) else None
    method = ((entry.get("request") or {}).get("method")
              if isinstance(entry, dict) and isinstance(entry.get("request"), dict) else None)
    if not isinstance(resource, dict) or method == "DELETE":
        counter.resources += 1
        why = ("a DELETE: rcmflow reverses nothing by deletion (send the ChargeItem with "
               "status entered-in-error)" if method == "DELETE" else "no resource")
        return _rejected(where, n, "fhir_bundle_entry", f"{where} is {why}", dumps(entry),
                         resource_type=_kind(resource))
    body = dumps(resource)
    if len(body.encode()) > limits.resource_bytes_max:
        counter.resources += 1
        return _rejected(where, n, "fhir_too_large", _too_large(len(body.encode()), limits),
                         body[:4096], resource_type=_kind(resource))
    full_url = entry.get("fullUrl")
    return Unit(where, n, body, resource,
                full_url if isinstance(full_url, str) and full_url else None)


# -- large files: a Bundle entry by entry, NDJSON line by line ---------------------------------

@dataclass
class _Head:
    """What the start of a large JSON file says (read without building anything)."""

    kind: Literal["bundle", "resource", "ndjson", "other", "invalid", "empty"]
    bundle_type: Any = None
    entry_is_list: bool = True
    resource_type: Any = None
    error: str = ""


def _skip_bom(stream: BinaryIO) -> int:
    stream.seek(0)
    start = 3 if stream.read(3) == b"\xef\xbb\xbf" else 0
    stream.seek(start)
    return start


def _head(stream: BinaryIO) -> _Head:
    """The top-level resourceType, type and whether ``entry`` is a list: stops at ``entry``
    once both are known (the usual order), else reads past everything (building nothing)."""
    _skip_bom(stream)
    depth, key, started, ended, is_map = 0, None, False, False, False
    top: dict[str, Any] = {}
    entry_is_list: bool | None = None
    try:
        for _prefix, event, value in ijson.parse(stream, multiple_values=True):
            if ended:
                return _Head("ndjson")  # a second top-level value: one resource per line
            if not started:
                started, is_map = True, event == "start_map"
            if depth == 1 and event == "map_key":
                key = value
            elif depth == 1 and event not in ("end_map", "end_array"):  # a key's value
                if key == "entry":
                    entry_is_list = event == "start_array"
                    if top.get("resourceType") == "Bundle" and "type" in top:
                        return _Head("bundle", top["type"], entry_is_list)
                elif key in ("resourceType", "type") and event not in ("start_map",
                                                                       "start_array"):
                    top[key] = value
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
            ended = depth == 0
    except (ijson.JSONError, ValueError) as exc:
        return _Head("invalid", error=str(exc)[:120])
    if not started:
        return _Head("empty")
    if not is_map:
        return _Head("other")
    if top.get("resourceType") == "Bundle":
        return _Head("bundle", top.get("type"), entry_is_list is not False)
    return _Head("resource", resource_type=top.get("resourceType"))


def _large(stream: BinaryIO, size: int, limits: FhirLimits,
           counter: Counter) -> Iterator[Unit | Rejected]:
    """A file larger than one resource may be: a Bundle read entry by entry, or NDJSON."""
    head = _head(stream)
    if head.kind == "ndjson":
        yield from _ndjson(stream, limits, counter)
        return
    if head.kind == "empty":
        return
    stream.seek(0)
    start = stream.read(4096)
    if head.kind == "invalid":
        yield _rejected("file", 0, "fhir_invalid_json", f"file is not JSON: {head.error}", start)
        return
    if head.kind != "bundle":
        counter.resources += 1
        kind = head.resource_type
        yield _rejected("resource", 0, "fhir_too_large", _too_large(size, limits), start,
                        resource_type=kind if known_type(kind) else None)
        return
    if head.bundle_type not in BUNDLE_TYPES or not head.entry_is_list:
        yield _bad_bundle(head.bundle_type, start)
        return
    yield from _stream_entries(stream, limits, counter)


class _Counted:
    """``read`` counting the bytes it returned (the parser's position, without a syscall)."""

    def __init__(self, stream: BinaryIO, position: int) -> None:
        self._stream, self.position = stream, position

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.position += len(data)
        return data


def _stream_entries(stream: BinaryIO, limits: FhirLimits,
                    counter: Counter) -> Iterator[Unit | Rejected]:
    """The Bundle's entries, each built alone (and only up to ``resource_bytes_max``: a larger
    one is read past, not built)."""
    counted = _Counted(stream, _skip_bom(stream))
    n, depth = 0, 0
    builder: Any = None
    started_at = 0
    too_large = False
    in_entry = False
    # Read granularity of the position: ijson reads the file in chunks of this many bytes.
    slack = 64 * 1024
    try:
        for prefix, event, value in ijson.parse(counted, buf_size=slack):
            if not in_entry:
                if prefix == "entry" and event == "end_array":
                    return  # the rest of the Bundle has nothing more to read
                if prefix != "entry.item":
                    continue
                if event in ("start_map", "start_array"):
                    in_entry, depth, too_large = True, 1, False
                    builder, started_at = ijson.ObjectBuilder(), counted.position
                    builder.event(event, value)
                    continue
                step = _entry(n, value, limits, counter)  # a scalar entry: not a resource
                n += 1
                yield step
                if _stops(step):
                    return
                continue
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
            if not too_large:
                builder.event(event, value)
                if counted.position - started_at > limits.resource_bytes_max + slack:
                    too_large, builder = True, None  # read past the rest of it
            if depth:
                continue
            in_entry = False
            if too_large:
                stop = _past_max(f"entry[{n}]", n, limits, counter)
                if stop is None:
                    counter.resources += 1
                step = stop or _rejected(
                    f"entry[{n}]", n, "fhir_too_large", f"entry[{n}]: resource is more than "
                    f"{limits.resource_bytes_max} bytes (RCMFLOW_FHIR_RESOURCE_BYTES_MAX): "
                    "not read", "")
            else:
                step = _entry(n, builder.value, limits, counter)
            builder = None
            n += 1
            yield step
            if _stops(step):
                return
    except (ijson.JSONError, ValueError) as exc:
        yield _rejected(f"entry[{n}]", n, "fhir_invalid_json", f"file is not JSON from "
                        f"entry[{n}] on ({str(exc)[:120]}): entries before it were read, it and "
                        "the rest were not", "")


def _ndjson(stream: BinaryIO, limits: FhirLimits,
            counter: Counter) -> Iterator[Unit | Rejected]:
    """One resource per line, each line read up to ``resource_bytes_max`` (a longer one is
    read past in pieces, never whole)."""
    _skip_bom(stream)
    number = 0
    while True:
        line = stream.readline(limits.resource_bytes_max + 1)
        if not line:
            return
        number += 1
        size = len(line)
        if size > limits.resource_bytes_max and not line.endswith(b"\n"):
            start, rest = line[:4096], line
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(1024 * 1024)
                size += len(rest)
            line = start
        else:
            line = line.rstrip(b"\r\n")
            size = len(line)
        if not line.strip():
            continue
        where = f"line {number}"
        stop = _past_max(where, number, limits, counter)
        if stop is not None:
            yield stop
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            counter.resources += 1
            yield _rejected(where, number, "fhir_not_utf8", f"line {number}: byte {exc.start} "
                            "is not UTF-8 (FHIR JSON is UTF-8)", line)
            continue
        if size > limits.resource_bytes_max:
            counter.resources += 1
            yield _rejected(where, number, "fhir_too_large", _too_large(size, limits),
                            text[:4096])
            continue
        try:
            doc = read_json(text)
        except ValueError as exc:
            counter.resources += 1
            yield _rejected(where, number, "fhir_invalid_json",
                            f"line {number} is not JSON: {str(exc)[:120]}", text)
            continue
        yield Unit(where, number, text, doc, None)


# -- one resource ------------------------------------------------------------------------------

def _one(unit: Unit, limits: FhirLimits, seen: SeenKeys) -> Read:
    kind = _kind(unit.doc)
    read = Read(unit, "rejected")

    def reject(r: Refused) -> None:
        read.rejected.append(Rejected(unit.location, unit.index,
                                      _placed(r.rejection, unit.location), unit.text,
                                      r.account, kind))

    result = map_resource(unit.doc, full_url=unit.full_url, options=limits.options)
    if isinstance(result, Refused):
        reject(result)
        return read
    accepted = _dedup(unit, result, seen, reject)
    for part in result.refused:
        reject(part)
    read.events = accepted
    if accepted:
        read.totals = _totals(unit, result, accepted, limits)
    read.note = result.note
    whole = not result.refused and len(accepted) == len(result.events)
    read.status = ("notice" if result.note else "applied" if whole and accepted
                   else "partly" if accepted else "rejected")
    return read


def _totals(unit: Unit, result: Mapped, accepted: list[FhirEvent],
            limits: FhirLimits) -> SourceTotals:
    """What the accepted parts of a resource say in money, read from the resource, each
    attributed to the event its part (``Mapped.origins``) became."""
    origin_of = {id(e): o for e, o in zip(result.events, result.origins, strict=True)}
    totals = SourceTotals(event_ids=[(e.account, e.event_id) for e in accepted])
    for event in accepted:
        if origin_of[id(event)] == NO_MONEY:
            continue  # a workflow step: no money to state
        totals.add(*source_amount(unit.doc, origin_of[id(event)], limits.options),
                   event_id=event.event_id)
    return totals


def _place(location: str, index: int) -> str:
    """The location of another unit of the same file, from its index."""
    if location.startswith("entry["):
        return f"entry[{index}]"
    if location.startswith("line "):
        return f"line {index}"
    return location


def _dedup(unit: Unit, result: Mapped, seen: SeenKeys,
           reject: Callable[[Refused], None]) -> list[FhirEvent]:
    """The same event twice in one file is refused on the second place (as payment rows)."""
    kept: list[FhirEvent] = []
    for event in result.events:
        earlier = seen.first(event.account, event.event_id, unit.index, event.model_dump_json())
        if earlier is not None:
            first, same = earlier
            reject(refused("fhir_duplicate", f"the same resource (same identifier / id) for "
                           f"account {event.account} is already at "
                           f"{_place(unit.location, first)} "
                           f"({'the same content' if same else 'other content'})",
                           account=event.account))
            continue
        kept.append(event)
    return kept


def _kind(doc: Any) -> str | None:
    """The resourceType when it is a FHIR type's name, else None (never echo free text)."""
    kind = doc.get("resourceType") if isinstance(doc, dict) else None
    return kind if known_type(kind) else None


def _too_large(size: int, limits: FhirLimits) -> str:
    return (f"resource is {size} bytes, more than {limits.resource_bytes_max} "
            "(RCMFLOW_FHIR_RESOURCE_BYTES_MAX): not read")


# -- records -----------------------------------------------------------------------------------

def _raw_key(unit: Unit, origin: str) -> str:
    if isinstance(unit.doc, dict):
        key = resource_key(unit.doc, unit.full_url)
        if key:
            return key
    return f"{origin}:{unit.location}"


class _Records:
    """Records of one file's steps: errors one DLQ record each (numbered in the file's
    order, for deterministic ids), warnings tallied into one record per kind at the end."""

    def __init__(self, origin: str, payload_bytes_max: int) -> None:
        self.origin, self.payload_max = origin, payload_bytes_max
        self.received = datetime.now(UTC)
        self.tally = WarningTally()
        self.errors = 0
        self._n = 0

    def raw(self, read: Read) -> Record:
        unit, totals = read.unit, read.totals
        return (RAW_FHIR, _raw_key(unit, self.origin).encode(), orjson.dumps(
            {"origin": self.origin, "location": unit.location, "status": read.status,
             "resource": unit.text, **({"source_totals": totals.to_json()} if totals else {})}))

    def rejected(self, r: Rejected) -> Iterator[Record]:
        n, self._n = self._n, self._n + 1
        payload = r.payload if isinstance(r.payload, bytes) else r.payload.encode()
        context: dict[str, Any] = {}
        if r.resource_type:
            context["resourceType"] = r.resource_type[:40]
        reason = f"{r.place}: {r.rejection.detail}"
        if r.rejection.severity == "warning":
            self.tally.add(r.rejection.reason_code, place=r.place, offset=r.index,
                           reason=reason, payload=payload, context=context)
            return
        if r.account:
            context["account"] = r.account
        self.errors += 1
        # The place is in context.problems; the reason names the file and the place too.
        detail = f"{self.origin.removeprefix('file:')} {reason}"
        record = dlq_record(
            r.rejection.model_copy(update={"detail": detail}),
            origin=Origin(topic=self.origin, partition=0, offset=r.index, key=None),
            payload=payload, payload_bytes_max=self.payload_max,
            received_at=self.received, context=context,
            discriminator=f"{r.location}|{r.part}|{n}")  # the ids records have always had
        yield DLQ, None, record.model_dump_json().encode()

    def step(self, step: Step) -> Iterator[Record]:
        if isinstance(step, Rejected):
            yield from self.rejected(step)
            return
        yield self.raw(step)
        for event in step.events:
            yield EVENTS, event.account.encode(), event.model_dump_json().encode()
        for r in step.rejected:
            yield from self.rejected(r)

    def tallied(self) -> Iterator[Record]:
        """The aggregated warnings: after the file's last step."""
        for record in self.tally.records(stage="decode", origin=self.origin,
                                         received_at=self.received,
                                         payload_bytes_max=self.payload_max):
            yield DLQ, None, record.model_dump_json().encode()


# -- a whole file in memory, and a file streamed -----------------------------------------------

@dataclass
class FhirOutcome:
    """A file's resources, in memory (a Kafka record's file, tests): ``process_fhir``."""

    origin: str
    resources: int = 0
    steps: list[Step] = field(default_factory=list)

    @property
    def events(self) -> list[tuple[Unit, FhirEvent]]:
        return [(s.unit, e) for s in self.steps if isinstance(s, Read) for e in s.events]

    @property
    def rejected(self) -> list[Rejected]:
        return [r for s in self.steps
                for r in ([s] if isinstance(s, Rejected) else s.rejected)]

    @property
    def notes(self) -> list[tuple[Unit, str]]:
        return [(s.unit, s.note) for s in self.steps if isinstance(s, Read) and s.note]

    @property
    def raw(self) -> list[tuple[Unit, str]]:
        return [(s.unit, s.status) for s in self.steps if isinstance(s, Read)]

    def ok(self) -> bool:
        return not self.rejected

    def records(self, payload_bytes_max: int = default_of("dlq_payload_bytes_max")
                ) -> list[Record]:
        out = _Records(self.origin, payload_bytes_max)
        records = [r for s in self.steps for r in out.step(s)]
        return records + list(out.tallied())


def process_fhir(data: bytes, *, name: str, origin: str,
                 limits: FhirLimits = FhirLimits()) -> FhirOutcome:
    """Every resource of a file, as events, notices or rejections (never raises on input)."""
    counter = Counter()
    outcome = FhirOutcome(origin=origin)
    outcome.steps = list(fhir_steps(io.BytesIO(data), name=name, size=len(data),
                                    limits=limits, counter=counter))
    outcome.resources = counter.resources
    return outcome


class FhirIngest:
    """One FHIR file published as it is read (connectors/inbound/files.FileIngest): counts, the
    first
    accounts and ``REASONS_KEPT`` reasons and the warning tally stay for the report."""

    def __init__(self, path: Path, limits: FhirLimits) -> None:
        self.path, self.limits = path, limits
        self.origin = f"file:{path}"
        self._counter = Counter()
        self._position = ReadPosition(path)
        self.events = 0
        self.notes = 0
        self.accounts: list[str] = []  # the first few, for the report
        self.accounts_more = False
        self.first_rejected: list[Rejected] = []
        self.rejected = 0
        self.to_dlq = 0
        self.tally = WarningTally()

    @property
    def resources(self) -> int:
        return self._counter.resources

    @property
    def bytes_read(self) -> int:
        return self._position.bytes

    def records(self) -> Iterator[Record]:
        out = _Records(self.origin, self.limits.dlq_payload_bytes_max)
        self.tally = out.tally
        with self._position.open() as file:
            for step in fhir_steps(file, name=self.path.name, size=self.path.stat().st_size,
                                   limits=self.limits, counter=self._counter):
                self._count(step)
                yield from out.step(step)
        yield from out.tallied()
        self.to_dlq = out.errors + len(out.tally.counts())

    def _count(self, step: Step) -> None:
        rejected = [step] if isinstance(step, Rejected) else step.rejected
        self.rejected += len(rejected)
        self.first_rejected += rejected[:REASONS_KEPT - len(self.first_rejected)]
        if isinstance(step, Read):
            self.events += len(step.events)
            self.notes += bool(step.note)
            for event in step.events:
                if event.account not in self.accounts:
                    if len(self.accounts) < 5:
                        self.accounts.append(event.account)
                    else:
                        self.accounts_more = True

    def ok(self) -> bool:
        return not self.rejected


def ingest_fhir_files(settings: Settings, kafka: KafkaConnection, files: list[Path], *,
                      currency: str, console: Console) -> ExitCode:
    """Publish every file; the exit code says whether anything went to rcm.dlq."""
    limits = limits_from(settings, currency)
    return ingest_files(
        files, kafka=kafka, console=console, bytes_max=settings.fhir_file_bytes_max,
        bytes_setting="RCMFLOW_FHIR_FILE_BYTES_MAX",
        open_file=lambda path: FhirIngest(path, limits), report=report_fhir)


def report_fhir(path: Path, ingest: FhirIngest, console: Console) -> None:
    """Counts and reasons: places, resource types, codes, amounts and account numbers only."""
    shown = ", ".join(ingest.accounts) + (" (+more)" if ingest.accounts_more else "")
    warned = ingest.tally.counts()
    say(console, f"{escape(str(path))}: {ingest.resources} resources, "
                  f"{ingest.events} events to {EVENTS}"
                  + (f" (accounts {escape(shown)})" if ingest.accounts else "")
                  + (f", {ingest.notes} notices" if ingest.notes else "")
                  + (f", [yellow]{ingest.to_dlq} records to {DLQ}[/yellow]"
                     if ingest.rejected else ""))
    for code, count in warned.items():
        if count > 1:
            say(console, f"  {count} × {code} (warnings: one {DLQ} record)")
    for r in ingest.first_rejected[:SHOWN_MAX]:
        say(console, escape(f"  {r.place} {r.resource_type or ''}: "
                             f"{r.rejection.reason_code}: {r.rejection.detail}"))
    if ingest.rejected > SHOWN_MAX:
        say(console, f"  ... {ingest.rejected - SHOWN_MAX} more (rcmflow dlq list)")
