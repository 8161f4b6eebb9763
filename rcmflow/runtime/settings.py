"""One settings object, read from ``RCMFLOW_*`` environment variables.

Every limit rcmflow enforces is declared here with its unit in the name and what happens past
it. Built once in ``main()`` and passed down; nothing reads the environment elsewhere (the one
exception is ``faults.py``: test-only fault injection, never set in production).

Limits the pure core also enforces have their number written once, in the core
(``streams/limits.py``, used by its callers that are handed no settings, e.g. reconcile): the
defaults here refer to those constants, never repeat them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rcmflow.runtime.exceptions import BrokerNotFound
from rcmflow.runtime.kafka_connection import KafkaConnection, SaslMechanism, SecurityProtocol
from rcmflow.streams.date_window import EARLIEST_DEFAULT, FUTURE_DAYS_DEFAULT, FUTURE_DAYS_MAX
from rcmflow.streams.dedup import DEFAULT_HORIZON_DAYS
from rcmflow.streams.limits import ACCOUNT_ITEMS_MAX, DLQ_PAYLOAD_BYTES_MAX, EVENT_BYTES_MAX

__all__ = [
    "Settings",
    "default_of",
    "EMBEDDED_BROKER_FILE",
    "EMBEDDED_PREFIX",
    "embedded_broker_info",
    "pid_alive",
]

#: Written by `rcmflow broker` / `rcmflow dev` into the data dir: how other commands find it.
EMBEDDED_BROKER_FILE = "broker.json"
#: Table directories of embedded (memory-only) brokers are named so; they die with the broker.
EMBEDDED_PREFIX = "embedded-"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RCMFLOW_", frozen=True, extra="ignore")

    broker: str | None = Field(
        None,
        description="Kafka bootstrap URL, e.g. kafka://host:9092. Unset: the embedded broker "
        "that `rcmflow dev` or `rcmflow broker` started for this data dir.",
    )
    data_dir: Path = Field(
        Path.home() / ".rcmflow",
        description="Table stores, the embedded broker's address file, demo files.",
    )
    # How every client reaches the broker (rcmflow/runtime/kafka_connection.py): TLS, SASL, mTLS.
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS; with cert/key files: mutual TLS), "
        "SASL_PLAINTEXT or SASL_SSL (TLS + SASL). Every client rcmflow creates uses it."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (with SASL_* protocols)."
    )
    kafka_username: str | None = Field(None, description="SASL user.")
    kafka_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ca_file: Path | None = Field(
        None, description="PEM CA bundle that signs the brokers' certificates; unset: the "
        "system's trust store."
    )
    kafka_cert_file: Path | None = Field(
        None, description="PEM client certificate (mutual TLS), with kafka_key_file."
    )
    kafka_key_file: Path | None = Field(None, description="PEM private key of the client.")
    kafka_key_password: SecretStr | None = Field(None, description="Password of that key.")
    kafka_check_hostname: bool = Field(
        True, description="Check that the broker's certificate names the host connected to."
    )
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of every rcm.* topic.")
    replication_factor: int = Field(1, ge=1, le=7, description="For topics rcmflow creates.")
    coa: Path | None = Field(
        None, description="Chart-of-accounts mapping (YAML); unset: the one shipped."
    )
    refund_policy: Path | None = Field(
        None, description="Refund approval policy (YAML: thresholds, approvals and roles per "
        "entity; docs: refunds); unset: the one shipped. The workers, `rcmflow rebuild` and "
        "`rcmflow reconcile` must read the same file."
    )
    fee_schedule: Path | None = Field(
        None, description="Fee schedule (YAML: expected allowed amounts per payer or payer "
        "class, entity, code and dates; docs: variance) that every processed 835 claim's "
        "lines are compared with; unset: no contract-variance check. An example ships as "
        "streams/fee_schedule.yaml."
    )
    variance_tolerance_cents: int = Field(
        100, ge=0, le=100_000_000, description="A line allowed within this many cents of "
        "its fee schedule rate is no variance (rounding, small contract drift)."
    )
    denial_routing: Path | None = Field(
        None, description="Denial routing table (YAML: CARC/RARC patterns -> category -> "
        "work queue; docs: denials), read by `rcmflow denials`, the ops site and `rcmflow "
        "audit --follow`; unset: the one shipped."
    )
    app_id: str = Field("rcmflow", description="Consumer group and changelog prefix.")
    # The FHIR facade (`rcmflow facade`): its own read model of rcm.accounts, served as R4.
    facade_host: str = Field("127.0.0.1", description="Address the facade listens on.")
    facade_port: int = Field(8080, ge=1, le=65535, description="Port of the facade (HAPI's).")
    facade_base_path: str = Field(
        "/fhir", pattern=r"^(/[A-Za-z0-9._-]+)+$", description="FHIR base path of the facade."
    )
    facade_auth: Literal["jwt", "off"] = Field(
        "jwt", description="jwt: bearer tokens signed with facade_jwt_key. off: anyone reads "
        "everything; for `rcmflow dev` only (logged loudly)."
    )
    facade_jwt_key: SecretStr | None = Field(
        None, description="HMAC secret (HS*) or PEM public key (RS256/ES256) that signs tokens."
    )
    facade_jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = "HS256"
    facade_jwt_audience: str | None = Field(
        None, description="The `aud` every token must carry (e.g. the facade's public URL). "
        "Required when facade_auth is jwt: the facade refuses to start without it."
    )
    facade_jwt_leeway_s: float = Field(
        30.0, ge=0, le=300, description="Clock skew allowed when checking a token's exp, nbf "
        "and iat (seconds)."
    )
    facade_jwt_lifetime_max_s: int = Field(
        3600, ge=60, le=24 * 3600, description="Longest token lifetime accepted: a token whose "
        "exp - iat (or exp - now, without iat) is longer, plus the leeway, is refused (401)."
    )
    facade_public_url: str | None = Field(
        None, description="The FHIR base URL clients reach the facade at, e.g. "
        "https://portal.example.org/fhir (the reverse proxy's). Every link, fullUrl and "
        "Content-Location is built from it, never from the request's Host. Required when "
        "facade_auth is jwt; unset in dev: http://FACADE_HOST:FACADE_PORT/BASE_PATH."
    )
    facade_trusted_proxies: str = Field(
        "127.0.0.1,::1", description="Comma-separated addresses or networks (CIDR) whose "
        "X-Forwarded-For / X-Forwarded-Proto are believed (the reverse proxy's); '' trusts "
        "none, '*' every peer (only where nothing but the proxy reaches the port)."
    )
    # The operators' site (`rcmflow ops`, ops/site.py): separate from the patient facade.
    ops_host: str = Field("127.0.0.1", description="Address the operators' site listens on.")
    ops_port: int = Field(8081, ge=1, le=65535, description="Port of the operators' site.")
    ops_users_file: Path | None = Field(
        None, description="Operators' logins (name, role viewer or operator, scrypt hash), "
        "written by `rcmflow ops-user`; unset: DATA_DIR/ops-users.json."
    )
    ops_session_key: SecretStr | None = Field(
        None, description="HMAC key that signs the site's session cookies and the command "
        "line's logins (at least 32 bytes); unset: a random key kept in "
        "DATA_DIR/ops-session.key (0600, made on first use)."
    )
    ops_token: SecretStr | None = Field(
        None, description="The command line's login token (as `rcmflow ops-login --print` "
        "shows it), for scripts; unset: the token file."
    )
    ops_token_file: Path | None = Field(
        None, description="Where `rcmflow ops-login` keeps the command line's login; unset: "
        "~/.config/rcmflow/ops-token."
    )
    ops_prometheus_url: str | None = Field(
        None, description="Prometheus the ops site's Health view charts from (its HTTP API, "
        "e.g. http://127.0.0.1:9090, scraping deploy/prometheus/prometheus.yml's targets); "
        "unset: current values only."
    )
    reconcile_metrics_file: Path | None = Field(
        None, description="Where `rcmflow reconcile` writes its result as Prometheus metrics "
        "(findings by cause, ok, totals, time; node_exporter's textfile format) and where the "
        "ops site reads the last reconcile; unset: DATA_DIR/reconcile.prom."
    )
    ops_session_hours: int = Field(
        8, ge=1, le=24, description="How long a login lasts (hours)."
    )
    facade_store: Path | None = Field(
        None, description="The facade's SQLite read model; unset: DATA_DIR/facade/read.sqlite."
    )
    facade_count_max: int = Field(
        200, ge=1, le=1000, description="Largest search page (_count is capped to it)."
    )
    facade_request_bytes_max: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, description="Largest request body; past it: 413."
    )
    facade_cors_origins: str = Field("*", description="Comma-separated origins for CORS.")
    facade_validate_every: int = Field(
        1, ge=0, description="FHIR-validate 1 in N resources the facade builds on the way in "
        "(0: never). Validation costs 0.3-1.5 ms per resource, and a record rebuilds one to "
        "four of them; raise N where the facade must keep up with a busier stream."
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="at_least_once is crash-safe on its own (deterministic posting ids, "
        "byte-identical re-sends). exactly_once needs Apache Kafka transactions; the "
        "embedded broker does not support them.",
    )
    worker_name: str | None = Field(
        None, description="Names the worker's table directory; unset: the first free slot."
    )
    batch_max: int = Field(
        1000, ge=1, le=50_000, description="Events per batch: one ack wait per batch."
    )
    batch_wait_s: float = Field(
        0.05, gt=0, le=10, description="Longest wait to fill a batch before processing it."
    )
    event_bytes_max: int = Field(
        EVENT_BYTES_MAX, ge=1024, le=16 * 1024 * 1024,
        description="Largest canonical event; larger ones go to rcm.dlq as too_large.",
    )
    account_items_max: int = Field(
        ACCOUNT_ITEMS_MAX, ge=10,
        description="Charges + claims + adjudications + payments one account may hold; past "
        "it the events that add one go to rcm.dlq (account_items_max). A storage bound: an "
        "event's cost does not depend on it.",
    )
    dedup_horizon_days: int = Field(
        DEFAULT_HORIZON_DAYS, ge=1, le=100 * 366,
        description="How long the worker keeps the ids of applied events to drop replays "
        "(default 4 years: see streams/dedup.py). Past it an event dated before the purged "
        "days goes to rcm.dlq (beyond_dedup_horizon) instead of posting: a replay that old "
        "is never posted twice. Raising it keeps more; what was already purged stays so.",
    )
    state_cache_max: int = Field(
        50_000, ge=0, description="Account heads kept decoded in memory per worker (~2.7 KB "
        "each: 50,000 is ~130 MiB; a miss costs one RocksDB read, ~30 us, bench.growth)."
    )
    standby_replicas: int = Field(
        0, ge=0, le=3, description="Standby copies of each table partition on other workers "
        "(Faust): a moved partition is ready without replaying its changelog. Off by default: "
        "Faust 0.15.3 was seen seeking an unbuilt standby partition to None after a rebalance "
        "interrupted its recovery (the worker dies and restarts; nothing is lost).",
    )
    session_timeout_s: float = Field(
        10.0, gt=1, description="Consumer session timeout (a dead worker is noticed after it)."
    )
    heartbeat_interval_s: float = Field(1.0, gt=0)
    produce_timeout_s: float = Field(
        60.0, gt=0, description="Longest wait for the broker to ack a batch; then the worker "
        "crashes and its partitions move (nothing is committed without the acks)."
    )
    # Plausible dates (streams/date_window.py): every connector and the worker refuse an
    # event dated outside [date_earliest, today + date_future_days] (date_out_of_range).
    date_earliest: date = Field(
        EARLIEST_DEFAULT, description="Earliest event date taken (YYYY-MM-DD, itself "
        "included); older: HL7 AE, X12 set parked, payment row / FHIR resource rejected, "
        "rcm.dlq (date_out_of_range). Lower it to load older history.",
    )
    date_future_days: int = Field(
        FUTURE_DAYS_DEFAULT, ge=0, le=FUTURE_DAYS_MAX, description="Latest event date taken: "
        "today (UTC) + this many days; later: refused like a date before date_earliest.",
    )
    # HL7 v2 inbound (connectors/inbound/hl7): `rcmflow mllp`, `rcmflow ingest hl7`.
    mllp_host: str = Field(
        "127.0.0.1", description="Listen address. Messages carry patient data: plain TCP "
        "is served on a loopback address only; any other address (0.0.0.0) needs TLS "
        "(mllp_tls_cert/key) or mllp_allow_plain_network, else `rcmflow mllp` refuses to start.",
    )
    mllp_tls_cert: Path | None = Field(
        None, description="PEM server certificate (chain) for MLLP over TLS (1.2 or newer), "
        "with mllp_tls_key. Unset: plain TCP (loopback only).",
    )
    mllp_tls_key: Path | None = Field(None, description="PEM private key of mllp_tls_cert.")
    mllp_tls_key_password: SecretStr | None = Field(
        None, description="Password of mllp_tls_key, if it is encrypted."
    )
    mllp_tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle: set, every sender must present a client "
        "certificate it signed (mutual TLS); others are refused at connect.",
    )
    mllp_tls_allowed_senders: list[str] = Field(
        [], description="Client certificate subject CNs or SAN DNS names allowed to send "
        "(JSON list, case-insensitive; needs mllp_tls_client_ca). Empty: any certificate the "
        "client CA signed. A sender not listed is refused at connect (logged, counted).",
    )
    mllp_allow_plain_network: bool = Field(
        False, description="Allow plain TCP MLLP on a non-loopback address: only for a "
        "trusted segment (a TLS proxy such as stunnel in front, a container whose port is "
        "published on the host's loopback, an isolated interface VLAN). Logged at start.",
    )
    mllp_port: int = Field(2575, ge=0, le=65535, description="2575: HL7's registered port.")
    mllp_message_bytes_max: int = Field(
        1024 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="Largest HL7 message; larger: the rest of the frame is read and dropped, "
        "AR + rcm.dlq (too_large, first 4 KB kept), the connection stays open.",
    )
    mllp_connections_max: int = Field(
        256, ge=1, le=10_000, description="Open connections; past it new ones are closed."
    )
    mllp_idle_timeout_s: float = Field(
        3600.0, gt=0, description="A connection silent this long is closed (logged)."
    )
    hl7_write_timeout_s: float = Field(
        30.0, gt=0, description="Broker ack wait per HL7 message; past it: AR, send again."
    )
    hl7_ft1_max: int = Field(
        1000, ge=1, le=10_000,
        description="FT1 segments one HL7 message may carry; more: AE + rcm.dlq (too_many_ft1). "
        "Bounds the raw record's reconcile headers (~250 bytes per FT1).",
    )
    hl7_ft1_types: dict[str, Literal["charge", "credit"]] = Field(
        {"CG": "charge", "CD": "credit", "CR": "credit"},
        description="FT1-6 transaction type -> charge or credit (JSON). Unlisted types: AE.",
    )
    hl7_account_fields: list[Literal["PID-18", "PV1-19"]] = Field(
        ["PID-18", "PV1-19"], min_length=1,
        description="Where the account number is read, first non-empty wins (JSON list).",
    )
    hl7_status_by_trigger: dict[
        str, Literal["open", "discharged", "billed", "collections", "bad_debt", "closed"]
    ] = Field(
        {"A01": "open", "A04": "open", "A03": "discharged", "P01": "open", "P06": "closed"},
        description="ADT/BAR trigger event -> account status change (JSON).",
    )
    hl7_timezone: str = Field(
        "UTC", description="IANA zone of HL7 times sent without an offset (e.g. America/Chicago)."
    )
    hl7_replay_retention_s: int = Field(
        90 * 24 * 3600, ge=3600, description="How long accepted MSH-3/4/10 keys are remembered "
        "for replay detection (older replays are still dropped by the worker's dedup).",
    )
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    # Prometheus metrics (rcmflow/runtime/metrics.py): each long-running process serves its own
    # /metrics on its own port; 0 leaves it off. The facade serves /metrics on facade_port.
    metrics_host: str = Field(
        "127.0.0.1", description="Address the /metrics endpoints of the worker, the ERP "
        "connector and the MLLP listener listen on (labels carry no patient data).",
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="`rcmflow worker` /metrics port; 0: off. Several "
        "workers on one machine need one port each (`rcmflow worker --metrics-port`).",
    )
    erp_metrics_port: int = Field(
        0, ge=0, le=65535, description="`rcmflow erp` /metrics port (lag, posted, DLQ, "
        "breaker); 0: off. One port per connector process.",
    )
    mllp_metrics_port: int = Field(
        0, ge=0, le=65535, description="`rcmflow mllp` /metrics port (messages by ACK "
        "code); 0: off.",
    )
    audit_metrics_port: int = Field(
        0, ge=0, le=65535, description="`rcmflow audit --follow` /metrics port (mismatches, "
        "exception items by reason and entity and the oldest one's age, unapplied credit and "
        "suspense per entity); 0: off.",
    )
    # Inbound files (`rcmflow ingest x12|payments`, `rcmflow watch`): read as streams (memory:
    # bench/RESULTS.md, "Ingest memory per file size"); these bound the work of one file, past
    # them the file is refused (exit 2) or rejected with the reason.
    x12_file_bytes_max: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest X12 file read; larger ones are refused."
    )
    x12_segments_max: int = Field(
        1_000_000, ge=100, description="Segments per X12 transaction set (the unit of work: "
        "memory is ~0.4 KB per segment of the largest set, files are read set by set); a set "
        "past it is parked (x12_too_many_segments), the file's other sets go through."
    )
    x12_guide_validation: bool = Field(
        True, description="Run pyx12's implementation-guide validation (warnings only)."
    )
    x12_guide_bytes_max: int = Field(
        2 * 1024 * 1024, ge=0, description="Largest X12 file guide-validated (pyx12 needs "
        "~0.8 ms and ~3 KB per segment); larger files are read without it, with a warning."
    )
    payments_file_bytes_max: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest payment file read; larger: refused."
    )
    payments_rows_max: int = Field(
        1_000_000, ge=1, description="Rows per payment file; rows past it go to rcm.dlq. The "
        "file is streamed; its duplicate check keeps ~200 bytes per row."
    )
    # FHIR inbound (`rcmflow ingest fhir`, connectors/inbound/fhir): one resource, a Bundle or
    # NDJSON.
    fhir_file_bytes_max: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest FHIR file read; larger: refused (exit "
        "2). Read as a stream: memory is one resource plus ~200 bytes per event."
    )
    fhir_resources_max: int = Field(
        100_000, ge=1, description="Resources (Bundle entries, NDJSON lines) per file; those "
        "past it are not read: one rcm.dlq record says where it stopped."
    )
    fhir_resource_bytes_max: int = Field(
        1024 * 1024, ge=1024, le=3 * 1024 * 1024, description="Largest single resource; "
        "larger: rcm.dlq (fhir_too_large), the other resources of the file go through. At "
        "most 3 MiB: its rcm.raw.fhir record (the resource escaped inside JSON, up to twice "
        "its size) stays under the topic's 8 MiB limit."
    )
    fhir_account_systems: list[str] = Field(
        ["urn:rcmflow:account"], description="Identifier systems whose value is the patient "
        "account number in an Account reference (JSON list); Account/<id> always is."
    )
    dlq_payload_bytes_max: int = Field(
        DLQ_PAYLOAD_BYTES_MAX, ge=1024, le=4 * 1024 * 1024,
        description="Raw input kept in one DLQ record (the rest is cut, and said; the "
        "record's origin names the whole input). At most 4 MiB: a DLQ record, base64 and all, "
        "stays under rcm.dlq's 8 MiB record limit.",
    )
    watch_poll_s: float = Field(
        2.0, gt=0, le=3600, description="`rcmflow watch`: how often the drop folder is listed."
    )
    # The exception work queue (`rcmflow dlq ...`, ops/workqueue.py).
    operator: str | None = Field(
        None, max_length=200, description="Who `rcmflow dlq assign/replay/resolve` record as "
        "the operator when --user is not given; unset: the OS user running the command."
    )
    dlq_replay_wait_s: float = Field(
        30.0, ge=0, le=3600, description="How long `rcmflow dlq replay` waits for the worker "
        "(or the ERP connector) to read the re-sent record and say what it produced; past it "
        "the outcome is pending, and `dlq list`/`dlq show` read it later."
    )

    # Topics other systems write (`rcmflow consume FORMAT --topic T`,
    # connectors/inbound/consume.py):
    # each record is one unit of its format; offsets are committed only after every output
    # of a batch was acknowledged. Unit sizes are bounded by each format's own settings.
    consume_batch_max: int = Field(
        500, ge=1, le=10_000, description="Records taken per fetch; their outputs are "
        "acknowledged together, then their offsets committed (one commit per batch)."
    )
    consume_retry_max: int = Field(
        5, ge=0, le=100, description="Times a batch whose outputs the broker did not "
        "acknowledge (RCMFLOW_PRODUCE_TIMEOUT_S) is sent again before `rcmflow consume` exits "
        "3; nothing past the last acknowledged batch is committed, a restart reads it again."
    )
    consume_backoff_max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest wait before a batch is sent again "
        "(doubling from 0.5 s)."
    )
    consume_progress_s: float = Field(
        10.0, gt=0, le=3600, description="How often `rcmflow consume` logs its progress "
        "(records, events, DLQ records, lag)."
    )
    consume_metrics_port: int = Field(
        0, ge=0, le=65535, description="`rcmflow consume` /metrics port (records, events, "
        "DLQ, lag by format and topic); 0: off. One port per consumer process.",
    )

    # ERP connectors (`rcmflow erp ADAPTER`, connectors/erp): retries never give up (an ERP
    # outage stalls the connector and its lag grows); these bound each attempt and the waits.
    erp_batch_max: int = Field(
        100, ge=1, le=1000, description="Deltas per ERP call (the adapter may cap it lower)."
    )
    erp_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Longest ERP call; past it: a transient failure, retried."
    )
    erp_retry_max: int = Field(
        8, ge=1, le=1000, description="Consecutive failed attempts before the circuit opens; "
        "then one probe per erp_breaker_cooldown_s, forever (nothing is skipped).",
    )
    erp_backoff_base_s: float = Field(0.5, gt=0, le=60, description="First retry wait (jittered).")
    erp_backoff_max_s: float = Field(30.0, gt=0, le=3600, description="Longest retry wait.")
    erp_breaker_cooldown_s: float = Field(
        30.0, gt=0, le=3600, description="Open circuit: wait this long between probes."
    )
    erp_progress_s: float = Field(
        10.0, gt=0, le=3600, description="How often the lag is measured: progress log, "
        "status file and the rcmflow_erp_lag_records metric."
    )
    erp_csv_dir: Path | None = Field(
        None, description="`erp csv`: where the daily journal files go; unset: DATA_DIR/journal."
    )
    erp_csv_dedup_days: int = Field(
        7, ge=1, le=366, description="`erp csv`: days of journal files whose posting ids are "
        "loaded as the duplicate guard; a re-sent delta older than that is written again.",
    )
    erp_tryton_url: str = Field("http://127.0.0.1:8000", description="trytond's base URL.")
    erp_tryton_db: str = Field("tryton", description="Tryton database name.")
    erp_tryton_user: str = Field("admin", description="Tryton login.")
    erp_tryton_password: SecretStr | None = Field(None, description="Tryton password.")
    erp_tryton_journal: str = Field("MISC", description="Code of the Tryton journal used.")
    erp_tryton_companies: dict[str, int] = Field(
        {}, description="Entity -> Tryton company id (JSON); unset entities: the user's company.",
    )
    # The cloud ERPs (connectors/erp/{netsuite,odoo,erpnext}.py). Secrets are SecretStr: never
    # printed, never logged.
    # -- NetSuite (SuiteTalk REST) ---------------------------------------------------------
    erp_netsuite_url: str = Field(
        "", description="REST base, e.g. https://<account-id>.suitetalk.api.netsuite.com.")
    erp_netsuite_token: SecretStr | None = Field(
        None, description="OAuth 2.0 access token (machine-to-machine / client credentials "
        "flow), sent as `Authorization: Bearer`. An expired token answers 401: exit 4.")
    erp_netsuite_subsidiaries: dict[str, str] = Field(
        {}, description="Entity -> NetSuite subsidiary internal id (JSON); unset entities: "
        "erp_netsuite_subsidiary.")
    erp_netsuite_subsidiary: str = Field("1", description="Default subsidiary internal id.")
    # -- Odoo (JSON-2, Odoo 19+) -----------------------------------------------------------
    erp_odoo_url: str = Field("", description="Odoo base URL, e.g. https://erp.example.com.")
    erp_odoo_db: str = Field("", description="Database (X-Odoo-Database); empty: not sent.")
    erp_odoo_api_key: SecretStr | None = Field(
        None, description="API key of a dedicated bot user (`Authorization: bearer`). It "
        "needs accounting rights and create/read on ir.model.data (the duplicate guard).")
    erp_odoo_journal: str = Field("MISC", description="Code of the Odoo journal posted to.")
    erp_odoo_xmlid_module: str = Field(
        "rcmflow", pattern=r"^[a-z0-9_]+$",
        description="ir.model.data module of the posting-id keys (UNIQUE(module, name)).")
    # -- ERPNext (Frappe REST) -------------------------------------------------------------
    erp_erpnext_url: str = Field(
        "", description="Frappe site URL, e.g. https://erp.example.com.")
    erp_erpnext_api_key: SecretStr | None = Field(None, description="API key of the API user.")
    erp_erpnext_api_secret: SecretStr | None = Field(None, description="Its API secret.")
    erp_erpnext_company: str = Field("", description="Default ERPNext company name.")
    erp_erpnext_companies: dict[str, str] = Field(
        {}, description="Entity -> ERPNext company name (JSON); unset: erp_erpnext_company.")
    erp_erpnext_posting_field: str = Field(
        "rcm_posting_id", pattern=r"^[a-z][a-z0-9_]*$",
        description="Custom Field on Journal Entry holding the posting id; it must be "
        "marked Unique (a DB unique index): the adapter refuses to start otherwise.")
    # -- the three cloud ERPs --------------------------------------------------------------
    erp_cloud_page_size: int = Field(
        200, ge=1, le=1000, description="Rows per page when reading a journal back.")
    erp_cloud_batch_max: int = Field(
        50, ge=1, le=1000, description="Deltas per post_batch call (one request each).")

    @field_validator("facade_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL, e.g. "
                             "https://portal.example.org/fhir")
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError("must have no user, query or fragment")
        return value.strip().rstrip("/")

    @field_validator("facade_trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(f"{entry[:60]!r} is not an address or network") from exc
        return ",".join(entries)

    @field_validator("data_dir", "coa", "refund_policy", "fee_schedule", "denial_routing",
                     "facade_store",
                     "erp_csv_dir", "ops_token_file", "kafka_ca_file", "kafka_cert_file",
                     "kafka_key_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def broker_file(self) -> Path:
        return self.data_dir / EMBEDDED_BROKER_FILE

    @property
    def tables_dir(self) -> Path:
        """Worker table stores, one folder per broker identity."""
        return self.data_dir / "tables"

    def broker_url(self) -> str:
        """The broker to talk to: RCMFLOW_BROKER, else the embedded one for this data dir."""
        return self.resolve_broker()[0]

    def resolve_broker(self) -> tuple[str, str]:
        """(Kafka URL, identity): the identity names the table directories of that broker."""
        if self.broker:
            url = self.broker if "://" in self.broker else f"kafka://{self.broker}"
            return url, "kafka-" + re.sub(r"[^A-Za-z0-9.-]+", "_", url.split("://", 1)[1])
        info = embedded_broker_info(self.broker_file)
        if info is None:
            raise BrokerNotFound(
                "no broker: start the embedded one with `rcmflow broker` (or `rcmflow dev`), "
                f"or point RCMFLOW_BROKER at Kafka (looked for {self.broker_file})"
            )
        return f"kafka://{info['bootstrap']}", f"{EMBEDDED_PREFIX}{info['run_id']}"

    def kafka(self) -> KafkaConnection:
        """The broker and the security every client uses (BrokerNotFound if there is none;
        ValueError for an inconsistent security setting)."""
        url = self.broker_url()
        servers = [part.split("://", 1)[-1] for part in url.replace(";", ",").split(",")]
        return KafkaConnection(
            servers=tuple(server for server in servers if server),
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_username,
            password=_secret(self.kafka_password),
            ca_file=self.kafka_ca_file,
            cert_file=self.kafka_cert_file,
            key_file=self.kafka_key_file,
            key_password=_secret(self.kafka_key_password),
            check_hostname=self.kafka_check_hostname,
        )


def default_of(name: str) -> Any:
    """A setting's default, for a limits object built without Settings (a library call, a
    test): its one definition stays on the Settings field."""
    return Settings.model_fields[name].default


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def embedded_broker_info(path: Path) -> dict[str, Any] | None:
    """The running embedded broker recorded at ``path``, or None if there is none."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not pid_alive(int(info.get("pid", 0))):
        return None
    return info


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running (ours or another user's)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
