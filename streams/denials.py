"""Denials (pure): the denied claims and service lines of an account, as items it keeps.

A **denial item** (``DenialRecord``) is made by the 835 that denies a claim (``outcome``
``denied``: CLP02 = 4, or paid nothing with a denial CARC, as the 835 connector decides) or
a service line (paid nothing, a charge, and a denial CARC: ``line_denial_carcs``) and then
moved, never duplicated, by what follows about the same claim:

* ``workflow_step`` ``appeal_initiated`` naming the claim (or ``<claim>/<line>``): open or
  upheld -> appealed;
* a later ``claim_adjudicated`` of the claim: paid -> overturned (after an appeal) or
  resolved (paid without one); denied again -> upheld (after an appeal) or open again;
  a reversal (CLP02 = 22) only notes itself: the re-adjudication that follows moves it;
* a ``write_off`` with reason ``denial`` naming the claim (``dimensions.claim_id``):
  -> written_off.

Item id: the claim id, or ``<claim id>/<line id>`` for a line denial. Every change depends on
the event and the denial item before it only (never on the head), as ``core.item_changes``
requires. The category ("why") is not kept: the routing table (``denial_routing.py``) gives
it when the items are read, so a new table applies to every denial, old and new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, TypeAlias, cast

from rcmflow.streams.events import (
    Adjustment,
    ClaimAdjudicated,
    Event,
    WorkflowStep,
    WriteOff,
)
from rcmflow.streams.state import DenialRecord, DenialStep, Item, ItemRef

__all__ = ["DENIAL_STATES", "WORKED_STATES", "NOT_DENIAL_REASONS", "DENIAL_STEPS_KEPT",
           "DenialState", "denial_refs", "denial_changes", "denial_carcs", "line_id_of"]

DenialState: TypeAlias = Literal["open", "appealed", "overturned", "upheld", "resolved",
                                 "written_off"]
DENIAL_STATES: tuple[DenialState, ...] = ("open", "appealed", "overturned", "upheld",
                                          "resolved", "written_off")
#: States a team still works (the "open denials" of the metrics and the default listing).
WORKED_STATES = frozenset({"open", "appealed"})
#: States a payment closes (upheld: a further appeal may still overturn it).
_PAYABLE = frozenset({"open", "appealed", "upheld"})
#: CARC reasons that adjust a paid-nothing line without denying it: the contract (fee
#: schedule, maximum allowable, multiple-procedure rules, capitation, sequestration) or
#: another payer's payment. PR (the patient's share) and CR (corrections) never deny.
NOT_DENIAL_REASONS = frozenset({"45", "253", "23", "94", "42", "59", "24", "A2"})
#: Steps a denial item keeps (the newest): enough for every real claim's history.
DENIAL_STEPS_KEPT = 20

ItemLookup = Callable[[ItemRef], Item | None]


def denial_carcs(adjustments: Iterable[Adjustment]) -> list[str]:
    """The CARCs ("CO-16") among ``adjustments`` that deny, once each, in order."""
    found: dict[str, None] = {}
    for adj in adjustments:
        if adj.group not in ("PR", "CR") and adj.reason not in NOT_DENIAL_REASONS:
            found[adj.carc] = None
    return list(found)


def line_id_of(claim_id: str, line_id: str) -> str:
    return f"{claim_id}/{line_id}"


def denial_refs(event: Event) -> tuple[ItemRef, ...]:
    """The denial items ``event`` may create or move (it reads no others)."""
    match event:
        case ClaimAdjudicated():
            return (("denial", event.claim_id),
                    *(("denial", line_id_of(event.claim_id, ln.line_id)) for ln in event.lines))
        case WorkflowStep(step="appeal_initiated") if event.claim_id is not None:
            return (("denial", event.claim_id),)
        case WriteOff(reason="denial") if event.dimensions.claim_id is not None:
            return (("denial", event.dimensions.claim_id),)
    return ()


def denial_changes(event: Event, version: int, items: ItemLookup) -> dict[ItemRef, Item]:
    """The denial items ``event`` (applied as account ``version``) creates or moves."""
    changes: dict[ItemRef, DenialRecord] = {}
    match event:
        case ClaimAdjudicated():
            _adjudicated(event, version, items, changes)
        case WorkflowStep() | WriteOff():
            for ref in denial_refs(event):
                before = _record(items(ref))
                if before is None:
                    continue
                moved = (_appealed(before, event, version) if isinstance(event, WorkflowStep)
                         else _written_off(before, event, version))
                if moved is not None:
                    changes[ref] = moved
    return cast(dict[ItemRef, Item], changes)


def _record(found: Item | None) -> DenialRecord | None:
    return cast(DenialRecord, found) if found is not None else None


def _adjudicated(event: ClaimAdjudicated, version: int, items: ItemLookup,
                 changes: dict[ItemRef, DenialRecord]) -> None:
    claim_ref: ItemRef = ("denial", event.claim_id)
    before = _record(items(claim_ref))
    if event.outcome == "reversal":
        # The payer takes its answer back; the new answer that follows moves the item.
        for noted in denial_refs(event):
            found = _record(items(noted))
            if found is not None and found["state"] != "written_off":
                changes[noted] = _step(found, found["state"], event, version)
        return
    if event.outcome == "denied":
        carcs = denial_carcs(event.all_adjustments()) or [
            a.carc for a in event.all_adjustments()]
        rarcs = list(dict.fromkeys([*event.remark_codes,
                                    *(c for ln in event.lines for c in ln.remark_codes)]))
        changes[claim_ref] = _denied(before, event, version, line_id=None,
                                     amount_cents=event.charge_cents - event.paid_cents,
                                     carcs=carcs, rarcs=rarcs, procedure_code=None)
        return
    if before is not None and before["state"] in _PAYABLE and event.paid_cents > 0:
        changes[claim_ref] = _paid(before, event, version, event.paid_cents)
    for line in event.lines:
        ref: ItemRef = ("denial", line_id_of(event.claim_id, line.line_id))
        found = _record(items(ref))
        carcs = denial_carcs(line.adjustments)
        if line.paid_cents == 0 and line.charge_cents > 0 and carcs:
            changes[ref] = _denied(found, event, version, line_id=line.line_id,
                                   amount_cents=line.charge_cents, carcs=carcs,
                                   rarcs=list(line.remark_codes),
                                   procedure_code=line.procedure_code)
        elif found is not None and found["state"] in _PAYABLE and line.paid_cents > 0:
            changes[ref] = _paid(found, event, version, line.paid_cents)


def _denied(before: DenialRecord | None, event: ClaimAdjudicated, version: int, *,
            line_id: str | None, amount_cents: int, carcs: list[str], rarcs: list[str],
            procedure_code: str | None) -> DenialRecord:
    """A (new or repeated) denial: appealed -> upheld; upheld and written off stay;
    anything else is open (again)."""
    if before is None:
        dims = event.dimensions
        record: DenialRecord = {
            "version": version,
            "denial_id": event.claim_id if line_id is None else line_id_of(event.claim_id,
                                                                            line_id),
            "claim_id": event.claim_id, "line_id": line_id, "state": "open",
            "payer": dims.payer, "payer_class": dims.payer_class, "entity": dims.entity,
            "procedure_code": procedure_code, "amount_cents": amount_cents, "carcs": carcs,
            "rarcs": rarcs, "denied_at": event.occurred_at,
            "adjudication_event_id": event.event_id, "appealed_at": None, "resolved_at": None,
            "paid_cents": 0, "written_off_cents": 0, "steps": []}
        return _step(record, "open", event, version)
    state = before["state"]
    now = {"appealed": "upheld", "upheld": "upheld", "written_off": "written_off"}.get(
        state, "open")
    updated: DenialRecord = {
        **before, "amount_cents": amount_cents, "carcs": carcs, "rarcs": rarcs,
        "adjudication_event_id": event.event_id,
        "resolved_at": event.occurred_at if now == "upheld" else before["resolved_at"]}
    if now == "open":
        updated |= {"resolved_at": None, "paid_cents": 0}
    return _step(updated, now, event, version)


def _paid(before: DenialRecord, event: ClaimAdjudicated, version: int,
          paid_cents: int) -> DenialRecord:
    """Paid by a later 835: overturned when appealed (or upheld, then appealed again in
    writing the workflow did not report), else resolved (a corrected claim, a payer's own
    reprocessing)."""
    now = "overturned" if before["state"] in ("appealed", "upheld") else "resolved"
    updated: DenialRecord = {**before, "paid_cents": paid_cents,
                             "resolved_at": event.occurred_at}
    return _step(updated, now, event, version)


def _appealed(before: DenialRecord, event: WorkflowStep, version: int) -> DenialRecord | None:
    if before["state"] not in ("open", "upheld"):
        return None  # appealed already, or done: the step changes nothing
    updated: DenialRecord = {**before, "appealed_at": event.occurred_at, "resolved_at": None}
    return _step(updated, "appealed", event, version)


def _written_off(before: DenialRecord, event: WriteOff, version: int) -> DenialRecord | None:
    if before["state"] not in _PAYABLE:
        return None
    updated: DenialRecord = {**before, "resolved_at": event.occurred_at,
                             "written_off_cents": before["written_off_cents"]
                             + event.amount_cents}
    return _step(updated, "written_off", event, version)


def _step(record: DenialRecord, state: str, event: Event, version: int) -> DenialRecord:
    step: DenialStep = {"state": state, "at": event.occurred_at, "event_id": event.event_id,
                        "event_kind": event.kind.value}
    steps = [s for s in record["steps"] if s["event_id"] != event.event_id]
    return {**record, "version": version, "state": state,
            "steps": [*steps, step][-DENIAL_STEPS_KEPT:]}
