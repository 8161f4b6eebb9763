"""The `rcmflow` command: every part of the system, one subcommand each.

Settings come from RCMFLOW_* environment variables (see `rcmflow/settings.py`); every command
finds the embedded broker through the data dir unless RCMFLOW_BROKER names one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rcmflow.ops import format_cents
from rcmflow.settings import BrokerNotFound, Settings

app = typer.Typer(
    help="rcmflow: keeps patient billing and the ERP ledger in agreement, in stream.\n\n"
    "Settings come from RCMFLOW_* environment variables (RCMFLOW_BROKER, RCMFLOW_DATA_DIR, "
    "RCMFLOW_PARTITIONS, RCMFLOW_COA, ...). Start with `rcmflow dev --demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(help="Account state from the tables' snapshots (operators' view).",
                           no_args_is_help=True)
dlq_app = typer.Typer(help="The exception queue: rejected input and unmapped postings.",
                      no_args_is_help=True)
ingest_app = typer.Typer(help="Publish files to the rcm.* topics.", no_args_is_help=True)
schema_app = typer.Typer(help="Published schemas.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(dlq_app, name="dlq")
app.add_typer(ingest_app, name="ingest")
app.add_typer(schema_app, name="schema")

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        err.print(f"[red]invalid RCMFLOW_* setting:[/red] {exc}")
        raise typer.Exit(2) from exc


def _servers(settings: Settings) -> list[str]:
    try:
        return settings.bootstrap_servers()
    except BrokerNotFound as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


@app.command()
def dev(
    demo: Annotated[bool, typer.Option("--demo/--no-demo", help="Feed the demo events.")] = False,
) -> None:
    """Start everything on the embedded broker: broker, topics, a worker (+ demo data).

    Runs until Ctrl-C, then stops the worker and the broker. Tables live under
    RCMFLOW_DATA_DIR (default ~/.rcmflow) and are reset at each start, because the embedded
    broker keeps its topics in memory only.
    """
    from rcmflow.dev import run_dev

    raise typer.Exit(run_dev(_settings(), demo=demo, console=out))


@app.command()
def broker() -> None:
    """Run the embedded broker (Tansu, memory only) alone; prints its bootstrap address.

    Creates the rcm.* topics. Other commands on this machine find it through the data dir.
    """
    from rcmflow.dev import run_broker

    raise typer.Exit(run_broker(_settings(), console=out))


@app.command()
def worker() -> None:
    """Run a Faust worker: applies rcm.events to the account tables, emits deltas.

    Start more to scale out: partitions spread across workers of the consumer group. Each
    worker on one machine takes the first free table directory (or RCMFLOW_WORKER_NAME).
    """
    from rcmflow.run_worker import run_worker

    raise typer.Exit(run_worker(_settings()))


@app.command()
def facade() -> None:
    """Run the FHIR R4 facade (Account, Claim, ClaimResponse, PaymentReconciliation).

    Keeps its own read model of rcm.accounts (SQLite under RCMFLOW_DATA_DIR/facade) and serves
    http://RCMFLOW_FACADE_HOST:RCMFLOW_FACADE_PORT/fhir. Bearer JWTs signed with
    RCMFLOW_FACADE_JWT_KEY are required unless RCMFLOW_FACADE_AUTH=off (development only).
    """
    from rcmflow.facade.server import run_facade

    settings = _settings()
    servers = _servers(settings)
    try:
        code = run_facade(settings, servers, settings.resolve_broker()[1])
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@ingest_app.command("events")
def ingest_events(
    files: Annotated[list[Path], typer.Argument(help="JSON-lines files of canonical events.",
                                                exists=True, dir_okay=False, readable=True)],
) -> None:
    """Publish canonical events (one JSON object per line) to rcm.events, keyed by account.

    Lines that are not JSON objects with an "account" go to rcm.dlq with the file and line.
    Full validation happens in the worker; its rejections go to rcm.dlq too.
    """
    from rcmflow.ingest import ingest_event_files

    settings = _settings()
    raise typer.Exit(ingest_event_files(settings, _servers(settings), files, console=err))


@accounts_app.command("list")
def accounts_list(as_json: JsonFlag = False) -> None:
    """Every account with its status, version and balance."""
    from rcmflow.ops import latest_snapshots

    snapshots = asyncio.run(latest_snapshots(_servers(_settings())))
    if as_json:
        _print_json([_summary(s) for _, s in sorted(snapshots.items())])
        return
    table = Table("account", "status", "version", "insurance_ar", "patient_ar",
                  "unapplied_credit", "balance", title=f"{len(snapshots)} accounts")
    for account, snap in sorted(snapshots.items()):
        b = snap["balances"]
        table.add_row(account, snap["status"], str(snap["version"]),
                      format_cents(b["insurance_ar"]),
                      format_cents(b["patient_ar"]), format_cents(b["unapplied_credit"]),
                      format_cents(b["balance"]))
    out.print(table)


@accounts_app.command("show")
def accounts_show(
    account: Annotated[str, typer.Argument(help="Patient account number, or provider:<id>.")],
    as_json: JsonFlag = False,
) -> None:
    """One account's balance buckets (in cents with --json), claims and payments."""
    from rcmflow.ops import latest_snapshots

    snap = asyncio.run(latest_snapshots(_servers(_settings()), account)).get(account)
    if snap is None:
        err.print(f"[red]no account {account!r}[/red] (not yet processed, or unknown)")
        raise typer.Exit(1)
    if as_json:
        _print_json(snap)
        return
    out.print(f"[bold]{account}[/bold]  status {snap['status']}  version {snap['version']}  "
              f"entity {snap['entity']}  last event {snap['last_event_at']}")
    table = Table("bucket", "amount", title="balances")
    for bucket, cents in snap["balances"].items():
        table.add_row(bucket, format_cents(cents))
    out.print(table)
    if snap["claims"]:
        claims = Table("claim", "status", "payer", "charged", "adjudications", title="claims")
        for claim in snap["claims"].values():
            claims.add_row(claim["claim_id"], claim["status"], str(claim["payer"]),
                           format_cents(claim["total_charge_cents"]),
                           str(len(claim["adjudications"])))
        out.print(claims)


@accounts_app.command("history")
def accounts_history(
    account: Annotated[str, typer.Argument(help="Patient account number, or provider:<id>.")],
    as_json: JsonFlag = False,
) -> None:
    """The posting deltas emitted for an account, in version order."""
    from rcmflow.ops import posting_history

    deltas = asyncio.run(posting_history(_servers(_settings()), account))
    if as_json:
        _print_json(deltas)
        return
    table = Table("version", "date", "kind", "posting id", "lines", "amount",
                  title=f"{account}: {len(deltas)} postings")
    for d in deltas:
        lines = ", ".join(
            f"{'Dr' if ln['debit_cents'] else 'Cr'} {ln['gl_account']}" for ln in d["lines"]
        )
        total = sum(ln["debit_cents"] for ln in d["lines"])
        table.add_row(str(d["account_version"]), d["effective_date"], d["event_kind"],
                      d["posting_id"], lines, format_cents(total))
    out.print(table)


@dlq_app.command("list")
def dlq_list(
    reason: Annotated[str | None, typer.Option(help="Only this reason_code.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """DLQ records: stage, reason and business context (payloads with `dlq show`)."""
    from rcmflow.ops import dlq_records

    records = asyncio.run(dlq_records(_servers(_settings())))
    if reason:
        records = [r for r in records if r.get("reason_code") == reason]
    if as_json:
        _print_json(records)
        return
    table = Table("dlq id", "severity", "stage", "reason code", "account", "reason",
                  title=f"{len(records)} DLQ records")
    for r in records:
        table.add_row(r["dlq_id"], r["severity"], r["stage"], r["reason_code"],
                      str(r["context"].get("account", "")), r["reason"])
    out.print(table)


@dlq_app.command("show")
def dlq_show(dlq_id: Annotated[str, typer.Argument(help="A dlq_id from `dlq list`.")]) -> None:
    """One DLQ record in full, with its original payload."""
    from rcmflow.ops import dlq_records

    for record in asyncio.run(dlq_records(_servers(_settings()))):
        if record["dlq_id"] == dlq_id:
            _print_json(record)
            return
    err.print(f"[red]no DLQ record {dlq_id!r}[/red]")
    raise typer.Exit(1)


@schema_app.command("events")
def schema_events() -> None:
    """The canonical event JSON Schema (what rcm.events accepts)."""
    from rcmflow.streams.events import events_json_schema

    _print_json(events_json_schema())


@app.command()
def demo() -> None:
    """Print the demo events as JSON lines (what `rcmflow dev --demo` feeds)."""
    from rcmflow.demo import demo_lines

    for _, value in demo_lines():
        sys.stdout.write(value.decode() + "\n")


def _summary(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: snap[k] for k in ("account", "status", "version", "balances")}


def main() -> None:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
