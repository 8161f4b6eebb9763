"""The `rcmflow` command: every part of the system, one subcommand each.

Settings come from RCMFLOW_* environment variables (see `rcmflow/runtime/settings.py`);
every command finds the embedded broker through the data dir unless RCMFLOW_BROKER names one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap
import traceback
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Column, Table
from rich.text import Text

from rcmflow.runtime.exit_codes import ExitCode, help_table

# Each command imports what it needs when it runs: `rcmflow --help` and the operator
# listings must not pay for the worker, the facade or the connectors (Faust, FastAPI, hl7apy,
# the FHIR models: over a second). tests/test_cli_imports.py holds the line.
if TYPE_CHECKING:
    from rcmflow.ops.items import ItemState
    from rcmflow.runtime.faults import Faults
    from rcmflow.runtime.kafka_access import Access
    from rcmflow.runtime.kafka_connection import KafkaConnection
    from rcmflow.runtime.settings import Settings

app = typer.Typer(
    help="rcmflow: keeps patient billing and the ERP ledger in agreement, in stream.\n\n"
    "Settings come from RCMFLOW_* environment variables (RCMFLOW_BROKER, RCMFLOW_DATA_DIR, "
    "RCMFLOW_PARTITIONS, RCMFLOW_COA, ...). Start with `rcmflow dev --demo`.",
    epilog=help_table(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(help="Account state from rcm.accounts: heads and items (operators).",
                           no_args_is_help=True)
dlq_app = typer.Typer(help="The exception work queue: every rcm.dlq and rcm.postings.dlq "
                      "record is an item to list, assign, replay or resolve.",
                      no_args_is_help=True)
refunds_app = typer.Typer(
    help="Refund requests and their approvals: a refund posts only once the refund policy "
    "(RCMFLOW_REFUND_POLICY) approves it. Decisions are made as the user `rcmflow ops-login` "
    "signed in.", no_args_is_help=True)
variance_app = typer.Typer(
    help="Contract variance: 835 lines the payer allowed other than the fee schedule "
    "(RCMFLOW_FEE_SCHEDULE) expects, with totals per payer and period.", no_args_is_help=True)
denials_app = typer.Typer(
    help="Denied claims and service lines from rcm.accounts, sorted by the denial routing "
    "table (RCMFLOW_DENIAL_ROUTING): the worklist and the denial figures.",
    no_args_is_help=True)
ingest_app = typer.Typer(help="Publish files to the rcm.* topics.", no_args_is_help=True)
schema_app = typer.Typer(help="Published schemas.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(dlq_app, name="dlq")
app.add_typer(refunds_app, name="refunds")
app.add_typer(variance_app, name="variance")
app.add_typer(denials_app, name="denials")
app.add_typer(ingest_app, name="ingest")
app.add_typer(schema_app, name="schema")

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _metrics_port(setting: str) -> Any:
    """The --metrics-port option of a long-running command; ``setting`` is its default."""
    return typer.Option(
        min=0, max=65535, help="Serve Prometheus metrics at http://RCMFLOW_METRICS_HOST"
        f":PORT/metrics (host 127.0.0.1 unless set); 0: off. Default: {setting} (0: off).")


def _fail(exc: Exception, code: ExitCode = ExitCode.REFUSED) -> NoReturn:
    """Say what was refused (the exception's own text, in red) and exit with ``code``."""
    err.print(f"[red]{exc}[/red]")
    raise typer.Exit(code) from exc


def _settings() -> Settings:
    from rcmflow.runtime.settings import Settings

    try:
        return Settings()
    except ValueError as exc:
        err.print(f"[red]invalid RCMFLOW_* setting:[/red] {exc}")
        raise typer.Exit(ExitCode.REFUSED) from exc


def _faults() -> Faults:
    """Test-only fault injection (RCMFLOW_TEST_FAULTS), read once at start like the
    settings; production never sets it."""
    from rcmflow.runtime.faults import from_environment

    try:
        return from_environment()
    except ValueError as exc:
        _fail(exc)


def _kafka(settings: Settings) -> KafkaConnection:
    from rcmflow.runtime.exceptions import BrokerNotFound

    try:
        return settings.kafka()
    except (BrokerNotFound, ValueError) as exc:
        _fail(exc)


def _connect(settings: Settings, access: Access) -> KafkaConnection:
    """The broker connection, once a preflight showed this principal can log in and has
    the ACLs ``access`` needs; else one line saying what to fix, and exit 2."""
    from rcmflow.runtime.exceptions import KafkaAccessError
    from rcmflow.runtime.kafka_preflight import preflight

    kafka = _kafka(settings)
    try:
        # A broker that is down is left to the command: its own exit code says "run again".
        asyncio.run(preflight(kafka, access, skip_if_unreachable=True))
    except KafkaAccessError as exc:
        err.print(f"[red]rcmflow {escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(ExitCode.REFUSED) from exc
    return kafka


def _ingest(settings: Settings, kind: str) -> KafkaConnection:
    from rcmflow.runtime import kafka_access

    return _connect(settings, kafka_access.ingest_access(kind))


def _reader(command: str, topic: str) -> KafkaConnection:
    from rcmflow.runtime import kafka_access

    return _connect(_settings(), kafka_access.reader_access(command, topic))


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


@app.command()
def dev(
    demo: Annotated[bool, typer.Option(
        "--demo/--no-demo", help="Feed the demo events, then one visit in real formats "
        "(HL7 DFT over MLLP, 837P, 835).")] = False,
) -> None:
    """Start everything on the embedded broker: broker, a worker, the FHIR facade (auth off)
    and the HL7 MLLP listener (+ demo data).

    Runs until Ctrl-C, then stops them all. Ports: RCMFLOW_FACADE_PORT (8080),
    RCMFLOW_MLLP_PORT (2575); /metrics of the worker and the listener on
    RCMFLOW_WORKER_METRICS_PORT and RCMFLOW_MLLP_METRICS_PORT, or free ports (printed).
    Tables live under RCMFLOW_DATA_DIR (default ~/.rcmflow) and are reset at each start,
    because the embedded broker keeps its topics in memory only. Exit 2: a process did not
    start (a port held by another program: the cause and the setting that moves the port);
    5: one of them exited later.
    """
    from rcmflow.cli.dev import run_dev

    raise typer.Exit(run_dev(_settings(), demo=demo, console=out))


@app.command()
def broker() -> None:
    """Run the embedded broker (Tansu, memory only) alone; prints its bootstrap address.

    Creates the rcm.* topics. Other commands on this machine find it through the data dir.
    Exit 2: it did not start; 5: it exited by itself.
    """
    from rcmflow.cli.dev import run_broker

    raise typer.Exit(run_broker(_settings(), console=out))


@app.command()
def worker(
    metrics_port: Annotated[int | None, _metrics_port("RCMFLOW_WORKER_METRICS_PORT")] = None,
) -> None:
    """Run a Faust worker: applies rcm.events to the account tables, emits deltas.

    Start more to scale out: partitions spread across workers of the consumer group. Each
    worker on one machine takes the first free table directory (or RCMFLOW_WORKER_NAME), and
    needs its own --metrics-port. Metrics: rcmflow_worker_events_total by outcome, postings,
    DLQ records, rcm.events lag. Exit 2: bad setting, no broker, the metrics port taken, or
    the broker refused the login or an ACL (at start or later; one line says which).
    """
    from rcmflow.streams.shell.run import run_worker

    raise typer.Exit(run_worker(_settings(), metrics_port=metrics_port, faults=_faults()))


@app.command()
def upgrade() -> None:
    """Rewrite, once, the table records an older rcmflow wrote, so that this version reads them.

    Run it after installing a new version, with every worker stopped, before starting this
    version's workers (a running facade may stay); it uses the workers' settings and Kafka
    user. It rewrites layout-1 accounts in rcm.accounts (the whole account in one record) as
    a head and one record per item, and gives dedup records written before the dedup horizon
    a day (they stay kept for ever). A worker, facade or listing that meets such a record
    refuses it and names this command. Safe to run again: a second run finds nothing to do
    and says so; a run cut short is finished by the next. Docs: operations, "Upgrading".
    Exit 0: done, or nothing to do; 1: records of no known shape were left as they are
    (named); 2: bad setting, no broker, or a missing ACL; 3: the broker failed part-way:
    run it again.
    """
    from aiokafka.errors import KafkaError

    from rcmflow.runtime import kafka_access
    from rcmflow.tables.upgrade import upgrade as run_upgrade

    settings = _settings()
    kafka = _connect(settings, kafka_access.worker_access(settings.app_id))
    try:
        report = asyncio.run(run_upgrade(kafka, settings.app_id, err))
    except (KafkaError, OSError, TimeoutError) as exc:
        err.print(f"[red]rcmflow upgrade: the broker failed ({escape(str(exc))}): run it "
                  "again (it is safe)[/red]")
        raise typer.Exit(ExitCode.BROKER) from exc
    for line in report.lines():
        out.print(line, soft_wrap=True, highlight=False)
    raise typer.Exit(ExitCode.ATTENTION if report.unreadable else ExitCode.OK)


@app.command()
def facade() -> None:
    """Run the FHIR R4 facade (Account, Claim, ClaimResponse, PaymentReconciliation).

    Keeps its own read model of rcm.accounts (SQLite under RCMFLOW_DATA_DIR/facade) and serves
    http://RCMFLOW_FACADE_HOST:RCMFLOW_FACADE_PORT/fhir. Bearer JWTs signed with
    RCMFLOW_FACADE_JWT_KEY for RCMFLOW_FACADE_JWT_AUDIENCE are required, and links name
    RCMFLOW_FACADE_PUBLIC_URL, unless RCMFLOW_FACADE_AUTH=off (development only).
    """
    from rcmflow.facade.server import check_settings, run_facade
    from rcmflow.runtime import kafka_access

    settings = _settings()
    try:
        check_settings(settings)  # before the broker: a bad setting is said first
    except ValueError as exc:
        err.print(f"[red]rcmflow facade: {escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(ExitCode.REFUSED) from exc
    kafka = _connect(settings, kafka_access.facade_access())
    try:
        code = run_facade(settings, kafka, settings.resolve_broker()[1])
    except ValueError as exc:
        _fail(exc)
    raise typer.Exit(code)


@app.command("ops")
def ops_site() -> None:
    """Run the operators' site: health, the work queue, accounts, trace (a browser's view of
    what `rcmflow dlq`, `accounts`, `trace` and `lag` print).

    Serves http://RCMFLOW_OPS_HOST:RCMFLOW_OPS_PORT (127.0.0.1:8081), separate from the
    patient facade. Everyone logs in (`rcmflow ops-user` makes the logins): a viewer reads; an
    operator also sees payloads and replays and resolves items. Put it behind TLS (a reverse
    proxy) anywhere but a laptop: the session cookie is marked Secure only over https.
    """
    from rcmflow.ops.server import run_ops_site
    from rcmflow.runtime import kafka_access

    settings = _settings()
    kafka = _connect(settings, kafka_access.ops_site_access(settings.app_id))
    try:
        code = run_ops_site(settings, kafka)
    except ValueError as exc:
        _fail(exc)
    raise typer.Exit(code)


@app.command("ops-user")
def ops_user(
    name: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ @ -).")],
    role: Annotated[str | None, typer.Option(
        help="viewer (reads) or operator (also replays and resolves, sees payloads).")] = None,
    grant: Annotated[list[str] | None, typer.Option(
        help="A role the refund policy names (refund_approver, refund_manager, ...): the "
        "refunds this user may approve. Repeat for several; --grant '' clears them; "
        "left out: kept as they were.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the login.")] = False,
) -> None:
    """Add a login to the ops site, change its role, grants or password, or remove it.

    The password is asked twice on a terminal, else read as one line from stdin (at least 12
    characters). Logins live in RCMFLOW_OPS_USERS_FILE (default RCMFLOW_DATA_DIR/
    ops-users.json, mode 0600, scrypt hashes); the site reads it at each request, so a change
    holds at once. Exit 2: a bad name, role or password.
    """
    import re

    from rcmflow.ops.exceptions import UsersFileError
    from rcmflow.ops.server import users_of
    from rcmflow.ops.users import GRANT_PATTERN, NAME_PATTERN, ROLES

    users = users_of(_settings())
    try:
        if remove:
            if not users.remove(name):
                err.print(f"[red]no login {name!r}[/red] in {users.path}")
                raise typer.Exit(ExitCode.ATTENTION)
            out.print(f"removed {name}")
            return
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"a login name is 1-64 of letters, digits and . _ @ - ({name!r})")
        if role not in ROLES:
            raise ValueError(f"--role is one of {', '.join(ROLES)}")
        if sys.stdin.isatty():
            password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        else:
            password = sys.stdin.readline().rstrip("\n")
        grants = None if grant is None else tuple(g for g in grant if g)
        for granted in grants or ():
            if not re.fullmatch(GRANT_PATTERN, granted):
                raise ValueError(f"a grant is a role name: lower-case letters, digits and _ "
                                 f"({granted!r})")
        users.set(name, role, password, grants)
    except (ValueError, UsersFileError) as exc:
        err.print(f"[red]rcmflow ops-user: {escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(ExitCode.REFUSED) from exc
    user = users.user(name)
    held = f", granted {', '.join(user.grants)}" if user and user.grants else ""
    out.print(f"{name} is a{'n' if role == 'operator' else ''} {role}{held} ({users.path})")


@app.command()
def erp(
    adapter: Annotated[str, typer.Argument(help="csv, tryton, netsuite, odoo or erpnext.")],
    idle_exit_s: Annotated[float | None, typer.Option(
        help="Exit once nothing arrived for this long and the lag is 0 (tests, catch-up).")
    ] = None,
    metrics_port: Annotated[int | None, _metrics_port("RCMFLOW_ERP_METRICS_PORT")] = None,
) -> None:
    """Post every delta on rcm.postings to an ERP exactly once (its own consumer group).

    An offset is committed only after the ERP accepted the delta (or already had its posting
    id) or the delta went to rcm.postings.dlq with the ERP's reason. ERP outages are retried
    with backoff and a circuit breaker, forever: the connector stalls and its lag grows
    (rcmflow_erp_lag_records on --metrics-port, the progress log and
    DATA_DIR/erp-ADAPTER.status.json). Exit 2: bad argument, the metrics port is taken, or
    the broker refused the login or an ACL (at start or later); 3: the broker is unreachable
    or failing (run it again); 4: the adapter is misconfigured.
    """
    from rcmflow.connectors.erp import ADAPTERS, AdapterConfigError
    from rcmflow.connectors.erp.command import run_erp
    from rcmflow.runtime import kafka_access

    settings = _settings()
    if adapter in ADAPTERS:  # else run_erp says which adapters there are
        _connect(settings, kafka_access.erp_access(settings.app_id, adapter))
    try:
        code = run_erp(settings, adapter, idle_exit_s=idle_exit_s, metrics_port=metrics_port,
                       faults=_faults())
    except ValueError as exc:
        _fail(exc)
    except AdapterConfigError as exc:
        _fail(exc, ExitCode.ERP_CONFIG)
    raise typer.Exit(code)


@app.command()
def reconcile(
    erp_name: Annotated[str | None, typer.Option(
        "--erp", help="Also read this ERP's journal back (csv, tryton, netsuite, odoo, "
        "erpnext), with the same RCMFLOW_ERP_* settings as `rcmflow erp`.")] = None,
    day_from: Annotated[str | None, typer.Option(
        "--from", help="First effective date compared (YYYY-MM-DD).")] = None,
    day_to: Annotated[str | None, typer.Option(
        "--to", help="Last effective date compared (YYYY-MM-DD).")] = None,
    show: Annotated[int, typer.Option(help="Findings listed in the table.")] = 50,
    metrics_file: Annotated[Path | None, typer.Option(
        "--metrics-file", help="Write the result as Prometheus metrics to this file instead "
        "of RCMFLOW_RECONCILE_METRICS_FILE (default DATA_DIR/reconcile.prom; replaced "
        "atomically; for node_exporter's textfile collector and the ops site): "
        "rcmflow_reconcile_findings by cause, rcmflow_reconcile_ok, totals, last run time.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compare source totals, events, posting deltas, account state, the DLQ and the ERP.

    Source totals: what the inbound connectors accepted in money (HL7 charges, 835 paid and
    adjusted, 837 billed, payments, refunds, write-offs; rcm.raw.*, 7 days) against their
    events. Per account and day, per GL account and in total; each difference with its likely
    cause (source amount differs, missing posting, DLQ'd, suspense, unposted, journal entry
    missing/extra, amount differs). Exit 0: everything agrees (suspense is a warning);
    1: something differs; 2: bad arguments or no broker; 4: the ERP adapter is misconfigured.
    """
    from datetime import date

    from rcmflow.audit.exceptions import TooLarge
    from rcmflow.audit.reconcile import build_reader, render
    from rcmflow.audit.reconcile import reconcile as run_reconcile
    from rcmflow.connectors.erp.exceptions import AdapterConfigError
    from rcmflow.runtime import kafka_access
    from rcmflow.streams.chart import load_chart
    from rcmflow.streams.refund_policy import load_refund_policy

    settings = _settings()
    kafka = _connect(settings, kafka_access.reconcile_access())
    try:
        first = date.fromisoformat(day_from) if day_from else None
        last = date.fromisoformat(day_to) if day_to else None
        chart = load_chart(settings.coa)
        policy = load_refund_policy(settings.refund_policy)
        adapter, open_it = build_reader(erp_name, settings, chart) if erp_name else (None, False)
    except ValueError as exc:
        _fail(exc)
    except AdapterConfigError as exc:  # as `rcmflow erp` says of the same settings
        err.print(f"[red]ERP adapter: {exc}[/red]")
        raise typer.Exit(ExitCode.ERP_CONFIG) from exc
    try:
        report = asyncio.run(run_reconcile(
            kafka, chart, adapter=adapter, day_from=first, day_to=last,
            open_adapter=open_it, event_bytes_max=settings.event_bytes_max,
            account_items_max=settings.account_items_max, console=err,
            refund_policy=policy))
    except AdapterConfigError as exc:
        err.print(f"[red]ERP adapter: {exc}[/red]")
        raise typer.Exit(ExitCode.ERP_CONFIG) from exc
    except TooLarge as exc:
        _fail(exc)
    from rcmflow.audit.reconcile_metrics import last_run_path, write_metrics_file

    try:  # the last reconcile, for the ops site and node_exporter
        write_metrics_file(report, metrics_file or last_run_path(settings))
    except OSError as exc:
        _fail(exc)
    if as_json:
        _print_json(report.to_json())
    else:
        render(report, out, show=show)
    raise typer.Exit(ExitCode.ATTENTION if report.errors else ExitCode.OK)


@app.command()
def mllp(
    port: Annotated[int | None, typer.Option(help="TCP port [RCMFLOW_MLLP_PORT, 2575].")] = None,
    host: Annotated[str | None, typer.Option(help="Listen address [RCMFLOW_MLLP_HOST, "
                                             "127.0.0.1].")] = None,
    metrics_port: Annotated[int | None, _metrics_port("RCMFLOW_MLLP_METRICS_PORT")] = None,
) -> None:
    """HL7 v2 listener over MLLP: DFT^P03 / BAR^P01 charges, ADT status, one ACK per message.

    AA only once the raw message and its events are on the broker (acks=all); AE/AR with ERR
    segments, and the message in rcm.dlq, when it is refused; a replay (same MSH-3/4/10 and
    content) gets AA again and publishes nothing. Plain TCP on a loopback address only;
    elsewhere TLS (RCMFLOW_MLLP_TLS_CERT/_KEY, client certificates with
    RCMFLOW_MLLP_TLS_CLIENT_CA/_ALLOWED_SENDERS). Metrics: rcmflow_mllp_messages_total by
    ACK code. Runs until Ctrl-C. Exit 2: bad setting (plain TCP off loopback included), no
    broker, a port taken, or another listener holds this data dir's replay store; 3: the
    broker did not answer at start (run it again once the broker is up).
    """
    from rcmflow.connectors.inbound.hl7.service import run_mllp
    from rcmflow.runtime import kafka_access

    settings = _settings()
    raise typer.Exit(run_mllp(
        settings, _connect(settings, kafka_access.mllp_access()), host or settings.mllp_host,
        settings.mllp_port if port is None else port,
        metrics_port=settings.mllp_metrics_port if metrics_port is None else metrics_port,
        faults=_faults()))


@ingest_app.command("events")
def ingest_events(
    files: Annotated[list[Path], typer.Argument(help="JSON-lines files of canonical events.",
                                                exists=True, dir_okay=False, readable=True)],
) -> None:
    """Publish canonical events (one JSON object per line) to rcm.events, keyed by account.

    Lines that are not JSON objects with an "account" go to rcm.dlq with the file and line.
    Full validation happens in the worker; its rejections go to rcm.dlq too. Exit 1: some
    line went to rcm.dlq; 2: refused before publishing (file too large, a setting, the
    broker's login or ACLs); 3: the broker did not acknowledge (running it again is safe).
    """
    from rcmflow.connectors.inbound.events import ingest_event_files

    settings = _settings()
    raise typer.Exit(ingest_event_files(settings, _ingest(settings, "events"), files,
                                        console=err))


def _exit_codes(*rows: tuple[ExitCode, str]) -> str:
    """The codes one command uses and when; their numbers come from ``ExitCode`` (its one
    table is at the end of `rcmflow --help`)."""
    lines = [textwrap.fill(when, 86, initial_indent=f"  {code.value}  ",
                           subsequent_indent="     ") for code, when in rows]
    return "\n\n\b\nExit codes:\n" + "\n".join(lines)


_FILE_EXIT_CODES = _exit_codes(
    (ExitCode.OK, "everything went through"),
    (ExitCode.ATTENTION, "published, but something went to rcm.dlq (parked sets, bad rows, "
                         "rejected files)"),
    (ExitCode.REFUSED, "refused before publishing (file too large, bad RCMFLOW_* setting, no "
                       "broker, the broker refused the login or this user lacks an ACL)"),
    (ExitCode.BROKER, "the broker did not acknowledge: run the same command again (re-sending "
                      "is safe)"),
)


@ingest_app.command("x12", help=(
    "Publish X12 835 remittances and 837 claims (by ST01) as canonical events.\n\n"
    "Each transaction set is checked on its own: envelope and segment counts, readable "
    "segments, and for 835s the balancing identities (CLP03 - CLP04 = sum of CAS per claim, "
    "BPR02 = sum of CLP04 - sum of PLB per set); for 837s CLM02 = sum of the service lines. "
    "A set that fails is parked whole in rcm.dlq with the failing check and its numbers; the "
    "other sets in the file go through. pyx12 implementation-guide messages are warnings, "
    "kept on the set's rcm.raw.x12 record." + _FILE_EXIT_CODES))
def ingest_x12(
    files: Annotated[list[Path], typer.Argument(help="X12 files (835 and/or 837).",
                                                exists=True, dir_okay=False, readable=True)],
) -> None:
    from rcmflow.connectors.inbound.x12.files import ingest_x12_files

    settings = _settings()
    raise typer.Exit(ingest_x12_files(settings, _ingest(settings, "x12"), files, console=err))


@ingest_app.command("payments", help=(
    "Publish lockbox / portal payments, refunds and write-offs from CSV or JSON lines.\n\n"
    "Columns: type (payment|refund|write_off), account, amount (decimal string, whole cents), "
    "date (YYYY-MM-DD or ISO 8601 with offset), reference (unique per source: the idempotency "
    "key); optional channel, reason (write-offs), to (refunds), from_ar, entity, batch, "
    "currency. Bad rows go to rcm.dlq with their row number and the reason; good rows go "
    "through." + _FILE_EXIT_CODES))
def ingest_payments(
    files: Annotated[list[Path], typer.Argument(help="CSV (header row) or .jsonl files.",
                                                exists=True, dir_okay=False, readable=True)],
    channel: Annotated[str, typer.Option(
        help="Payment channel for rows without one: lockbox, portal, pos, mail, phone.")
    ] = "lockbox",
) -> None:
    from rcmflow.connectors.inbound.payments.ingest import ingest_payment_files

    settings = _settings()
    raise typer.Exit(ingest_payment_files(settings, _ingest(settings, "payments"), files,
                                          channel=channel, console=err))


@ingest_app.command("fhir", help=(
    "Publish FHIR R4 JSON: one resource, a Bundle (batch, transaction, collection) or NDJSON "
    "(.ndjson/.jsonl, one resource per line).\n\n"
    "Each resource is validated with the fhir.resources R4B models. ChargeItem (billable, "
    "billed) -> charge, entered-in-error -> its reversal; a patient's PaymentReconciliation -> "
    "one payment per detail (a negative detail is a refund); PaymentNotice is kept as a "
    "notice. Money must be exact to the cent and in the ledger's currency. A bad entry or "
    "line goes to rcm.dlq with its place and the reason; the others go through."
    + _FILE_EXIT_CODES))
def ingest_fhir(
    files: Annotated[list[Path], typer.Argument(help="FHIR JSON or NDJSON files.",
                                                exists=True, dir_okay=False, readable=True)],
) -> None:
    from rcmflow.connectors.inbound.fhir import ingest_fhir_files
    from rcmflow.streams.chart import load_chart

    settings = _settings()
    try:
        currency = load_chart(settings.coa).currency
    except (OSError, ValueError) as exc:
        err.print(f"[red]chart of accounts (RCMFLOW_COA): {exc}[/red]")
        raise typer.Exit(ExitCode.REFUSED) from exc
    raise typer.Exit(ingest_fhir_files(settings, _ingest(settings, "fhir"), files,
                                       currency=currency, console=err))


@ingest_app.command("hl7", help=(
    "Publish HL7 v2 files: batches (FHS/BHS ... BTS/FTS) or one message per file.\n\n"
    "Each message is handled as over MLLP: DFT/BAR FT1s become charge events, listed ADT/BAR "
    "triggers a status change; a refused message goes to rcm.dlq with the reason its AE/AR "
    "names (printed per message). Messages accepted before (same MSH-3/4/10 and content) "
    "publish nothing again." + _exit_codes(
        (ExitCode.OK, "every message AA"),
        (ExitCode.ATTENTION, "some message AE/AR: its reason is printed and in rcm.dlq"),
        (ExitCode.REFUSED, "refused before publishing (file too large, bad setting, no broker, "
                           "store held, the broker refused the login or this user lacks an "
                           "ACL)"),
        (ExitCode.BROKER, "the broker did not acknowledge: run the same command again "
                          "(re-sending is safe)"))))
def ingest_hl7(
    files: Annotated[list[Path], typer.Argument(help="HL7 v2 files (CR, LF or CRLF).",
                                                exists=True, dir_okay=False, readable=True)],
) -> None:
    from rcmflow.connectors.inbound.hl7.batch import ingest_hl7_files

    settings = _settings()
    raise typer.Exit(ingest_hl7_files(settings, _ingest(settings, "hl7"), files, console=err))


class ConsumeFormat(StrEnum):
    hl7 = "hl7"
    x12 = "x12"
    fhir = "fhir"
    payments = "payments"
    events = "events"


@app.command(help=(
    "Ingest a Kafka topic other systems write (an interface engine's Kafka destination, an "
    "EHR's event bus): each record is one unit of FORMAT, handled by that connector as a "
    "file or an MLLP message is (same mapping, checks, event ids, raw records with source "
    "totals, rcm.dlq reason codes and size bounds). Runs until Ctrl-C / SIGTERM, which "
    "finishes the batch in hand, commits it and stops.\n\n"
    "\b\nFormats (one record is):\n"
    "  hl7       an HL7 v2 message (ER7; CR, LF or CRLF; MLLP bytes are stripped) or an\n"
    "            FHS/BHS batch of them. Would-be AA: raw message + events; AE/AR: raw\n"
    "            message (status refused) + rcm.dlq with the ACK's reason; a replay of a\n"
    "            message this group accepted before publishes nothing\n"
    "  x12       an X12 interchange (835 and/or 837, a file's content)\n"
    "  fhir      a FHIR R4 resource, a Bundle (batch/transaction/collection) or NDJSON\n"
    "  payments  a payment file: CSV with its header row, or JSON lines (--channel)\n"
    "  events    one canonical event (JSON) or JSON lines of them\n\n"
    "Group: --group, default RCMFLOW_APP_ID-consume-FORMAT-TOPIC (rcmflow-consume-hl7-ehr.dft); "
    "start more processes with the same group to share the partitions (hl7: one per data "
    "dir, its replay store). A group with no committed offset starts at the end of the "
    "topic, or at its beginning with --from-beginning.\n\n"
    "Commit rule: a batch's offsets are committed only after every record made of it (raw "
    "records, events, DLQ records) was acknowledged by the broker (acks=all). A crash reads "
    "the uncommitted batch again; the same input makes the same event ids, and the worker's "
    "dedup drops the repeats. A record that cannot be read, is over its format's size bound, "
    "has no value or makes the connector fail goes to rcm.dlq; the next records go on. "
    "Progress (records, events, DLQ records, lag) is logged every RCMFLOW_CONSUME_PROGRESS_S; "
    "metrics (--metrics-port): rcmflow_consume_records_total, _events_total, "
    "_dlq_records_total, _write_failures_total, rcmflow_consume_lag_records." + _exit_codes(
        (ExitCode.OK, "stopped (Ctrl-C, SIGTERM, or --idle-exit reached with lag 0)"),
        (ExitCode.REFUSED, "setup error: bad argument or RCMFLOW_* setting, no such topic, one "
                           "of rcmflow's own topics, no broker configured, the hl7 replay store "
                           "or metrics port taken"),
        (ExitCode.BROKER, "the broker is unreachable, or did not acknowledge a batch after "
                          "RCMFLOW_CONSUME_RETRY_MAX retries (nothing committed past it: start "
                          "again)"))))
def consume(
    fmt: Annotated[ConsumeFormat, typer.Argument(metavar="FORMAT",
                                                 help="hl7, x12, fhir, payments or events.")],
    topic: Annotated[str, typer.Option("--topic", "-t", help="The topic to read.")],
    group: Annotated[str | None, typer.Option(
        help="Consumer group [RCMFLOW_APP_ID-consume-FORMAT-TOPIC].")] = None,
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning", help="A group with no committed offset starts at the topic's "
        "first record instead of its end (committed offsets always win).")] = False,
    idle_exit_s: Annotated[float | None, typer.Option(
        "--idle-exit", min=0, help="Exit 0 once nothing arrived for this many seconds and "
        "the lag is 0 (tests, catch-up runs).")] = None,
    channel: Annotated[str, typer.Option(
        help="payments: channel of rows without one (lockbox, portal, pos, mail, phone).")
    ] = "lockbox",
    metrics_port: Annotated[int | None, _metrics_port("RCMFLOW_CONSUME_METRICS_PORT")] = None,
) -> None:
    from rcmflow.connectors.inbound.consume import default_group, run_consume
    from rcmflow.runtime import kafka_access

    settings = _settings()
    group = group or default_group(settings, fmt.value, topic)
    kafka = _connect(settings, kafka_access.consume_access(fmt.value, topic, group))
    raise typer.Exit(run_consume(settings, kafka, fmt.value, topic, group=group,
                                 from_beginning=from_beginning, idle_exit_s=idle_exit_s,
                                 metrics_port=metrics_port, channel=channel,
                                 faults=_faults()))


@app.command(help=(
    "Watch a drop folder: publish each X12 (835/837) or payment file (.csv, .jsonl) that "
    "has stopped growing, then move it to DIR/done/, or to DIR/rejected/ with a "
    "<name>.reason file saying what was parked and why. Hidden, *.part and *.tmp files are "
    "left alone. Polls every RCMFLOW_WATCH_POLL_S seconds until Ctrl-C." + _exit_codes(
        (ExitCode.OK, "stopped (Ctrl-C, or --once done)"),
        (ExitCode.REFUSED, "DIR is not a folder, bad RCMFLOW_* setting, no broker, or the broker "
                           "refused the login or an ACL (at start, or later: the file is left "
                           "in place)"))))
def watch(
    folder: Annotated[Path, typer.Argument(help="The drop folder.", file_okay=False)],
    once: Annotated[bool, typer.Option("--once", help="Handle what is there now, then stop.")
                    ] = False,
) -> None:
    from rcmflow.connectors.inbound.watch import watch as run_watch

    if not folder.is_dir():
        err.print(f"[red]{folder} is not a folder[/red]")
        raise typer.Exit(ExitCode.REFUSED)
    settings = _settings()
    try:
        code = run_watch(folder, settings, _ingest(settings, "watch"), err, once=once)
    except KeyboardInterrupt:
        code = ExitCode.OK
    raise typer.Exit(code)


_BROKER_DOWN = "the broker was unreachable or stopped answering; run the same command again"


@app.command(help=(
    "Check that every account's ledger buckets (its newest head on rcm.accounts) equal the "
    "sum of its posting deltas on rcm.postings, bucket by bucket in cents; each posting id "
    "counts once (a re-sent delta is the same delta), and a delta newer than its account's "
    "head is in flight, not a mismatch. Names each mismatching account (its number only) "
    "and the difference per bucket. --follow keeps reading both topics and checks each "
    "account as it changes: rcmflow_audit_mismatches_total, "
    "rcmflow_audit_accounts_checked_total, rcmflow_audit_dlq_items (exception items by "
    "reason and entity) and per-entity unapplied credit and suspense on --metrics-port "
    "(default RCMFLOW_AUDIT_METRICS_PORT), one rcm.dlq record (reason "
    "ledger_mismatch) per mismatch; it stops on Ctrl-C / SIGTERM. Reads only (--follow "
    "writes rcm.dlq); scratch stores under RCMFLOW_DATA_DIR/audits, deleted afterwards. "
    "docs/operations/audit.md."
    + _exit_codes((ExitCode.OK, "every account agrees (--follow: stopped as asked)"),
                  (ExitCode.ATTENTION, "an account's buckets differ from its deltas (the "
                                       "accounts and the cents are named)"),
                  (ExitCode.REFUSED, "no broker configured, this user lacks an ACL, or "
                                     "the metrics port is taken"),
                  (ExitCode.BROKER, _BROKER_DOWN))))
def audit(
    follow: Annotated[bool, typer.Option(
        "--follow", help="Keep reading and check each account as it changes, until Ctrl-C "
        "/ SIGTERM.")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="--follow: serve Prometheus metrics at "
        "http://RCMFLOW_METRICS_HOST:PORT/metrics; 0: off. Default: "
        "RCMFLOW_AUDIT_METRICS_PORT (0: off).")] = None,
    as_json: JsonFlag = False,
) -> None:
    from aiokafka.errors import KafkaError

    from rcmflow.audit import ledger
    from rcmflow.runtime import kafka_access

    settings = _settings()
    kafka = _connect(settings, kafka_access.audit_access(follow=follow))
    scratch = settings.data_dir / "audits"
    logging.getLogger("rcmflow").setLevel(
        {"warn": "WARNING"}.get(settings.log_level, settings.log_level.upper()))
    try:
        if follow:
            from rcmflow.streams.denial_routing import load_denial_routing

            try:
                routing = load_denial_routing(settings.denial_routing)  # the denials' metrics
            except ValueError as exc:
                _fail(exc)
            raise typer.Exit(asyncio.run(ledger.follow(
                kafka, scratch, metrics_host=settings.metrics_host,
                metrics_port=settings.audit_metrics_port if metrics_port is None
                else metrics_port, routing=routing)))
        report = asyncio.run(ledger.audit(kafka, scratch, console=err))
    except (KafkaError, TimeoutError) as exc:
        _fail(exc, ExitCode.BROKER)
    if as_json:
        _print_json(report.to_json())
    else:
        report.render(out)
    raise typer.Exit(ExitCode.OK if report.agrees else ExitCode.ATTENTION)


@app.command(help=(
    "Print the digest of the live account state: a SHA-256 over every account's head on "
    "rcm.accounts, in key order, of its version and ledger buckets (integer cents), with the "
    "number of accounts and each bucket's total. Use it to see whether two states are the "
    "same (compare it with `rcmflow rebuild`'s, or with yesterday's); its exact definition "
    "is in docs/operations/rebuild.md, so other tools can recompute it. Reads only; the "
    "heads are held in a scratch store under RCMFLOW_DATA_DIR, deleted afterwards."
    + _exit_codes((ExitCode.OK, "the digest is printed"),
                  (ExitCode.REFUSED, "no broker configured, or this user lacks an ACL"),
                  (ExitCode.BROKER, _BROKER_DOWN))))
def digest(as_json: JsonFlag = False) -> None:
    from aiokafka.errors import KafkaError

    from rcmflow.audit.digest import live_digest
    from rcmflow.streams.topics import ACCOUNTS

    settings = _settings()
    kafka = _reader("digest", ACCOUNTS)
    try:
        found = asyncio.run(live_digest(kafka, settings.data_dir / "rebuilds", console=err))
    except (KafkaError, TimeoutError) as exc:
        _fail(exc, ExitCode.BROKER)
    if as_json:
        _print_json(found.to_json())
    else:
        found.render(out, "live digest (rcm.accounts)")


@app.command(help=(
    "The AR aging report: every account's open insurance AR (per claim, from its submission) "
    "and patient AR (per statement, from the first statement after it arose, else from the "
    "day it arose), in buckets of 0-30, 31-60, 61-90, 91-120, 121-180 and over 180 days, "
    "grouped by payer, payer class or entity. Aged from each account's own posting deltas, "
    "oldest open amount closed first, so each account's aged AR equals its insurance_ar and "
    "patient_ar to the cent (checked: a difference is named and exits 1); more credited than "
    "open is a credit column, not netted away. --as-of D ages the AR the ledger held on D "
    "(deltas dated D or before). Rules and a sample: docs/aging.md."
    + _exit_codes((ExitCode.OK, "the report is printed"),
                  (ExitCode.ATTENTION, "an account's aged AR differs from its head's buckets "
                                       "(its ledger disagrees with its state: `rcmflow audit`)"),
                  (ExitCode.REFUSED, "a bad option, no broker configured, or this user lacks "
                                     "an ACL"),
                  (ExitCode.BROKER, _BROKER_DOWN))))
def aging(
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Age as of this day (YYYY-MM-DD): only deltas dated then or before. "
        "Default: every delta, aged at today (UTC).")] = None,
    by: Annotated[str, typer.Option(help="Group rows by payer, payer_class or entity.")
                  ] = "payer_class",
    detail: Annotated[bool, typer.Option(
        "--detail", help="One row per open claim (insurance) or statement (patient) of each "
        "account, instead of the groups.")] = False,
    as_json: JsonFlag = False,
    as_csv: Annotated[bool, typer.Option(
        "--csv", help="Print CSV (amounts in dollars, two places) for a spreadsheet.")] = False,
    metrics_file: Annotated[Path | None, typer.Option(
        "--metrics-file", help="Also write the aged AR by kind, age and entity as Prometheus "
        "metrics to this file (for node_exporter's textfile collector; replaced "
        "atomically).")] = None,
) -> None:
    from datetime import UTC, date, datetime

    from aiokafka.errors import KafkaError

    from rcmflow.audit.aging import BY, aging_report
    from rcmflow.audit.aging_read import read_ledgers
    from rcmflow.runtime import kafka_access
    from rcmflow.streams.topics import ACCOUNTS, POSTINGS

    if by not in BY:
        _fail(ValueError(f"--by {by!r}: one of {', '.join(BY)}"))
    if as_json and as_csv:
        _fail(ValueError("--json or --csv, not both"))
    try:
        day = None if as_of is None else date.fromisoformat(as_of)
    except ValueError:
        _fail(ValueError(f"--as-of {as_of!r}: a day, YYYY-MM-DD"))
    settings = _settings()
    kafka = _connect(settings, kafka_access.reader_access("aging", ACCOUNTS, POSTINGS))
    try:
        ledgers = asyncio.run(read_ledgers(kafka, console=err))
    except (KafkaError, TimeoutError) as exc:
        _fail(exc, ExitCode.BROKER)
    report = aging_report(ledgers, today=datetime.now(UTC).date(), as_of=day, by=by)
    if metrics_file is not None:
        from rcmflow.audit.aging_metrics import write_aging_metrics

        write_aging_metrics(report, metrics_file)
    if as_json:
        _print_json(report.to_json(detail=detail))
    elif as_csv:
        _aging_csv(report, detail)
    else:
        _aging_table(report, detail)
    differences = report.differences()
    if differences:
        shown = ", ".join(f"{a} {d}" for a, d in list(differences.items())[:10])
        err.print(f"[red]{len(differences)} accounts' aged AR differs from their buckets "
                  f"(head minus aged, cents): {escape(shown)}[/red] (`rcmflow audit`)",
                  soft_wrap=True)
        raise typer.Exit(ExitCode.ATTENTION)


def _aging_table(report: Any, detail: bool) -> None:
    from rcmflow.audit.aging import AGE_BUCKETS, CREDIT
    from rcmflow.streams.money import cents_for_people as money

    columns = [*AGE_BUCKETS, CREDIT]
    amounts = [Column(c, justify="right") for c in (*columns, "total")]
    if detail:
        table = Table("account", "kind", Column("claim / statement", no_wrap=True), "payer",
                      "entity", "from",
                      "days", Column("amount", justify="right"), "bucket",
                      title=f"open AR as of {report.as_of}")
        for i in report.items:
            what = i.claim_id or (f"statement {i.statement}" if i.statement else
                                  ("(unbilled)" if i.kind == "insurance" else "(no statement)"))
            table.add_row(i.account, i.kind, escape(what), escape(str(i.payer or "")),
                          i.entity, str(i.start), str(i.days), money(i.cents), i.bucket)
        out.print(table)
        return
    table = Table("kind", report.by, *amounts,
                  title=f"AR aging as of {report.as_of}, by {report.by}")
    for g in report.groups():
        table.add_row(g["kind"], escape(str(g[report.by])),
                      *(money(g["buckets"][c]) for c in columns), money(g["total"]))
    totals = report.totals()
    table.add_section()
    table.add_row("[bold]total[/bold]", "", *(money(totals["buckets"][c]) for c in columns),
                  f"[bold]{money(totals['total'])}[/bold]")
    out.print(table)
    out.print(f"insurance AR {money(totals['insurance_ar'])}, patient AR "
              f"{money(totals['patient_ar'])}, over {len(report.accounts())} accounts with "
              "open AR", highlight=False)


def _aging_csv(report: Any, detail: bool) -> None:
    import csv

    from rcmflow.audit.aging import AGE_BUCKETS, CREDIT
    from rcmflow.streams.money import cents_text

    writer = csv.writer(sys.stdout, lineterminator="\n")
    if detail:
        writer.writerow(["as_of", "account", "kind", "entity", "claim_id", "payer",
                         "payer_class", "statement", "start", "days", "bucket", "amount"])
        for i in report.items:
            writer.writerow([report.as_of, i.account, i.kind, i.entity, i.claim_id or "",
                             i.payer or "", i.payer_class or "", i.statement or "", i.start,
                             i.days, i.bucket, cents_text(i.cents)])
        return
    columns = [*AGE_BUCKETS, CREDIT]
    writer.writerow(["as_of", "kind", report.by, *columns, "total"])
    for g in report.groups():
        writer.writerow([report.as_of, g["kind"], g[report.by],
                         *(cents_text(g["buckets"][c]) for c in columns), cents_text(g["total"])])
    totals = report.totals()
    writer.writerow([report.as_of, "total", "", *(cents_text(totals["buckets"][c])
                                                  for c in columns), cents_text(totals["total"])])


@app.command(help=(
    "Replay rcm.events from its first offset through the same core, chart and RCMFLOW_* "
    "limits as the worker, into fresh tables in a directory of their own, and print the "
    "digest of the rebuilt state (as `rcmflow digest` defines it) and the replay's rate. "
    "The live workers are untouched: no consumer group is joined, nothing is written to any "
    "rcm.* topic. Use it to prove the live state is derived from the log and has not "
    "drifted (run with --compare while the workers are caught up and no events arrive), "
    "after restoring a worker's store, or before trusting a state after an incident. It "
    "reads the whole topic: minutes per million events (docs/operations/rebuild.md)."
    + _exit_codes((ExitCode.OK, "rebuilt (with --compare: and the digests are equal)"),
                  (ExitCode.ATTENTION, "--compare: the rebuilt and the live digests differ "
                                       "(the first differing account numbers are named)"),
                  (ExitCode.REFUSED, "--into is not an empty directory, a bad RCMFLOW_* "
                                     "setting, no broker, or this user lacks an ACL"),
                  (ExitCode.BROKER, _BROKER_DOWN))))
def rebuild(
    into: Annotated[Path | None, typer.Option(
        "--into", help="Rebuild into this new or empty directory and keep it (RocksDB "
        "stores: accounts, dedup, heads). Default: a temporary directory under "
        "RCMFLOW_DATA_DIR/rebuilds, deleted afterwards.")] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Also read the live digest (rcm.accounts) and exit 1 when it "
        "differs, naming the first accounts that differ.")] = False,
    memory: Annotated[bool, typer.Option(
        "--memory", help="Hold the tables in memory instead of RocksDB: ~20 % faster, but "
        "~0.5 KB per event of the largest partition and ~1 KB per account (RocksDB: ~0.3 "
        "GB whatever the size).")] = False,
    as_json: JsonFlag = False,
) -> None:
    import shutil

    from aiokafka.errors import KafkaError

    from rcmflow.audit.exceptions import NotFresh
    from rcmflow.audit.rebuild import fresh_directory, render
    from rcmflow.audit.rebuild import rebuild as run_rebuild
    from rcmflow.runtime import kafka_access
    from rcmflow.streams.chart import load_chart
    from rcmflow.streams.date_window import DateWindow
    from rcmflow.streams.processor import Processor
    from rcmflow.streams.refund_policy import load_refund_policy
    from rcmflow.streams.topics import ACCOUNTS, EVENTS

    settings = _settings()
    kafka = _connect(settings, kafka_access.reader_access(
        "rebuild", EVENTS, *((ACCOUNTS,) if compare else ())))
    try:
        # The worker's processor, built as streams/shell/worker.py builds it.
        processor = Processor(load_chart(settings.coa),
                              refund_policy=load_refund_policy(settings.refund_policy),
                              event_bytes_max=settings.event_bytes_max,
                              account_items_max=settings.account_items_max,
                              dlq_payload_bytes_max=settings.dlq_payload_bytes_max,
                              dedup_horizon_days=settings.dedup_horizon_days,
                              date_window=DateWindow.from_settings(settings))
        directory, temporary = fresh_directory(into, settings.data_dir)
    except (NotFresh, ValueError, OSError) as exc:
        _fail(exc)
    try:
        rebuilt = asyncio.run(run_rebuild(kafka, processor, directory, memory=memory,
                                          compare=compare, group=settings.app_id,
                                          batch=settings.batch_max, console=err))
    except (KafkaError, TimeoutError) as exc:
        _fail(exc, ExitCode.BROKER)
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
    if as_json:
        _print_json(rebuilt.to_json())
    else:
        render(rebuilt, out, kept=not temporary)
    differs = rebuilt.comparison is not None and not rebuilt.comparison.equal
    raise typer.Exit(ExitCode.ATTENTION if differs else ExitCode.OK)


LimitOption = Annotated[int, typer.Option(
    "--limit", min=0, help="Rows on this page (newest first); 0: every row, read from the "
    "whole topic (slow on a large one).")]
AfterOption = Annotated[str | None, typer.Option(
    "--after", help="The cursor the previous page printed: the next page.")]


def _cursor(after: str | None) -> Any:
    from rcmflow.ops.exceptions import BadCursor
    from rcmflow.ops.log_pages import Cursor

    try:
        return None if after is None else Cursor.decode(after)
    except BadCursor as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True, emoji=False)
        raise typer.Exit(ExitCode.REFUSED) from exc


def _more(command: str, cursor: Any) -> None:
    """The next page's command on stderr (stdout stays the page: a table or JSON)."""
    if cursor is not None:
        # emoji=False: a cursor such as "2:100:100" is not ":100:".
        err.print(f"more: rcmflow {command} --after {cursor.encode()}", soft_wrap=True,
                  highlight=False, markup=False, emoji=False)


@accounts_app.command("list")
def accounts_list(as_json: JsonFlag = False, limit: LimitOption = 50,
                  after: AfterOption = None) -> None:
    """Accounts with their status, version and balance, most recently changed first, a page
    at a time (--limit, --after); --limit 0 lists every account by number."""
    from rcmflow.ops.accounts import heads_page, latest_heads
    from rcmflow.streams.money import cents_for_people
    from rcmflow.streams.topics import ACCOUNTS

    kafka = _reader("accounts list", ACCOUNTS)
    cursor = _cursor(after)
    if limit == 0:
        # The heads only: an account's items are not read.
        heads = [s for _, s in sorted(asyncio.run(latest_heads(kafka)).items())]
        title, following = f"{len(heads)} accounts", None
    else:
        heads, following = asyncio.run(heads_page(kafka, limit=limit, after=cursor))
        title = f"{len(heads)} accounts, most recently changed first"
    if as_json:
        _print_json([_summary(s) for s in heads])
    else:
        table = Table("account", "status", "version", "insurance_ar", "patient_ar",
                      "unapplied_credit", "balance", title=title)
        for snap in heads:
            b = snap["balances"]
            table.add_row(snap["account"], snap["status"], str(snap["version"]),
                          *(cents_for_people(b[k]) for k in ("insurance_ar", "patient_ar",
                                                             "unapplied_credit", "balance")))
        out.print(table)
    _more("accounts list", following)


@accounts_app.command("show")
def accounts_show(
    account: Annotated[str, typer.Argument(help="Patient account number, or provider:<id>.")],
    as_json: JsonFlag = False,
) -> None:
    """One account's balance buckets (in cents with --json), claims, payments and lifecycle
    state with its transition history (its head and items; --json prints them as one
    document: ``lifecycle`` and ``transitions``)."""
    from rcmflow.ops.accounts import latest_snapshots
    from rcmflow.streams.money import cents_for_people
    from rcmflow.streams.topics import ACCOUNTS

    snap = asyncio.run(latest_snapshots(_reader("accounts show", ACCOUNTS), account)).get(account)
    if snap is None:
        err.print(f"[red]no account {account!r}[/red] (not yet processed, or unknown)")
        raise typer.Exit(ExitCode.ATTENTION)
    if as_json:
        _print_json(snap)
        return
    out.print(f"[bold]{account}[/bold]  status {snap['status']}  version {snap['version']}  "
              f"entity {snap['entity']}  last event {snap['last_event_at']}")
    table = Table("bucket", "amount", title="balances")
    for bucket, cents in snap["balances"].items():
        table.add_row(bucket, cents_for_people(cents))
    out.print(table)
    pending = snap.get("refunds_pending") or {}
    if pending.get("count"):
        out.print(f"refunds pending approval: {pending['count']} for "
                  f"{cents_for_people(pending['cents'])} (`rcmflow refunds list --account "
                  f"{account}`)", highlight=False)
    if snap["claims"]:
        claims = Table("claim", "status", "payer", "charged", "adjudications", title="claims")
        for claim in snap["claims"].values():
            claims.add_row(claim["claim_id"], claim["status"], str(claim["payer"]),
                           cents_for_people(claim["total_charge_cents"]),
                           str(len(claim["adjudications"])))
        out.print(claims)
    _print_lifecycle(snap)


def _print_lifecycle(snap: dict[str, Any]) -> None:
    """The account's lifecycle state and its transitions, oldest first (docs/lifecycle.md)."""
    lifecycle = snap.get("lifecycle")
    if not lifecycle:
        out.print("lifecycle: no state yet")
        return
    flag = "" if lifecycle.get("expected", True) else "  [yellow](out of order)[/yellow]"
    out.print(f"lifecycle: [bold]{lifecycle['state']}[/bold] since {lifecycle['since']}{flag}")
    history = Table("at", "from", "to", "days in from", "source event", "order",
                    title="lifecycle history")
    for t in snap.get("transitions") or []:
        seconds = t.get("seconds_in_from")
        days = "" if seconds is None else f"{seconds / 86_400:.1f}"
        order = ("expected" if t["expected"]
                 else f"[yellow]unexpected: {escape(str(t['reason']))}[/yellow]")
        history.add_row(str(t["at"]), str(t["from_state"] or "-"), t["state"], days,
                        escape(f"{t['event_kind']} {t['event_id']}"), order)
    out.print(history)


def _refunds_connect(changes: bool) -> tuple[Settings, KafkaConnection]:
    from rcmflow.runtime import kafka_access

    settings = _settings()
    return settings, _connect(settings, kafka_access.refunds_access(changes=changes))


def _refund_policy(settings: Settings) -> Any:
    from rcmflow.streams.refund_policy import load_refund_policy

    try:
        return load_refund_policy(settings.refund_policy)
    except ValueError as exc:
        _fail(exc)


def _signed_in(settings: Settings) -> Any:
    from rcmflow.ops.exceptions import NotSignedIn, UsersFileError
    from rcmflow.ops.identity import signed_in
    from rcmflow.ops.server import users_of

    try:
        return signed_in(settings, users_of(settings))
    except (NotSignedIn, UsersFileError, ValueError) as exc:
        _fail(exc)


def _refund_row(request: dict[str, Any], policy: Any) -> dict[str, Any]:
    from rcmflow.ops.refunds import age, is_overdue

    return {**request, "age_hours": round(age(request).total_seconds() / 3600, 1),
            "overdue": is_overdue(request, policy)}


@app.command("ops-login")
def ops_login(
    name: Annotated[str, typer.Argument(help="Your login (made by `rcmflow ops-user`).")],
    print_token: Annotated[bool, typer.Option(
        "--print", help="Print the token (for RCMFLOW_OPS_TOKEN) instead of saving it.")
    ] = False,
) -> None:
    """Sign in the command line as an operator tools' user: `rcmflow refunds approve` and
    `reject` act as this user, in the roles the users file gives them at the time.

    The password is asked on a terminal, else read as one line from stdin. The token (signed
    with RCMFLOW_OPS_SESSION_KEY or DATA_DIR/ops-session.key, valid RCMFLOW_OPS_SESSION_HOURS)
    goes to RCMFLOW_OPS_TOKEN_FILE (default ~/.config/rcmflow/ops-token, mode 0600).
    Exit 2: wrong name or password.
    """
    from rcmflow.ops.identity import issue_token, save_token, signing_key, token_path
    from rcmflow.ops.server import users_of

    settings = _settings()
    users = users_of(settings)
    password = (typer.prompt("password", hide_input=True) if sys.stdin.isatty()
                else sys.stdin.readline().rstrip("\n"))
    user = users.login(name, password)
    if user is None:
        _fail(PermissionError(f"wrong name or password (logins: {users.path})"))
    try:
        token = issue_token(user, signing_key(settings), settings.ops_session_hours)
    except ValueError as exc:
        _fail(exc)
    if print_token:
        sys.stdout.write(token + "\n")
        return
    path = token_path(settings)
    save_token(path, token)
    out.print(f"signed in as {user.name} ({', '.join(user.roles)}) for "
              f"{settings.ops_session_hours} h; token in {path}", highlight=False)


@refunds_app.command("list")
def refunds_list(
    state: Annotated[str, typer.Option(
        help="pending (waiting for approval), posted, rejected or all.")] = "pending",
    overdue: Annotated[bool, typer.Option(
        "--overdue", help="Only pending requests older than their entity's SLA "
        "(the policy's sla_hours).")] = False,
    entity: Annotated[str | None, typer.Option(help="Only this facility / entity.")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Refund requests, oldest first: amount, who asked, the rule, approvals so far, age."""
    from rcmflow.ops.refunds import every_request
    from rcmflow.streams.money import cents_for_people

    if state not in ("pending", "posted", "rejected", "all"):
        _fail(ValueError(f"--state {state!r}: one of pending, posted, rejected, all"))
    settings, kafka = _refunds_connect(changes=False)
    policy = _refund_policy(settings)
    rows = [_refund_row(r, policy) for r in asyncio.run(every_request(kafka, account))
            if (state == "all" or r["state"] == state) and (entity is None
                                                            or r["entity"] == entity)]
    if overdue:
        rows = [r for r in rows if r["overdue"]]
    if as_json:
        _print_json(rows)
        return
    table = Table("request", "account", "entity", "amount", "to", "state", "rule",
                  "approvals", "requested by", "age (h)", title="refund requests")
    for r in rows:
        table.add_row(r["event_id"], r["account"], r["entity"], cents_for_people(r["amount_cents"]),
                      r["to"], r["state"] + (" (overdue)" if r["overdue"] else ""), r["rule"],
                      f"{len(r['approvals'])}/{r['approvals_needed']}",
                      r["requested_by"] or f"source {r['source']}", str(r["age_hours"]))
    out.print(table)
    if not rows:
        out.print(f"no {'' if state == 'all' else state + ' '}refund requests")


@variance_app.command("list")
def variance_list(
    payer: Annotated[str | None, typer.Option(help="Only this payer (as the 835 names it).")
                     ] = None,
    since: Annotated[str | None, typer.Option(
        help="Only claims paid on or after this day (YYYY-MM-DD, the 835's payment date).")
    ] = None,
    period: Annotated[str, typer.Option(help="Totals by day, month or year of payment.")
                      ] = "month",
    state: Annotated[str, typer.Option(
        help="all, todo (not yet resolved in the work queue) or done.")] = "all",
    as_json: JsonFlag = False,
) -> None:
    """Variance items (underpaid, overpaid) and claims with unpriced lines, oldest payment
    first, then totals per payer and period. Work them in the exception queue (`rcmflow dlq
    list --stage contract`, `dlq resolve ID --note ...`)."""
    from datetime import date

    from rcmflow.ops.variance import VarianceFilters, every_variance, totals
    from rcmflow.runtime import kafka_access
    from rcmflow.streams.money import cents_for_people

    if period not in ("day", "month", "year"):
        _fail(ValueError(f"--period {period!r}: one of day, month, year"))
    if state not in ("all", "todo", "done"):
        _fail(ValueError(f"--state {state!r}: one of all, todo, done"))
    try:
        since_day = date.fromisoformat(since) if since is not None else None
    except ValueError:
        _fail(ValueError(f"--since {since!r}: a day, YYYY-MM-DD"))
    settings = _settings()
    kafka = _connect(settings, kafka_access.variance_access())
    filters = VarianceFilters(payer=payer, since=since_day, state=state)  # type: ignore[arg-type]
    rows = asyncio.run(every_variance(kafka, filters))
    sums = totals(rows, period)  # type: ignore[arg-type]
    if as_json:
        _print_json({"items": rows, "totals": sums, "period": period})
        return
    table = Table("paid on", "payer", "account", "claim", "line", "code", "expected",
                  "allowed", "paid", "difference", "kind", "state", title="contract variance")
    for r in rows:
        if r["kind"] == "unpriced":
            codes = ", ".join(sorted({str(x.get("procedure_code") or x.get("revenue_code"))
                                      for x in r["lines"]}))
            table.add_row(r["paid_on"], escape(r["payer"]), r["account"], r["claim_id"],
                          f"{r['unpriced_lines']} line(s)", escape(codes), "", "", "", "",
                          "unpriced", r["state"])
            continue
        table.add_row(r["paid_on"], escape(r["payer"]), r["account"], r["claim_id"],
                      str(r["line_id"] or "(claim)"),
                      escape(str(r["procedure_code"] or r["revenue_code"] or "")),
                      cents_for_people(r["expected_cents"]), cents_for_people(r["allowed_cents"]),
                      cents_for_people(r["paid_cents"]), cents_for_people(r["difference_cents"]),
                      r["kind"], r["state"])
    out.print(table)
    summary = Table("payer", period, "underpaid", "underpaid amount", "overpaid",
                    "overpaid amount", "unpriced lines", title="totals per payer and period")
    for t in sums:
        summary.add_row(escape(t["payer"]), t["period"], str(t["underpaid_count"]),
                        cents_for_people(t["underpaid_cents"]), str(t["overpaid_count"]),
                        cents_for_people(t["overpaid_cents"]), str(t["unpriced_lines"]))
    out.print(summary)
    if not rows:
        out.print("no contract variance (is RCMFLOW_FEE_SCHEDULE set for the workers?)")


@refunds_app.command("show")
def refunds_show(
    request_id: Annotated[str, typer.Argument(help="The request's id (its event id).")],
    account: Annotated[str | None, typer.Option(
        help="The account, where the id is on several.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """One refund request: the rule it was filed under and every decision (who, role, when)."""
    from rcmflow.ops.exceptions import NoSuchItem
    from rcmflow.ops.refunds import find_request

    settings, kafka = _refunds_connect(changes=False)
    policy = _refund_policy(settings)
    try:
        request = _refund_row(asyncio.run(find_request(kafka, request_id, account)), policy)
    except NoSuchItem as exc:
        _fail(exc, ExitCode.ATTENTION)
    if as_json:
        _print_json(request)
        return
    _print_refund(request)


def _print_refund(r: dict[str, Any]) -> None:
    from rcmflow.streams.money import cents_for_people

    out.print(f"[bold]{escape(r['event_id'])}[/bold]  account {r['account']}  entity "
              f"{r['entity']}  {cents_for_people(r['amount_cents'])} to the {r['to']}  "
              f"[bold]{r['state']}[/bold]{' (overdue)' if r.get('overdue') else ''}",
              highlight=False)
    out.print(f"requested by {r['requested_by'] or 'source ' + r['source']} at "
              f"{r['requested_at']}{': ' + escape(r['reason']) if r['reason'] else ''}",
              highlight=False)
    roles = " or ".join(r["roles"]) or "no one (the policy approves it)"
    out.print(f"rule {r['rule']} of policy {r['policy_version']}: {r['approvals_needed']} "
              f"approval(s) by {roles}", highlight=False)
    for a in r["approvals"]:
        out.print(f"  approved by {a['by']} as {a['role']} at {a['at']}"
                  f"{': ' + escape(a['note']) if a.get('note') else ''}", highlight=False)
    if r["rejected"]:
        out.print(f"  rejected by {r['rejected']['by']} as {r['rejected']['role']} at "
                  f"{r['rejected']['at']}: {escape(str(r['rejection_reason']))}",
                  highlight=False)


def _decision(request_id: str, account: str | None, decision: str, text: str | None,
              role: str | None, as_json: bool) -> None:
    from rcmflow.ops.exceptions import NoSuchItem, RefundRefused
    from rcmflow.ops.refunds import decide, find_request

    settings, kafka = _refunds_connect(changes=True)
    user = _signed_in(settings)

    async def run() -> dict[str, Any]:
        request = await find_request(kafka, request_id, account)
        return await decide(kafka, user, request, decision,  # type: ignore[arg-type]
                            text=text, role=role,
                            wait_s=settings.dlq_replay_wait_s)
    try:
        result = asyncio.run(run())
    except NoSuchItem as exc:
        _fail(exc, ExitCode.ATTENTION)
    except RefundRefused as exc:
        _fail(exc)
    if as_json:
        _print_json(result)
    else:
        colour = "red" if result["outcome"] == "refused" else "green"
        out.print(f"[{colour}]{result['outcome']}[/{colour}]: {escape(result['detail'])}",
                  highlight=False)
    if result["outcome"] in ("refused", "sent"):
        raise typer.Exit(ExitCode.ATTENTION)


@refunds_app.command("approve")
def refunds_approve(
    request_id: Annotated[str, typer.Argument(help="The request's id.")],
    note: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    role: Annotated[str | None, typer.Option(
        help="The role to act in (one you hold that the request's rule takes); default: "
        "the first such.")] = None,
    account: Annotated[str | None, typer.Option(help="The account, where needed.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a pending refund as the signed-in user; the approval that completes its rule
    posts it (the delta carries the request, the approvers and the policy's rule).

    Refused before sending: not pending, your own request, approved by you already, no role
    the rule takes. Exit 0: taken (posted, or waiting for another approver); 1: the worker
    refused it (the reason is printed) or has not answered yet; 2: refused here."""
    _decision(request_id, account, "approve", note, role, as_json)


@refunds_app.command("reject")
def refunds_reject(
    request_id: Annotated[str, typer.Argument(help="The request's id.")],
    reason: Annotated[str, typer.Option(help="Why (required; kept with the request).")],
    role: Annotated[str | None, typer.Option(help="The role to act in.")] = None,
    account: Annotated[str | None, typer.Option(help="The account, where needed.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Reject a pending refund as the signed-in user (or withdraw your own request): it will
    never post. Exit codes as `approve`."""
    _decision(request_id, account, "reject", reason, role, as_json)


@refunds_app.command("request")
def refunds_request(
    account: Annotated[str, typer.Argument(help="Patient account number.")],
    amount: Annotated[str, typer.Argument(help="Amount, e.g. 125.00.")],
    to: Annotated[str, typer.Option(help="patient or payer.")] = "patient",
    entity: Annotated[str, typer.Option(help="Facility / entity (the policy's rules).")] = "01",
    reason: Annotated[str | None, typer.Option(help="Why, for the approvers.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask for a refund as the signed-in user (who then cannot approve it). Within the
    policy's automatic rule it posts at once; else it waits for approvals."""
    from decimal import Decimal, InvalidOperation

    from rcmflow.ops.exceptions import RefundRefused
    from rcmflow.ops.refunds import request_refund

    if to not in ("patient", "payer"):
        _fail(ValueError("--to is patient or payer"))
    try:
        cents = Decimal(amount)
    except InvalidOperation:
        _fail(ValueError(f"{amount!r} is not an amount"))
    settings, kafka = _refunds_connect(changes=True)
    user = _signed_in(settings)
    try:
        result = asyncio.run(request_refund(
            kafka, user, account=account, amount=cents, to=to,  # type: ignore[arg-type]
            entity=entity, reason=reason, wait_s=settings.dlq_replay_wait_s))
    except (RefundRefused, ValueError) as exc:
        _fail(exc)
    if as_json:
        _print_json(result)
    else:
        request = result.get("request") or {}
        out.print(f"{result['outcome']}: {escape(result['detail'])}"
                  f"{'  (request ' + request['event_id'] + ')' if request else ''}",
                  highlight=False)
    if result["outcome"] in ("refused", "sent"):
        raise typer.Exit(ExitCode.ATTENTION)


def _denial_rows(account: str | None) -> tuple[list[dict[str, Any]], Any]:
    """Every denial, routed by the routing table (RCMFLOW_DENIAL_ROUTING or the shipped one)."""
    from rcmflow.ops.denials import every_denial, routed
    from rcmflow.runtime import kafka_access
    from rcmflow.streams.denial_routing import load_denial_routing
    from rcmflow.streams.topics import ACCOUNTS

    settings = _settings()
    try:
        routing = load_denial_routing(settings.denial_routing)
    except ValueError as exc:
        _fail(exc)
    kafka = _connect(settings, kafka_access.reader_access("denials", ACCOUNTS))
    return routed(asyncio.run(every_denial(kafka, account)), routing), routing


@denials_app.command("list")
def denials_list(
    state: Annotated[str, typer.Option(
        help="open (open or appealed: still worked), appealed, overturned, upheld, resolved, "
        "written_off or all.")] = "open",
    payer: Annotated[str | None, typer.Option(help="Only this payer (835 N1*PR).")] = None,
    category: Annotated[str | None, typer.Option(
        help="Only this category of the routing table (eligibility, coding, ...).")] = None,
    carc: Annotated[str | None, typer.Option(
        help="Only denials with this CARC: CO-16, or a reason in any group: 16.")] = None,
    entity: Annotated[str | None, typer.Option(help="Only this facility / entity.")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    older_than: Annotated[int | None, typer.Option(
        "--older-than", min=0, max=36_500, help="Only denials older than this many days.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Denied claims and service lines, oldest first: payer, codes, category and work queue
    (the routing table's), amount, state, age; then the totals by payer and category and the
    open amounts by age. --json: {"denials": [...], "summary": {...}}."""
    from rcmflow.ops.denials import STATES, matches, summary
    from rcmflow.streams.money import cents_for_people

    if state not in ("open", "all", *STATES):
        _fail(ValueError(f"--state {state!r}: one of open, all, {', '.join(STATES)}"))
    rows, routing = _denial_rows(account)
    if category is not None and category not in routing.categories:
        _fail(ValueError(f"--category {category!r}: the routing table {routing.version} has "
                         f"{', '.join(routing.categories)}"))
    rows = [r for r in rows if matches(r, state=state, payer=payer, category=category,
                                       carc=carc, entity=entity, older_than_days=older_than)]
    figures = summary(rows)
    if as_json:
        _print_json({"routing_version": routing.version, "denials": rows, "summary": figures})
        return
    table = Table("denial", "account", "payer", "entity", "codes", "category", "queue",
                  "amount", "state", "age (d)", title=f"denials ({state})")
    for r in rows:
        table.add_row(escape(r["denial_id"]), r["account"], escape(str(r["payer"] or "-")),
                      r["entity"], escape(" ".join([*r["carcs"], *r["rarcs"]])), r["category"],
                      r["queue"], cents_for_people(r["amount_cents"]), r["state"],
                      str(r["age_days"]))
    out.print(table)
    if not rows:
        out.print(f"no {'' if state == 'all' else state + ' '}denials")
        return
    _print_denial_figures(figures)


def _print_denial_figures(figures: dict[str, Any]) -> None:
    from rcmflow.streams.money import cents_for_people

    total = figures["total"]
    by = Table("payer", "category", "denials", "amount", "open", "open amount", "overturned",
               "upheld", title=f"by payer and category: {total['count']} denials, "
               f"{cents_for_people(total['amount_cents'])}")
    for g in figures["by_payer_category"]:
        by.add_row(escape(g["payer"]), g["category"], str(g["count"]),
                   cents_for_people(g["amount_cents"]), str(g["open_count"]),
                   cents_for_people(g["open_amount_cents"]), str(g["overturned"]),
                   str(g["upheld"]))
    out.print(by)
    ages = Table("age (days)", "open denials", "amount", title="open denials by age")
    for name, cell in figures["open_by_age"].items():
        ages.add_row(name, str(cell["count"]), cents_for_people(cell["amount_cents"]))
    out.print(ages)


@denials_app.command("show")
def denials_show(
    denial_id: Annotated[str, typer.Argument(
        help="The denial's id: the claim id, or <claim id>/<line id> for a line.")],
    account: Annotated[str | None, typer.Option(
        help="The account, where the id is on several.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """One denial: its codes, category and work queue, amount, and every step (the 835s,
    the appeal, the write-off) that moved it."""
    from rcmflow.ops.denials import find_denial
    from rcmflow.ops.exceptions import NoSuchItem
    from rcmflow.streams.money import cents_for_people

    rows, _ = _denial_rows(account)
    try:
        d = find_denial(rows, denial_id, account)
    except NoSuchItem as exc:
        _fail(exc, ExitCode.ATTENTION)
    if as_json:
        _print_json(d)
        return
    line = f" line {d['line_id']}" if d["line_id"] else ""
    out.print(f"[bold]{escape(d['denial_id'])}[/bold]  account {d['account']}  claim "
              f"{escape(d['claim_id'])}{escape(line)}  payer {escape(str(d['payer'] or '-'))}"
              f"  entity {d['entity']}  {cents_for_people(d['amount_cents'])}  "
              f"[bold]{d['state']}[/bold]", highlight=False)
    out.print(f"codes {escape(' '.join(d['carcs']))}"
              f"{' remarks ' + escape(' '.join(d['rarcs'])) if d['rarcs'] else ''}: "
              f"{d['category']} -> queue {d['queue']} ({d['routing_rule']}, routing "
              f"{d['routing_version']})", highlight=False)
    out.print(f"denied {d['denied_at']} ({d['age_days']} days); paid since "
              f"{cents_for_people(d['paid_cents'])}, written off "
              f"{cents_for_people(d['written_off_cents'])}", highlight=False)
    steps = Table("at", "state", "event", title="steps")
    for s in d["steps"]:
        steps.add_row(str(s["at"]), s["state"], escape(f"{s['event_kind']} {s['event_id']}"))
    out.print(steps)


@accounts_app.command("history")
def accounts_history(
    account: Annotated[str, typer.Argument(help="Patient account number, or provider:<id>.")],
    as_json: JsonFlag = False,
) -> None:
    """The posting deltas emitted for an account, in version order."""
    from rcmflow.ops.accounts import posting_history
    from rcmflow.streams.money import cents_for_people
    from rcmflow.streams.topics import POSTINGS

    deltas = asyncio.run(posting_history(_reader("accounts history", POSTINGS), account))
    if not deltas:  # as `accounts show`: an account without postings is not one to list
        err.print(f"[red]no account {account!r}[/red] (not yet processed, or unknown)")
        raise typer.Exit(ExitCode.ATTENTION)
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
                      d["posting_id"], lines, cents_for_people(total))
    out.print(table)


StateOption = Annotated[str, typer.Option(
    "--state", help="todo (default: every item not done: open, assigned, a replay pending or "
    "still failing), all, or one state: open, assigned, replayed, resolved.")]
UserOption = Annotated[str | None, typer.Option(
    "--user", help="Who is acting, kept in the item's history; default RCMFLOW_OPERATOR, "
    "else the OS user.")]
WaitOption = Annotated[float | None, typer.Option(
    "--wait", min=0, help="Seconds to wait for what the replay produced (default "
    "RCMFLOW_DLQ_REPLAY_WAIT_S, 30); past it the outcome is pending and `dlq list`/`show` "
    "read it later.")]


def _dlq(changes: bool) -> tuple[KafkaConnection, Settings]:
    """The broker connection of a `dlq` command: list/show read; assign/replay/resolve also
    write states and re-send (and create rcm.dlq.state where the worker has not)."""
    from rcmflow.ops.workqueue import ensure_state_topic
    from rcmflow.runtime import kafka_access

    settings = _settings()
    kafka = _connect(settings, kafka_access.dlq_access(settings.app_id, changes=changes))
    if changes:
        asyncio.run(ensure_state_topic(kafka, settings.partitions,
                                       settings.replication_factor))
    return kafka, settings


def _operator(settings: Settings, user: str | None) -> str:
    import getpass

    return (user or settings.operator or getpass.getuser()).strip()[:200] or "unknown"


def _moment_option(option: str, text: str | None) -> Any:
    from datetime import UTC, datetime

    from rcmflow.ops.durations import moment
    from rcmflow.ops.exceptions import BadMoment

    if text is None:
        return None
    try:
        return moment(text, datetime.now(UTC))
    except BadMoment as exc:
        _fail(ValueError(f"{option}: {exc}"))


def _filters(*, stage: str | None = None, reason: str | None = None, source: str | None = None,
             entity: str | None = None, account: str | None = None, since: str | None = None,
             older_than: str | None = None, state: str = "todo") -> Any:
    from rcmflow.ops.items import STATE_FILTERS, Filters

    if state not in STATE_FILTERS:
        _fail(ValueError(f"--state {state!r}: one of {', '.join(STATE_FILTERS)}"))
    return Filters(stage=stage, reason=reason, source=source, entity=entity, account=account,
                   since=_moment_option("--since", since),
                   before=_moment_option("--older-than", older_than), state=state)


def _queue_cursor(after: str | None) -> Any:
    from rcmflow.ops.exceptions import BadCursor
    from rcmflow.ops.workqueue import QueueCursor

    try:
        return None if after is None else QueueCursor.decode(after)
    except BadCursor as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True, emoji=False)
        raise typer.Exit(ExitCode.REFUSED) from exc


def _state_text(item: dict[str, Any]) -> str:
    queue = item["queue"]
    text = str(queue["state"])
    replay = queue.get("replay")
    if queue["state"] == "replayed" and replay:
        text += f": {replay['outcome']}"
    if queue["state"] == "assigned" and queue.get("assignee"):
        text += f" to {queue['assignee']}"
    return text


@dlq_app.command("list")
def dlq_list(
    stage: Annotated[str | None, typer.Option(
        help="Only this stage: decode, validate, dedup, rules, posting, contract, facade.")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason_code.")] = None,
    source: Annotated[str | None, typer.Option(
        help="Only this source: the event's source, the connector's format (hl7, x12, ...), "
        "erp:ADAPTER, or the origin (hl7:CHANNEL, file:PATH, a topic).")] = None,
    entity: Annotated[str | None, typer.Option(help="Only this facility / legal entity.")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    since: Annotated[str | None, typer.Option(
        help="Queued since: a duration back from now (90m, 2h, 3d, 1w) or an ISO date.")] = None,
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Queued longer ago than this (2h, 3d) or before an ISO date.")
    ] = None,
    state: StateOption = "todo",
    as_json: JsonFlag = False,
    limit: LimitOption = 50,
    after: AfterOption = None,
) -> None:
    """The exception work queue: items of rcm.dlq and rcm.postings.dlq, newest first, a page
    at a time, with their state and age (payloads and history with `dlq show ID`; a unique
    prefix of the id will do). By default the items still to work (--state todo)."""
    from rcmflow.ops.workqueue import every_item, page

    filters = _filters(stage=stage, reason=reason, source=source, entity=entity,
                       account=account, since=since, older_than=older_than, state=state)
    kafka, _ = _dlq(changes=False)
    cursor = _queue_cursor(after)
    if limit == 0:
        items = asyncio.run(every_item(kafka, filters))
        following, title = None, f"{len(items)} items ({state})"
    else:
        items, following = asyncio.run(page(kafka, filters, limit=limit, after=cursor))
        title = f"{len(items)} items ({state}), newest first"
    if as_json:
        _print_json(items)
    else:
        # Ids whole, even at 80 columns: `dlq show` takes what this prints. Narrower than a
        # table can hold readably, each item is a line and its reason indented below.
        width = max((len(str(r["dlq_id"])) for r in items), default=6)
        rows = [(str(r["dlq_id"]), _state_text(r), r["queue"]["age"],
                 r["stage"] + (" (warning)" if r["severity"] == "warning" else ""),
                 str(r["reason_code"]), str(r["context"].get("account", "")), str(r["reason"]))
                for r in items]
        if out.width < 120:
            out.print(title, highlight=False, markup=False)
            for dlq_id, state_text, age, stage_text, code, acct, why in rows:
                out.print(Text(f"{dlq_id}  {state_text}  {age}  {stage_text}  {code}  "
                               f"{acct}".rstrip()))
                out.print(Padding(Text(why), (0, 0, 0, 4)))
        else:
            table = Table(Column("dlq id", no_wrap=True, min_width=width), "state", "age",
                          "stage", "reason code", "account",
                          Column("reason", overflow="fold", ratio=1),
                          title=title, expand=True, box=box.SIMPLE_HEAD, pad_edge=False,
                          collapse_padding=True)
            for row in rows:
                table.add_row(*row)
            out.print(table)
    _more("dlq list", following)


def _no_item(exc: Exception) -> NoReturn:
    err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True, highlight=False)
    raise typer.Exit(ExitCode.ATTENTION) from exc


@dlq_app.command("show")
def dlq_show(dlq_id: Annotated[str, typer.Argument(
        help="A dlq_id from `dlq list`, or a unique prefix of one.")]) -> None:
    """One item in full, as JSON: the DLQ record with its original payload, and under
    "queue" its state, age, the last replay's outcome (read now if it was pending) and its
    history (who, when, why). Exit 1: no item with that id or prefix, or several (listed)."""
    from rcmflow.ops.exceptions import NoSuchItem
    from rcmflow.ops.workqueue import show

    kafka, _ = _dlq(changes=False)
    try:
        _print_json(asyncio.run(show(kafka, dlq_id)))
    except NoSuchItem as exc:
        _no_item(exc)


def _state_json(state: ItemState) -> dict[str, Any]:
    doc: dict[str, Any] = state.model_dump(mode="json", exclude_none=True)
    for step in doc["history"]:
        (step.get("replay") or {}).pop("watch", None)
    return doc


@dlq_app.command("assign")
def dlq_assign(
    dlq_id: Annotated[str, typer.Argument(help="A dlq_id (or a unique prefix).")],
    to: Annotated[str | None, typer.Option(help="Who works it (default: you).")] = None,
    note: Annotated[str, typer.Option(help="Why, or what is being done.")] = "",
    user: UserOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Take an item, or give it to someone (--to): state "assigned", kept in its history.
    Exit 1: no such item; 2: it is resolved (closed)."""
    from rcmflow.ops.exceptions import NoSuchItem, ReplayRefused
    from rcmflow.ops.workqueue import assign

    kafka, settings = _dlq(changes=True)
    who = _operator(settings, user)
    try:
        state = asyncio.run(assign(kafka, dlq_id, user=who, assignee=to or who, note=note))
    except NoSuchItem as exc:
        _no_item(exc)
    except ReplayRefused as exc:
        _fail(exc)
    if as_json:
        _print_json(_state_json(state))
    else:
        out.print(f"{state.dlq_id}: assigned to {to or who}", highlight=False, markup=False)


@dlq_app.command("resolve")
def dlq_resolve(
    dlq_id: Annotated[str, typer.Argument(help="A dlq_id (or a unique prefix).")],
    note: Annotated[str, typer.Option(
        help="Why it is closed (required): kept with who and when.")],
    reclassify: Annotated[bool, typer.Option(
        "--reclassify/--no-reclassify", help="unmapped_dimension items: post the amount from "
        "suspense to the GL account the chart maps now (once), before closing; "
        "--no-reclassify where it was posted by hand.")] = True,
    user: UserOption = None,
    wait: WaitOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Close an item by hand (fixed at the source, posted by hand, not to be posted): an
    audit record with who, when and the note goes on rcm.dlq.state; `dlq show ID` prints the
    history. Nothing is sent, except for an unmapped_dimension item: its reclassification out
    of suspense (as `dlq replay` sends it; once, however often). Exit 1: no such item; 2: no
    note, or already resolved."""
    from rcmflow.ops.exceptions import NoSuchItem, ReplayRefused
    from rcmflow.ops.workqueue import resolve

    kafka, settings = _dlq(changes=True)
    wait_s = settings.dlq_replay_wait_s if wait is None else wait
    try:
        state = asyncio.run(resolve(kafka, dlq_id, user=_operator(settings, user), note=note,
                                    app_id=settings.app_id, reclassify=reclassify,
                                    wait_s=wait_s))
    except NoSuchItem as exc:
        _no_item(exc)
    except ReplayRefused as exc:
        _fail(exc)
    if as_json:
        _print_json(_state_json(state))
    else:
        if state.last_replay is not None and state.last_replay.event_id is not None:
            out.print(_replay_line(state), highlight=False, markup=False, soft_wrap=True)
        out.print(f"{state.dlq_id}: resolved by {state.history[-1].by}", highlight=False,
                  markup=False)


def _replay_line(state: ItemState) -> str:
    replay = state.last_replay
    assert replay is not None
    text = f"{state.dlq_id}: re-sent to {replay.topic} (partition {replay.partition} offset " \
           f"{replay.offset}): {replay.outcome}"
    if replay.outcome == "pending":
        text += " (not read yet: the worker or the ERP connector is not running or behind; " \
                "`rcmflow dlq show ID` reads it later)"
    elif replay.detail:
        text += f": {replay.detail}"
    if replay.outcome == "failing" and replay.new_dlq_id not in (None, state.dlq_id):
        text += f" (a new item: {replay.new_dlq_id})"
    return text


@dlq_app.command("replay")
def dlq_replay(
    dlq_id: Annotated[str | None, typer.Argument(
        help="A dlq_id (or a unique prefix); or none, with --reason.")] = None,
    reason: Annotated[str | None, typer.Option(
        help="Replay every item still to work with this reason_code (oldest first).")] = None,
    since: Annotated[str | None, typer.Option(
        help="With --reason: only items queued since (2h, 3d, an ISO date).")] = None,
    note: Annotated[str, typer.Option(help="Why (what was fixed), kept in the history.")] = "",
    user: UserOption = None,
    wait: WaitOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-send an item's original input through the normal path, once its cause is fixed (a
    chart mapping or threshold, the ERP's period opened): an event the worker refused goes
    back to rcm.events under its key, marked as a retry (the worker judges it again); a delta
    an ERP refused goes back to rcm.postings. Dedup still holds: replaying twice posts once.
    The item records who, when and what the replay produced: applied, replay (nothing new
    posted) or failing (refused again, with the reason; another reason is a new item).

    An unmapped_dimension item (an amount posted to suspense) sends its reclassification
    instead: suspense -> the GL account the fixed chart maps, a balanced delta, once.

    Not replayable (exit 2, nothing sent): a payload cut at RCMFLOW_DLQ_PAYLOAD_BYTES_MAX,
    input a connector refused before it was an event (re-ingest the corrected source),
    warnings (resolve them with a note).
    Exit 0: every replay applied or was a replay; 1: one is still failing or pending, or
    (with --reason) some item was not replayable."""
    from rcmflow.ops.exceptions import NoSuchItem, ReplayRefused
    from rcmflow.ops.workqueue import replay, replay_matching

    if (dlq_id is None) == (reason is None):
        _fail(ValueError("give a dlq_id or --reason (not both)"))
    if since is not None and reason is None:
        _fail(ValueError("--since goes with --reason"))
    kafka, settings = _dlq(changes=True)
    who = _operator(settings, user)
    wait_s = settings.dlq_replay_wait_s if wait is None else wait
    refused: list[tuple[str, str]] = []
    if dlq_id is not None:
        try:
            states = [asyncio.run(replay(kafka, dlq_id, user=who, app_id=settings.app_id,
                                         note=note, wait_s=wait_s))]
        except NoSuchItem as exc:
            _no_item(exc)
        except ReplayRefused as exc:
            _fail(exc)
        matched = 1
    else:
        filters = _filters(reason=reason, since=since)
        states, refused, matched = asyncio.run(replay_matching(
            kafka, filters, user=who, app_id=settings.app_id, note=note, wait_s=wait_s))
    if as_json:
        _print_json({"replayed": [_state_json(s) for s in states],
                     "not_replayable": [{"dlq_id": i, "why": why} for i, why in refused],
                     "matched": matched})
    else:
        for state in states:
            out.print(_replay_line(state), highlight=False, markup=False, soft_wrap=True)
        for _item, why in refused:
            err.print(f"not replayable: {why}", highlight=False, markup=False, soft_wrap=True)
        if reason is not None:
            out.print(f"{len(states)} of {matched} items with reason {reason} re-sent",
                      highlight=False, markup=False)
    unsettled = any(s.last_replay is None or s.last_replay.outcome in ("pending", "failing")
                    for s in states)
    raise typer.Exit(ExitCode.ATTENTION if unsettled or refused else ExitCode.OK)


def _erp_reader(name: str, settings: Settings) -> tuple[Any, bool]:
    """The ERP adapter `reconcile --erp` reads the journal back with, and whether to open
    it; exit 2 for an unknown adapter, 4 for a misconfigured one."""
    from rcmflow.audit.reconcile import build_reader
    from rcmflow.connectors.erp.exceptions import AdapterConfigError
    from rcmflow.streams.chart import load_chart

    try:
        return build_reader(name, settings, load_chart(settings.coa))
    except ValueError as exc:
        _fail(exc)
    except AdapterConfigError as exc:
        _fail(exc, ExitCode.ERP_CONFIG)


def _broker_failed(command: str, exc: Exception) -> NoReturn:
    err.print(f"[red]rcmflow {command}: {_BROKER_DOWN} ({escape(str(exc) or type(exc).__name__)})"
              "[/red]", soft_wrap=True)
    raise typer.Exit(ExitCode.BROKER) from exc


@app.command(help=(
    "Follow one unit of work through the pipeline by an id: an HL7 MSH-10 control id, an "
    "835 TRN02 trace number, a payment file's batch or a payment's reference, an event id "
    "or a posting id (pst_...). Prints every record that belongs to it, in the pipeline's "
    "order and by time within each stage: the raw records (rcm.raw.*), canonical events "
    "(rcm.events), DLQ records (rcm.dlq), posting deltas (rcm.postings), the ERP's "
    "refusals (rcm.postings.dlq) and each ERP connector's outcome "
    "(taken: its group committed past the delta; rejected: its rcm.postings.dlq record; "
    "pending), and the unit's latency from its first source record to its last timestamped "
    "record. Ids, accounts, amounts, codes, topics, offsets and times only: payloads (which "
    "may hold PHI) with --payloads. Each topic is read once from --since to its end "
    "(progress on stderr). docs/operations/trace-and-lag.md."
    + _exit_codes((ExitCode.OK, "the unit was found"),
                  (ExitCode.ATTENTION, "no record names this id since --since"),
                  (ExitCode.REFUSED, "a bad --since, a bad RCMFLOW_* setting, no broker, or "
                                     "this user lacks an ACL"),
                  (ExitCode.BROKER, _BROKER_DOWN),
                  (ExitCode.ERP_CONFIG, "--erp: the ERP adapter is misconfigured"))))
def trace(
    unit_id: Annotated[str, typer.Argument(
        metavar="ID", help="MSH-10, TRN02, payment batch or reference, event id or posting "
        "id.")],
    since: Annotated[str, typer.Option(
        help="Read records written since: 7d, 12h, 30m, an ISO date or date-time (UTC), or "
        "all (the whole log). The raw topics keep 7 days.")] = "7d",
    payloads: Annotated[bool, typer.Option(
        "--payloads", help="Also print each record's payload (the HL7 message, X12 "
        "segments, payment row, event and DLQ documents): may hold PHI.")] = False,
    erp_name: Annotated[str | None, typer.Option(
        "--erp", help="Also read this ERP's journal back (csv, tryton, netsuite, odoo, "
        "erpnext; the RCMFLOW_ERP_* settings of `rcmflow erp`) and say whether it holds "
        "each delta, under which reference.")] = None,
    as_json: JsonFlag = False,
) -> None:
    from aiokafka.errors import KafkaError

    from rcmflow.ops.trace import TOPICS, parse_since
    from rcmflow.ops.trace import trace as run_trace
    from rcmflow.runtime import kafka_access
    from rcmflow.runtime.progress import progress

    try:
        start = parse_since(since)
    except ValueError as exc:
        _fail(exc)
    settings = _settings()
    kafka = _connect(settings, kafka_access.reader_access("trace", *TOPICS))
    adapter, open_it = _erp_reader(erp_name, settings) if erp_name else (None, False)
    # The ERP's errors only when one is read (the connectors are not a plain trace's to load).
    erp_errors: tuple[type[Exception], ...] = ()
    if adapter is not None:
        from rcmflow.connectors.erp.exceptions import AdapterConfigError

        erp_errors = (AdapterConfigError,)
    try:
        found = asyncio.run(run_trace(kafka, unit_id, app_id=settings.app_id, since=start,
                                      payloads=payloads, erp=adapter, open_erp=open_it,
                                      progress=lambda label, total: progress(err, label,
                                                                             total=total)))
    except (KafkaError, OSError, TimeoutError) as exc:
        _broker_failed("trace", exc)
    except erp_errors as exc:
        _fail(exc, ExitCode.ERP_CONFIG)
    if not found.found:
        err.print(f"[red]nothing names {unit_id!r}[/red] since {since} (records read: "
                  f"{sum(found.read.values()):,}); try --since all, or another id",
                  soft_wrap=True, highlight=False)
        raise typer.Exit(ExitCode.ATTENTION)
    if as_json:
        _print_json(found.to_json())
        return
    from rcmflow.cli.trace_view import render_trace

    render_trace(found, out)


@app.command(help=(
    "Consumer lag: per consumer group, topic and partition, the committed offset, the log "
    "end and the lag, with each group's total. Groups: the workers' (RCMFLOW_APP_ID, on "
    "rcm.events; shown with \"no commits\" before they first commit), each ERP connector's "
    "(APP_ID-erp-ADAPTER, on rcm.postings), each consume group (APP_ID-consume-FORMAT-TOPIC) "
    "and any --group. A group with no commit on a partition reads it from its start (workers, "
    "ERP connectors): its lag is the whole partition. The facade joins no group: its progress "
    "on rcm.accounts is read from its own store (RCMFLOW_FACADE_STORE) when it is on this "
    "machine. audit --follow, reconcile and the listings keep no offsets. "
    "docs/operations/trace-and-lag.md."
    + _exit_codes((ExitCode.OK, "the lag is printed (whatever it is)"),
                  (ExitCode.REFUSED, "a bad RCMFLOW_* setting, no broker, or this user lacks "
                                     "an ACL"),
                  (ExitCode.BROKER, _BROKER_DOWN))))
def lag(
    groups: Annotated[list[str] | None, typer.Option(
        "--group", help="Also show this consumer group (e.g. a consume --group); repeat "
        "for more.")] = None,
    as_json: JsonFlag = False,
) -> None:
    from aiokafka.errors import KafkaError

    from rcmflow.ops.lag import TOPICS, lag_report
    from rcmflow.runtime import kafka_access

    settings = _settings()
    kafka = _connect(settings, kafka_access.reader_access("lag", *TOPICS))
    store = settings.facade_store or settings.data_dir / "facade" / "read.sqlite"
    try:
        report = asyncio.run(lag_report(kafka, app_id=settings.app_id, groups=groups or (),
                                        facade_store=store))
    except (KafkaError, OSError, TimeoutError) as exc:
        _broker_failed("lag", exc)
    if as_json:
        _print_json(report.to_json())
        return
    from rcmflow.cli.trace_view import render_lag

    render_lag(report, out)


@schema_app.command("events")
def schema_events() -> None:
    """The canonical event JSON Schema (what rcm.events accepts)."""
    from rcmflow.streams.events import events_json_schema

    _print_json(events_json_schema())


@schema_app.command("accounts")
def schema_accounts() -> None:
    """The record layout of rcm.accounts: an account's head and one record per item."""
    from rcmflow.streams.layout import accounts_json_schema

    _print_json(accounts_json_schema())


@app.command()
def demo() -> None:
    """Print the demo events as JSON lines (what `rcmflow dev --demo` feeds)."""
    from rcmflow.cli.demo import demo_lines

    for _, value in demo_lines():
        sys.stdout.write(value.decode() + "\n")


def _summary(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: snap[k] for k in ("account", "status", "version", "balances")}


def main() -> None:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app()
    except Exception as exc:  # not a refusal the command names: a bug, with its own exit code
        from rcmflow.streams.exceptions import UpgradeNeeded

        if isinstance(exc, UpgradeNeeded):  # a listing met a record an older rcmflow wrote
            err.print(f"[red]rcmflow: {escape(str(exc))}[/red]", soft_wrap=True)
            sys.exit(ExitCode.REFUSED)
        traceback.print_exc()
        sys.exit(ExitCode.INTERNAL)


if __name__ == "__main__":
    main()
