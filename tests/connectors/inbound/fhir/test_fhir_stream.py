"""Large FHIR files are read as a stream (a Bundle entry by entry, NDJSON line by line), so
memory follows one resource, not the file; warnings of one kind from one file are one rcm.dlq
record with a count and the first places, errors stay one record each."""

from __future__ import annotations

import copy
import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from rcmflow.connectors.inbound.fhir.ingest import (
    WARNING_CODES,
    FhirIngest,
    FhirLimits,
    Rejected,
    process_fhir,
)
from rcmflow.streams.dlq import PLACES_MAX
from rcmflow.streams.topics import DLQ, EVENTS, RAW_FHIR


def placed(rejected: list[Rejected]) -> list[tuple[str, str]]:
    """Each refusal's place in the file and its reason code."""
    return [(r.place, r.rejection.reason_code) for r in rejected]


SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "fhir"
MAPPING = (Path(__file__).resolve().parents[4] / "connectors" / "inbound" / "fhir"
           / "mapping.py")
UNSUPPORTED = '{"resource":{"resourceType":"Basic","code":{"text":"x"}}}'


def charge(n: int, *, price: str = "12.50") -> str:
    return json.dumps({"fullUrl": f"urn:uuid:c{n}", "resource": {
        "resourceType": "ChargeItem", "id": f"c{n}", "status": "billable",
        "code": {"coding": [{"system": "https://www.nubc.org/CodeSystem/RevenueCodes",
                             "code": "0450"}]},
        "subject": {"reference": "Patient/p1"}, "account": [{"reference": f"Account/A{n % 50}"}],
        "occurrenceDateTime": "2026-03-01", "quantity": {"value": 1},
        "priceOverride": {"value": 0, "currency": "USD"}}}).replace('"value": 0,',
                                                                      f'"value": {price},')


def bundle_text(entries: list[str], *, first: str = '"resourceType":"Bundle","type":"batch"',
                ) -> str:
    return "{" + first + ',"entry":[' + ",".join(entries) + "]}"


def drain(path: Path, limits: FhirLimits) -> tuple[FhirIngest, list[Any]]:
    ingest = FhirIngest(path, limits)
    return ingest, list(ingest.records())


def dlq_of(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(v) for t, _, v in records if t == DLQ]


def test_a_bundle_of_200k_unsupported_entries_is_one_warning_record(tmp_path: Path) -> None:
    """A reported file: 200,000 unsupported entries put 100,001 records in rcm.dlq. Tallied,
    they are one record whatever their number: 20,000 (a thousand times the places a record
    names) take the same path in a tenth of the time (200,000 and a second reading of them
    were ~80 s of CI)."""
    n = 20_000
    path = tmp_path / "observations.json"
    path.write_text(bundle_text([UNSUPPORTED] * n))
    limits = FhirLimits(resources_max=n)
    ingest, records = drain(path, limits)
    (record,) = dlq_of(records)
    assert record["severity"] == "warning"
    assert record["reason_code"] == "fhir_unsupported_resource"
    assert record["context"]["count"] == n
    assert record["context"]["places"] == [f"entry[{i}]" for i in range(PLACES_MAX)]
    assert record["context"]["places_more"] == n - PLACES_MAX
    assert f"{n} × fhir_unsupported_resource" in record["reason"]
    assert sum(1 for t, _, _ in records if t == RAW_FHIR) == n  # each kept as received
    assert ingest.resources == n and not ingest.ok()
    # Sent again: the same record (the same id), so the DLQ does not grow by re-sending.
    path2 = tmp_path / "again" / "observations.json"
    path2.parent.mkdir()
    path2.write_text(bundle_text([UNSUPPORTED] * 3))
    _, again = drain(path, FhirLimits(resources_max=n))
    assert dlq_of(again)[0]["dlq_id"] == record["dlq_id"]


def test_errors_stay_one_record_each_beside_the_tallied_warnings(tmp_path: Path) -> None:
    bad = charge(1, price="1.005")  # a fraction of a cent: money to be worked
    entries = [UNSUPPORTED, bad, UNSUPPORTED, charge(2), bad.replace("c1", "c3"), UNSUPPORTED]
    path = tmp_path / "b.json"
    path.write_text(bundle_text(entries))
    ingest, records = drain(path, FhirLimits(stream_from_bytes=0))
    dlq = dlq_of(records)
    errors = [d for d in dlq if d["severity"] == "error"]
    assert [d["context"]["problems"][0]["place"] for d in errors] == ["entry[1]", "entry[4]"]
    (warned,) = [d for d in dlq if d["severity"] == "warning"]
    assert warned["context"]["count"] == 3
    assert warned["context"]["places"] == ["entry[0]", "entry[2]", "entry[5]"]
    assert dlq[-1] == warned  # the tally comes after the file's last entry
    assert sum(1 for t, _, _ in records if t == EVENTS) == 1
    assert ingest.to_dlq == 3 and ingest.rejected == 5


def test_the_warning_codes_are_the_ones_the_mapping_calls_warnings() -> None:
    source = MAPPING.read_text()
    calls = re.split(r"\brefused\(", source)[1:]
    warned = {re.match(r'"(\w+)"', c)[1] for c in calls  # type: ignore[index]
              if 'severity="warning"' in c.split("return ")[0]}
    assert warned and warned | {"fhir_empty"} == WARNING_CODES


def _mixed_bundle() -> dict[str, Any]:
    names = sorted(p.name for p in SAMPLES.glob("r4_*.json"))
    entries: list[Any] = [{"fullUrl": f"urn:uuid:{n}", "resource": json.loads(
        (SAMPLES / name).read_text())} for n, name in enumerate(names)]
    usd = copy.deepcopy(entries[2]["resource"])
    usd["priceOverride"]["currency"] = "USD"
    entries += [{"resource": usd}, {"request": {"method": "DELETE", "url": "ChargeItem/x"}},
                {"resource": usd}, 7, {"resource": "not an object"}]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _without_time(records: list[Any]) -> list[Any]:
    out = []
    for topic, key, value in records:
        doc = orjson.loads(value)
        if topic == DLQ:
            doc.pop("received_at")
        out.append((topic, key, doc))
    return out


@pytest.mark.parametrize("layout", ["type_first", "entry_first", "ndjson"])
def test_a_streamed_file_is_read_as_the_same_file_read_whole(layout: str) -> None:
    """The streaming reader (files over one resource's size) and the whole-file reader agree
    record for record on every sample, bad entries included, whatever the key order."""
    bundle = _mixed_bundle()
    if layout == "ndjson":
        text = "\n".join(json.dumps(e["resource"]) for e in bundle["entry"]
                         if isinstance(e, dict) and isinstance(e.get("resource"), dict))
        name = "x.ndjson"
    else:
        entries = bundle.pop("entry")
        doc = {"entry": entries, **bundle} if layout == "entry_first" else bundle | {
            "entry": entries}
        text, name = json.dumps(doc), "x.json"
    whole = process_fhir(text.encode(), name=name, origin="file:x")
    streamed = process_fhir(text.encode(), name=name, origin="file:x",
                            limits=FhirLimits(stream_from_bytes=0))
    assert streamed.resources == whole.resources > 10
    assert _without_time(streamed.records()) == _without_time(whole.records())


def test_a_large_file_that_is_not_a_bundle_is_refused_without_building_it() -> None:
    resource = {"resourceType": "ChargeItem", "id": "x", "note": [{"text": "y" * 4000}]}
    out = process_fhir(json.dumps(resource).encode(), name="x.json", origin="file:x",
                       limits=FhirLimits(resource_bytes_max=1024))
    assert [(r.rejection.reason_code, r.resource_type) for r in out.rejected] == [("fhir_too_large",
                                                                  "ChargeItem")]
    searchset = json.dumps({"resourceType": "Bundle", "type": "searchset",
                            "entry": [json.loads(UNSUPPORTED)] * 40})
    out = process_fhir(searchset.encode(), name="s.json", origin="file:s",
                       limits=FhirLimits(resource_bytes_max=1024))
    assert [r.rejection.reason_code for r in out.rejected] == ["fhir_bundle"]
    assert out.resources == 0


def test_an_entry_larger_than_a_resource_is_read_past_and_the_next_ones_go_through() -> None:
    big = json.dumps({"resource": {"resourceType": "Basic", "code": {"text": "z" * 300_000}}})
    text = bundle_text([charge(1), big, charge(2)])
    out = process_fhir(text.encode(), name="b.json", origin="file:b",
                       limits=FhirLimits(resource_bytes_max=100_000))
    assert placed(out.rejected) == [("entry[1]", "fhir_too_large")]
    assert [u.location for u, _ in out.events] == ["entry[0]", "entry[2]"]


def test_a_truncated_bundle_keeps_what_was_read_and_says_where_it_stopped() -> None:
    text = bundle_text([charge(n) for n in range(5)])
    cut = text[: text.index('"urn:uuid:c3"')]
    out = process_fhir(cut.encode(), name="b.json", origin="file:b",
                       limits=FhirLimits(stream_from_bytes=0))
    assert len(out.events) == 3
    (stop,) = out.rejected
    assert (stop.location, stop.rejection.reason_code) == ("entry[3]", "fhir_invalid_json")


def test_resources_max_still_stops_a_streamed_bundle_with_one_record() -> None:
    text = bundle_text([charge(n) for n in range(10)])
    out = process_fhir(text.encode(), name="b.json", origin="file:b",
                       limits=FhirLimits(stream_from_bytes=0, resources_max=4))
    assert len(out.events) == 4 and out.resources == 4
    assert placed(out.rejected) == [("entry[4]", "fhir_resources_max")]


def test_an_ndjson_line_longer_than_a_resource_is_skipped_in_pieces() -> None:
    lines = [charge(1), "{" + " " * 50_000 + "}", charge(2)]
    text = "\n".join(json.dumps(json.loads(line)["resource"]) if line.startswith('{"full')
                     else line for line in lines)
    out = process_fhir(text.encode(), name="n.ndjson", origin="file:n",
                       limits=FhirLimits(resource_bytes_max=10_000))
    assert placed(out.rejected) == [("line 2", "fhir_too_large")]
    assert len(out.events) == 2


def _peak_mb(path: Path) -> float:
    tracemalloc.start()
    try:
        ingest = FhirIngest(path, FhirLimits(resources_max=1_000_000))
        for _ in ingest.records():
            pass
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_memory_follows_a_resource_not_the_file(tmp_path: Path) -> None:
    """A Bundle four times larger needs no more memory than the duplicate check's ~200 bytes
    per event; read whole, it took ~30x its size."""
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    small.write_text(bundle_text([charge(n) for n in range(1_500)]))
    large.write_text(bundle_text([charge(n) for n in range(6_000)]))
    small_mb, large_mb = _peak_mb(small), _peak_mb(large)
    size_mb = large.stat().st_size / 1e6
    assert size_mb > 2
    assert large_mb < small_mb + 4_500 * 400 / 1e6 + 1, (small_mb, large_mb)
    assert large_mb < size_mb, (large_mb, size_mb)
