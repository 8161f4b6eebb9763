"""The read model on its own: versions only move forward, invalid FHIR is held back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from rcmflow.facade import store as store_module
from rcmflow.facade.resources import build_resources, validate
from rcmflow.facade.store import Store
from rcmflow.streams.state import state_json
from tests.facade.conftest import build_states
from tests.factories import charge, event_doc


def test_older_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    states = build_states([charge(1_000, account="S1"), charge(2_000, account="S1")])
    newer = states["S1"]
    older = build_states([charge(1_000, account="S1")])["S1"]
    store = Store(tmp_path / "read.sqlite")
    store.apply([("S1", state_json(newer))], {0: 1})
    assert store.apply([("S1", state_json(older))], {0: 2}) == 0
    row = store.read("Account", "S1")
    assert row is not None and row.version == newer.version == 2
    assert store.offsets() == {0: 2}
    store.close()


def test_blank_source_codes_still_make_valid_fhir() -> None:
    # A blank code passes the event schema (min length 1) but is not a FHIR code.
    docs = [charge(5_000, account="S2"),
            event_doc("claim_submitted", "S2", claim_id="K1", total_charge_cents=5_000,
                      lines=[{"line_id": "1", "charge_cents": 5_000, "procedure_code": " "}])]
    for built in build_resources(orjson.loads(state_json(build_states(docs)["S2"]))):
        validate(built.doc)


def test_snapshot_that_makes_invalid_fhir_is_not_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    states = build_states([charge(1_000, account="S3"), charge(2_000, account="S3")])
    first = build_states([charge(1_000, account="S3")])["S3"]
    store = Store(tmp_path / "read.sqlite")
    store.apply([("S3", state_json(first))], {0: 1})

    def broken(snapshot: dict[str, Any]) -> list[Any]:
        built = build_resources(snapshot)
        del built[0].doc["status"]  # required in R4
        return built

    monkeypatch.setattr(store_module, "build_resources", broken)
    store.apply([("S3", state_json(states["S3"]))], {0: 2})
    assert store.invalid_snapshots == 1
    row = store.read("Account", "S3")
    assert row is not None and row.version == 1  # the last valid view stays
    assert store.offsets() == {0: 2}  # and the feed moves on
    unchecked = Store(tmp_path / "unchecked.sqlite", validate_every=0)
    unchecked.apply([("S3", state_json(states["S3"]))], {0: 1})
    assert unchecked.invalid_snapshots == 0 and unchecked.read("Account", "S3") is not None
    store.close()
    unchecked.close()
