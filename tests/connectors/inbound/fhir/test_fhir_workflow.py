"""FHIR Task and CoverageEligibilityResponse in: workflow steps of the account's lifecycle
(docs/lifecycle.md), or why not. Resources shaped as R4's own examples (Task ``example1``,
CoverageEligibilityResponse ``E2500``), pointed at an rcmflow account."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from rcmflow.connectors.inbound.fhir import FhirOutcome, process_fhir
from rcmflow.streams.events import WorkflowStep
from rcmflow.streams.topics import DLQ, EVENTS

SYSTEM = "urn:rcmflow:lifecycle-state"


def task(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "Task", "id": "example1",
        "identifier": [{"system": "http://workflow.example.org/tasks", "value": "20170201-001"}],
        "status": "completed", "intent": "order",
        "code": {"coding": [{"system": SYSTEM, "code": "coding_approved"}]},
        "description": "Coding review of the visit",
        "for": {"reference": "Account/A3001"},
        "authoredOn": "2026-03-01T09:00:00+00:00",
        "lastModified": "2026-03-01T11:00:00+00:00",
        "executionPeriod": {"start": "2026-03-01T09:30:00+00:00",
                            "end": "2026-03-01T10:45:00+00:00"},
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def eligibility(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "CoverageEligibilityResponse", "id": "E2500",
        "identifier": [{"system": "http://www.BenefitsInc.com/fhir/coverageeligibilityresponse",
                        "value": "881234"}],
        "status": "active", "purpose": ["validation"],
        "patient": {"reference": "Patient/pat.A3001"},
        "created": "2026-02-28T10:00:00+00:00",
        "request": {"reference": "http://www.BenefitsInc.com/fhir/eligibility/225476332402"},
        "outcome": "complete", "disposition": "Policy is currently in-force.",
        "insurer": {"reference": "Organization/2"},
        "insurance": [{"coverage": {"reference": "Coverage/9876B1"}, "inforce": True}],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def run(doc: dict[str, Any]) -> FhirOutcome:
    return process_fhir(json.dumps(doc).encode(), name="x.json", origin="file:x.json")


def refusal(doc: dict[str, Any]) -> tuple[str, str, str]:
    outcome = run(doc)
    assert outcome.events == []
    (r,) = outcome.rejected
    return r.rejection.reason_code, r.rejection.severity, r.rejection.detail


def test_a_completed_task_is_its_workflow_step_when_it_ended() -> None:
    outcome = run(task())
    assert not outcome.rejected
    [(_, event)] = outcome.events
    assert isinstance(event, WorkflowStep)
    assert (event.account, event.step, event.source) == ("A3001", "coding_approved", "fhir")
    assert event.event_id == "fhir:Task:http://workflow.example.org/tasks|20170201-001"
    assert event.occurred_at == datetime(2026, 3, 1, 10, 45, tzinfo=UTC)
    assert event.note == "Coding review of the visit"
    # On rcm.events, keyed by the account; no source amount (no money).
    records = outcome.records()
    [(key, value)] = [(k, v) for t, k, v in records if t == EVENTS]
    assert key == b"A3001" and orjson.loads(value)["kind"] == "workflow_step"
    # Without an execution period: lastModified, then authoredOn; focus when there is no for.
    [(_, later)] = run(task(executionPeriod=None, **{"for": None},
                            focus={"identifier": {"system": "urn:rcmflow:account",
                                                  "value": "A3001"}})).events
    assert later.occurred_at == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert later.account == "A3001"


@pytest.mark.parametrize("step", ["registration_complete", "eligibility_verified",
                                  "charge_review_complete", "appeal_initiated",
                                  "patient_statement_issued"])
def test_every_workflow_step_can_come_as_a_task(step: str) -> None:
    [(_, event)] = run(task(code={"coding": [{"system": "http://loinc.org", "code": "x"},
                                             {"system": SYSTEM, "code": step}]})).events
    assert isinstance(event, WorkflowStep) and event.step == step


def test_tasks_refused_with_their_reasons() -> None:
    code, severity, detail = refusal(task(status="in-progress"))
    assert (code, severity) == ("fhir_task_not_completed", "warning")
    assert "Task status 'in-progress' is not completed" in detail
    # Steps rcmflow derives itself (a claim submitted, a payment) are not taken from a Task.
    code, severity, detail = refusal(task(code={"coding": [{"system": SYSTEM,
                                                            "code": "payment_posted"}]}))
    assert (code, severity) == ("fhir_task_unknown_step", "error")
    assert "registration_complete" in detail
    code, _, detail = refusal(task(**{"for": {"reference": "Patient/example"}}))
    assert code == "fhir_no_account" and "for (else focus)" in detail
    code, _, detail = refusal(task(executionPeriod=None, lastModified=None, authoredOn=None))
    assert (code, detail) == ("fhir_invalid_value",
                              "Task: executionPeriod.end, lastModified or authoredOn is missing")
    code, _, _ = refusal(task(executionPeriod={"end": "1970-01-01T00:00:00+00:00"}))
    assert code == "date_out_of_range"


def test_an_eligibility_response_is_eligibility_verified_with_its_result() -> None:
    [(_, event)] = run(eligibility()).events
    assert isinstance(event, WorkflowStep)
    assert (event.account, event.step, event.result) == ("A3001", "eligibility_verified",
                                                         "active")
    assert event.occurred_at == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert event.event_id.startswith("fhir:CoverageEligibilityResponse:")
    [(_, lapsed)] = run(eligibility(insurance=[{"coverage": {"reference": "Coverage/1"},
                                                "inforce": False}])).events
    assert isinstance(lapsed, WorkflowStep) and lapsed.result == "inactive"
    [(_, unknown)] = run(eligibility(insurance=None)).events
    assert isinstance(unknown, WorkflowStep) and unknown.result == "unknown"


def test_eligibility_responses_refused_with_their_reasons() -> None:
    assert refusal(eligibility(outcome="queued"))[:2] == ("fhir_not_complete", "warning")
    assert refusal(eligibility(status="cancelled"))[:2] == ("fhir_not_active", "warning")
    code, _, detail = refusal(eligibility(patient={"reference": "Patient/example"}))
    assert code == "fhir_no_account" and "Patient/pat.<number>" in detail
    outcome = run(eligibility(status="draft"))
    dlq = [orjson.loads(v) for t, _, v in outcome.records() if t == DLQ]
    assert [d["severity"] for d in dlq] == ["warning"]
