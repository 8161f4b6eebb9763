"""A real Tryton 8.2 server on PostgreSQL for the ERP tests (recipe: shared/erp/TRYTON.md).

PostgreSQL: ``RCMFLOW_TEST_POSTGRES_URL`` when set (e.g. postgresql://postgres@127.0.0.1:5432/),
else an embedded PostgreSQL 16 from the ``pgserver`` wheel in a temp dir. Never SQLite.

The database is built as a template (trytond-admin activates ``account`` and our
``rcmflow_ext`` module, ~26 s; then the company, a chart with every GL account of rcmflow's
chart-of-accounts file, fiscal years 2025-2027 with monthly periods are created over
JSON-RPC). Its name carries a hash of everything it is built from (trytond versions, the
module, this file, the chart), and the embedded PostgreSQL keeps its data in
``~/.cache/rcmflow/pgserver16``, so later sessions reuse it (a change rebuilds it; set
``RCMFLOW_TEST_TRYTON_REBUILD=1`` to force it). Each test clones it
(``CREATE DATABASE .. TEMPLATE``, ~0.2 s) and gets its own ``trytond`` on a free loopback port.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from rcmflow.connectors.erp.mapping import all_gl_accounts
from rcmflow.connectors.erp.tryton import decode, encode
from rcmflow.runtime.broker import free_port
from rcmflow.runtime.settings import pid_alive
from rcmflow.streams.chart import load_chart

ADMIN_PASSWORD = "admin-pass"
#: Where the embedded PostgreSQL keeps its data between sessions (the template lives there).
PG_CACHE = Path.home() / ".cache" / "rcmflow" / "pgserver16"
START_TIMEOUT_S = 60.0
YEARS = (2025, 2026, 2027)

_CONF = """[database]
uri = {uri}
path = {filestore}
list = False
[session]
timeout = 3600
max_attempt = 1000
max_attempt_ip_network = 100000
[password]
length = 6
"""


def _bin(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else name


@dataclass
class Postgres:
    """Where PostgreSQL is: a psycopg conninfo for admin SQL, and trytond's URI and env."""

    conninfo: str
    tryton_uri: str
    env: dict[str, str]
    server: Any = None

    @classmethod
    def start(cls, workdir: Path) -> Postgres:
        url = os.environ.get("RCMFLOW_TEST_POSTGRES_URL")
        if url:
            base = url.rsplit("/", 1)[0] + "/"
            return cls(conninfo=base + "postgres", tryton_uri=base, env={})
        import pgserver  # the PyPI wheel: PostgreSQL 16 binaries inside

        pgdata = PG_CACHE  # short enough for the unix socket that lives in it
        pgdata.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        return cls(conninfo=f"host={pgdata} user=postgres dbname=postgres",
                   tryton_uri="postgresql://postgres@/", env={"PGHOST": str(pgdata)},
                   server=server)

    def sql(self, statement: str) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def databases(self) -> set[str]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}

    def clone(self, name: str, template: str) -> None:
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def drop(self, name: str, force: bool = True) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}"' + (" WITH (FORCE)" if force else ""))

    def drop_stray_clones(self, template: str) -> None:
        """Clones of sessions that died (their pid is in the name) and templates of older
        sources are dropped (the disk stays bounded)."""
        for name in self.databases():
            found = re.fullmatch(r"rcm_(\d+)_[0-9a-f]+", name)
            old = re.fullmatch(r"rcm_tpl_[0-9a-f]{12}", name) and name != template
            if old:
                try:
                    self.drop(name, force=False)  # in use by another session: kept
                except psycopg.Error:
                    pass
            elif found and not pid_alive(int(found.group(1))):
                try:
                    self.drop(name)
                except psycopg.Error:
                    pass

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()  # stops it when no other session uses it; data stays


@dataclass
class Rpc:
    """A small synchronous JSON-RPC client for fixtures and assertions."""

    url: str
    db: str
    session: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    _ids: Any = field(default_factory=itertools.count)

    def call(self, method: str, params: list[Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.session:
            headers["Authorization"] = "Session " + self.session
        body = encode({"id": next(self._ids), "method": method, "params": params})
        response = httpx.post(f"{self.url}/{self.db}/rpc/", content=body, headers=headers,
                              timeout=60)
        response.raise_for_status()
        doc = decode(response.content)
        if "error" in doc:
            raise RuntimeError(f"{method}: {doc['error']}")
        return doc["result"]

    def login(self) -> Rpc:
        user, key, _ = self.call("common.db.login",
                                 ["admin", {"password": ADMIN_PASSWORD}, "en"])
        self.session = base64.b64encode(f"admin:{user}:{key}".encode()).decode()
        self.context = self.call("model.res.user.get_preferences", [True, {}])
        return self

    def model(self, model: str, method: str, *args: Any) -> Any:
        return self.call(f"model.{model}.{method}", [*args, self.context])


@dataclass
class TrytonServer:
    postgres: Postgres
    workdir: Path
    db: str
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        conf = self.workdir / "trytond.conf"
        if not conf.exists():
            (self.workdir / "filestore").mkdir(parents=True, exist_ok=True)
            conf.write_text(_CONF.format(uri=self.postgres.tryton_uri,
                                         filestore=self.workdir / "filestore"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RCMFLOW_", "TRYTON"))}
        env |= self.postgres.env | {"TRYTOND_CONFIG": str(conf)}
        return env

    def start(self) -> TrytonServer:
        """Start trytond serving this database (always -d: see TRYTON.md §6)."""
        self.port = self.port or free_port()
        log = open(self.workdir / f"trytond-{self.db}.log", "ab")
        self.process = subprocess.Popen(
            [_bin("trytond"), "-d", self.db], stdout=log, stderr=subprocess.STDOUT,
            env=self._env() | {"TRYTOND_WEB__LISTEN": f"127.0.0.1:{self.port}"},
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"trytond exited: {self.log_tail()}")
            try:
                version = Rpc(self.url, "").call("common.server.version", [])
                if version:
                    return self
            except (httpx.HTTPError, RuntimeError):
                time.sleep(0.1)
        raise RuntimeError(f"trytond did not answer in {START_TIMEOUT_S}s: {self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def kill(self) -> None:
        """kill -9 the server (and anything it started): transactions in flight are lost."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / f"trytond-{self.db}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def rpc(self) -> Rpc:
        return Rpc(self.url, self.db).login()

    def admin(self, *args: str) -> None:
        """trytond-admin on this database (it must not be served meanwhile)."""
        passfile = self.workdir / "admin.pass"
        passfile.write_text(ADMIN_PASSWORD + "\n")
        done = subprocess.run(
            [_bin("trytond-admin"), "-d", self.db, *args],
            env=self._env() | {"TRYTONPASSFILE": str(passfile)},
            capture_output=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"trytond-admin failed: {done.stdout[-3000:]!r} "
                               f"{done.stderr[-3000:]!r}")


def template_name() -> str:
    """rcm_tpl_<hash of what the template is built from>."""
    spec = importlib.util.find_spec("rcmflow.connectors.erp.tryton_module")  # not imported:
    assert spec is not None and spec.submodule_search_locations  # it needs a trytond pool
    digest = hashlib.sha256()
    for dist in ("trytond", "trytond_account", "trytond_company", "trytond_currency"):
        digest.update(f"{dist}={importlib.metadata.version(dist)};".encode())
    module_dir = Path(spec.submodule_search_locations[0])
    for path in sorted(module_dir.iterdir()):
        if path.is_file() and path.suffix in (".py", ".cfg", ".xml"):
            digest.update(path.name.encode() + path.read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update(load_chart().model_dump_json().encode())
    return f"rcm_tpl_{digest.hexdigest()[:12]}"


def _account_kind(code: str) -> str:
    if code in {"1200", "1210"}:
        return "receivable"
    return {"1": "asset", "2": "liability", "4": "revenue", "6": "expense"}.get(code[0], "asset")


def bootstrap_ledger(rpc: Rpc) -> dict[str, int]:
    """Company (USD), a chart with every GL code of the chart file, fiscal years 2025-2027."""
    usd, = rpc.model("currency.currency", "create", [{
        "name": "U.S. Dollar", "code": "USD", "symbol": "$", "numeric_code": "840",
        "rounding": Decimal("0.01"), "digits": 2}])
    party, = rpc.model("party.party", "create", [{"name": "General Hospital (entity 01)"}])
    company, = rpc.model("company.company", "create", [{
        "party": party, "currency": usd, "timezone": "America/New_York"}])
    user = rpc.model("res.user", "search", [("login", "=", "admin")], 0, None, None)
    rpc.model("res.user", "write", user, {"companies": [["add", [company]]],
                                          "company": company})
    rpc.context = rpc.call("model.res.user.get_preferences", [True, {}])

    def acct_type(**values: Any) -> int:
        created: int = rpc.model("account.account.type", "create",
                                 [{"company": company, **values}])[0]
        return created

    root = acct_type(name="Hospital")
    balance = acct_type(name="Balance sheet", parent=root, statement="balance")
    income = acct_type(name="Income statement", parent=root, statement="income")
    types = {
        "receivable": acct_type(name="Receivables", parent=balance, statement="balance",
                                assets=True, receivable=True),
        "asset": acct_type(name="Cash and other assets", parent=balance, statement="balance",
                           assets=True),
        "liability": acct_type(name="Liabilities", parent=balance, statement="balance"),
        "revenue": acct_type(name="Revenue and contra-revenue", parent=income,
                             statement="income", revenue=True),
        "expense": acct_type(name="Expenses", parent=income, statement="income",
                             expense=True),
    }
    chart_root, = rpc.model("account.account", "create", [{"name": "Hospital chart",
                                                           "company": company}])
    codes = sorted(all_gl_accounts(load_chart()))
    ids = rpc.model("account.account", "create", [
        {"name": f"GL {code}", "code": code, "company": company, "parent": chart_root,
         "type": types[_account_kind(code)]} for code in codes])
    seq_type = rpc.model("ir.model.data", "get_id", "account", "sequence_type_account_move")
    for year in YEARS:
        seq, = rpc.model("ir.sequence.strict", "create", [{
            "name": f"GL {year}", "sequence_type": seq_type, "company": company,
            "prefix": f"{year}-", "padding": 6}])
        fy, = rpc.model("account.fiscalyear", "create", [{
            "name": str(year), "company": company, "move_sequence": seq,
            "start_date": date(year, 1, 1), "end_date": date(year, 12, 31)}])
        rpc.model("account.fiscalyear", "create_period", [fy])
    return dict(zip(codes, ids, strict=True))


@dataclass
class TrytonSite:
    """Session state: PostgreSQL, the template, and a factory for per-test servers."""

    postgres: Postgres
    workdir: Path
    template: str
    servers: list[TrytonServer] = field(default_factory=list)
    #: Seconds the template build took in this session (0: reused).
    build_s: float = 0.0

    @classmethod
    def build(cls, workdir: Path) -> TrytonSite:
        """PostgreSQL and the template: reused when it exists, else built (under a lock)."""
        workdir.mkdir(parents=True, exist_ok=True)
        postgres = Postgres.start(workdir)
        site = cls(postgres, workdir, template_name())
        lock_path = (PG_CACHE.parent if postgres.server is not None
                     else Path(tempfile.gettempdir())) / f"{site.template}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
            postgres.drop_stray_clones(site.template)
            rebuild = os.environ.get("RCMFLOW_TEST_TRYTON_REBUILD") == "1"
            if rebuild or site.template not in postgres.databases():
                site._build_template()
        return site

    def _build_template(self) -> None:
        started = time.monotonic()
        wip = self.template + "_wip"
        self.postgres.drop(wip)
        self.postgres.sql(f"CREATE DATABASE \"{wip}\" ENCODING 'UTF8' TEMPLATE template0")
        server = TrytonServer(self.postgres, self.workdir, wip)
        server.admin("-u", "account", "rcmflow_ext", "--activate-dependencies",
                     "--email", "admin@example.com")
        server.start()
        try:
            bootstrap_ledger(server.rpc())
        finally:
            server.stop()
        self.postgres.drop(self.template)
        self.postgres.sql(f'ALTER DATABASE "{wip}" RENAME TO "{self.template}"')
        self.build_s = round(time.monotonic() - started, 1)

    def new_server(self) -> TrytonServer:
        name = f"rcm_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.postgres.clone(name, self.template)
        server = TrytonServer(self.postgres, self.workdir, name).start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()
            try:
                self.postgres.drop(server.db)
            except psycopg.Error:
                pass
        self.postgres.stop()
