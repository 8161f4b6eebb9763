"""HL7's FHIR validator judges everything the facade serves: zero errors.

The store is filled the way the other facade tests fill it (the real core over events), from
the demo day and the factory accounts (``world_events``), the demo visit A3001 through its
real-format files (HL7 DFT, 837, 835, via the connectors), and the sample X12 and HL7 files of
``tests/samples`` through the same connectors. The real app then answers over HTTP: the
CapabilityStatement (auth on and off), every resource read by id, every searchset page of every
type, Bundles with ``_include``, ``_summary=count``, no match and an ignored parameter, and
error OperationOutcomes. All of it goes to one directory, and one JVM
(``tests/fhir_validator/Harness.java``) validates it offline. Warnings that stay are listed
with their reasons in ``docs/fhir-conformance.md``; a warning not listed there fails too.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi import FastAPI
from rich.console import Console

from rcmflow.cli.demo_sources import DEMO_ACCOUNT, HL7_FILE, X12_FILES
from rcmflow.connectors.inbound.hl7.mapping import map_message
from rcmflow.connectors.inbound.hl7.reader import normalise, read_message
from rcmflow.connectors.inbound.hl7.service import mapping_config
from rcmflow.connectors.inbound.x12.files import limits_from, process_x12_path
from rcmflow.facade.params import RESOURCES
from rcmflow.facade.resources import LIFECYCLE_EXTENSION, LIFECYCLE_SYSTEM
from rcmflow.facade.store import Store
from rcmflow.runtime.settings import Settings
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS
from tests.facade.conftest import bearer, make_app, records, world_events
from tests.fhir_validator.validator import Report, validate_dir, validator_or_skip

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "fhir-conformance.md"
BASE = "http://facade.test"


def connector_values() -> list[tuple[str, bytes]]:
    """(account, event JSON) from the real-format files: the demo visit first, then the
    sample HL7 DFTs and X12 835/837 files, as their connectors map them."""
    settings = Settings()
    values: list[tuple[str, bytes]] = []
    hl7_files = [HL7_FILE, *sorted((SAMPLES / "hl7").glob("*dft*.hl7"))]
    for path in hl7_files:
        mapped = map_message(read_message(normalise(path.read_bytes())),
                             mapping_config(settings))
        if isinstance(mapped, list):
            values += [(e.account, e.model_dump_json().encode()) for e in mapped]
    x12_files = [*X12_FILES, *sorted((SAMPLES / "x12").rglob("*.83*"))]
    for path in x12_files:
        outcome = process_x12_path(path, settings, Console(quiet=True))
        values += [(key.decode() if key else "", value)
                   for topic, key, value in outcome.records(limits_from(settings))
                   if topic == EVENTS]
    return values


def fill_tables() -> MemoryTables:
    """The accounts table after every event, one batch each; events the core refuses (a
    sample's claim answered twice, say) go to its DLQ as in production and show nowhere."""
    tables = MemoryTables()
    processor = Processor(load_chart())
    docs = [(d["account"], orjson.dumps(d)) for d in world_events()] + connector_values()
    applied = 0
    for n, (account, value) in enumerate(docs):
        result = processor.process([Message(EVENTS, 0, n, account.encode(), value)], tables)
        tables.write(result)
        applied += result.counts.applied
    assert applied > len(docs) * 0.9, (applied, len(docs))
    assert DEMO_ACCOUNT in {head["account"] for head in tables.views().values()}
    return tables


class Collector:
    """Fetches from the app and writes each body as one numbered file; ``where`` maps each
    file to the request that produced it, for the failure message."""

    def __init__(self, client: httpx.AsyncClient, out: Path) -> None:
        self.client = client
        self.out = out
        self.where: dict[str, str] = {}

    async def get(self, url: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
        response = await self.client.get(url, **kwargs)
        assert response.status_code == status, (url, response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("application/fhir+json")
        name = f"{len(self.where):04d}.json"
        (self.out / name).write_bytes(response.content)
        self.where[name] = url
        doc: dict[str, Any] = orjson.loads(response.content)
        return doc


async def collect(app: FastAPI, open_app: FastAPI, out: Path) -> dict[str, str]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE,
                                 headers=bearer()) as client:
        c = Collector(client, out)
        await c.get("/fhir/metadata")
        for kind in RESOURCES:
            # Every searchset page (they hold every resource of the type).
            ids: list[str] = []
            url: str | None = f"/fhir/{kind}?_count=50"
            while url is not None:
                page = await c.get(url)
                ids += [e["resource"]["id"] for e in page.get("entry", [])
                        if e["search"]["mode"] == "match"]
                following = [link["url"] for link in page["link"] if link["relation"] == "next"]
                url = urlsplit(following[0])._replace(scheme="", netloc="").geturl() \
                    if following else None
            assert ids, f"no {kind} to validate"
            # A read serves the stored body a searchset entry holds: the first of each type
            # and the demo visit's are read too (the pages above hold them all).
            for rid in [ids[0], *(i for i in ids[1:] if DEMO_ACCOUNT in i)]:
                await c.get(f"/fhir/{kind}/{rid}")
            await c.get(f"/fhir/{kind}?_summary=count")
            await c.get(f"/fhir/{kind}?_id=none-such")
        await c.get("/fhir/ClaimResponse?_include=ClaimResponse:request&_count=10")
        await c.get(f"/fhir/Account?identifier={DEMO_ACCOUNT}&unknown-parameter=1")
        await c.get(f"/fhir/Account?_count=2&_after={DEMO_ACCOUNT}")
        # Error responses: OperationOutcomes.
        await c.get("/fhir/Account/none-such", 404)
        await c.get("/fhir/Claim?created=not-a-date", 400)
        await c.get("/fhir/Account", 401, headers={"Authorization": ""})
        await c.get("/fhir/Nothing", 404)
        await c.get("/fhir/Claim", 403, headers=bearer(scope="patient/Account.read",
                                                       patient="pat.A3001"))
        await c.get("/fhir/metadata?_format=xml", 406)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=open_app),
                                 base_url=BASE) as client:
        o = Collector(client, out)
        o.where = c.where  # one numbering: no file written twice
        await o.get("/fhir/metadata")
    return c.where


#: Deliberately broken copies of a served Account, validated in the same run: the validator
#: must find an error in each, or it is not judging the Account's balance extension at all.
BROKEN = "broken-"
BROKEN_LIFECYCLE = "broken-lifecycle-"


def write_broken(out: Path, where: dict[str, str]) -> None:
    served = next(orjson.loads((out / name).read_bytes()) for name, url in where.items()
                  if url == f"/fhir/Account/{DEMO_ACCOUNT}")
    balance = served["extension"][0]

    def variant(name: str, parts: list[dict[str, Any]]) -> None:
        doc = {**served, "extension": [{**balance, "extension": parts}, *served["extension"][1:]]}
        (out / f"{BROKEN}{name}.json").write_bytes(orjson.dumps(doc))
        where[f"{BROKEN}{name}.json"] = f"(broken on purpose: {name})"

    parts = balance["extension"]
    variant("balance-without-amount", [p for p in parts if p["url"] != "amount"])
    variant("balance-amount-as-text", [
        {"url": "amount", "valueString": "12.00"} if p["url"] == "amount" else p for p in parts])
    variant("balance-with-two-terms", [*parts, {"url": "term", "valueCodeableConcept": {
        "text": "twice"}}])
    # The lifecycle extension (rcmflow's own definition, facade/definitions/) is judged too.
    (lifecycle,) = [e for e in served["extension"] if e["url"] == LIFECYCLE_EXTENSION]
    others = [e for e in served["extension"] if e["url"] != LIFECYCLE_EXTENSION]

    def lifecycle_variant(name: str, parts: list[dict[str, Any]]) -> None:
        doc = {**served, "extension": [*others, {**lifecycle, "extension": parts}]}
        (out / f"{BROKEN_LIFECYCLE}{name}.json").write_bytes(orjson.dumps(doc))
        where[f"{BROKEN_LIFECYCLE}{name}.json"] = f"(broken on purpose: {name})"

    parts = lifecycle["extension"]
    lifecycle_variant("without-since", [p for p in parts if p["url"] != "since"])
    lifecycle_variant("unknown-state", [
        {"url": "state", "valueCoding": {"system": LIFECYCLE_SYSTEM, "code": "paid_in_full"}}
        if p["url"] == "state" else p for p in parts])


def documented_warnings() -> list[re.Pattern[str]]:
    """The message patterns of docs/fhir-conformance.md's warning table (first column, in
    backticks): each warning that stays must match one."""
    text = DOCS.read_text()
    return [re.compile(m) for m in re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE)]


def validate_everything_served(tmp: Path) -> tuple[Report, dict[str, str]]:
    """The validator's report on everything the app serves (and the broken copies), and
    the request behind each file."""
    java, jars = validator_or_skip()
    store = Store(tmp / "read.sqlite")
    held = records(fill_tables())
    assert store.apply(held, {0: len(held)}) == len(held)
    assert store.invalid_snapshots == 0
    out = tmp / "served"
    out.mkdir()
    where = asyncio.run(collect(make_app(store), make_app(store, auth=False), out))
    store.close()
    write_broken(out, where)
    started = time.monotonic()
    result = validate_dir(java, jars, out)
    print(f"\nFHIR validator: {len(result.files)} files, JVM start {result.start_s:.1f}s, "
          f"validation {result.validate_s:.1f}s, wall {time.monotonic() - started:.1f}s")
    assert sorted(result.files) == sorted(where)
    return result, where


def test_hl7_validator_finds_no_error_in_anything_the_facade_serves(tmp_path: Path) -> None:
    """One test, one JVM (pytest-xdist would run separate tests in separate workers)."""
    result, where = validate_everything_served(tmp_path)

    errors = [i for i in result.of("fatal", "error") if not i.file.startswith(BROKEN)]
    assert not errors, "\n".join(f"{where[i.file]}: {i}" for i in errors[:40])

    # The broken copies fail: the balance extension's definition is applied, not passed over.
    broken = [f for f in result.files if f.startswith(BROKEN)
              and not f.startswith(BROKEN_LIFECYCLE)]
    flagged = {i.file for i in result.of("error") if "extension-Account.balance" in i.message}
    assert len(broken) == 3 and flagged == set(broken), (broken, flagged)
    # And so is the lifecycle extension's: a missing part, a code its code system lacks.
    broken = [f for f in result.files if f.startswith(BROKEN_LIFECYCLE)]
    flagged = {i.file for i in result.of("error") if i.file.startswith(BROKEN_LIFECYCLE)}
    assert len(broken) == 2 and flagged == set(broken), (broken, flagged)

    # Every warning that stays is listed, with its reason, in docs/fhir-conformance.md.
    patterns = documented_warnings()
    unlisted = [i for i in result.of("warning") if not i.file.startswith(BROKEN)
                and not any(p.search(i.message) for p in patterns)]
    assert not unlisted, "not in docs/fhir-conformance.md:\n" + "\n".join(
        f"{where[i.file]}: {i}" for i in unlisted[:40])
