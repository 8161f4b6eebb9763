"""The Tryton fixture on a PostgreSQL reached by URL (``RCMFLOW_TEST_POSTGRES_URL``).

A team with its own PostgreSQL points the ERP tests at it with that variable instead of the
embedded one. This test makes that path real: it starts a PostgreSQL 16 listening on TCP
(pgserver's binaries, but served the way any external server is: host, port, no socket
folder shared with the tests), sets the variable, and runs the whole fixture on it: template
build by ``trytond-admin`` over TCP, a clone, a ``trytond``, real moves posted and read back.
It costs one template build (~26 s) because that template lives in this server only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rcmflow.connectors.erp.base import AlreadyThere, Posted
from rcmflow.runtime.broker import free_port
from rcmflow.streams.postings import PostingDelta
from tests.connectors.erp.conftest import adapter_for
from tests.connectors.erp.feed import real_deltas
from tests.connectors.erp.test_tryton import assert_moves_equal
from tests.connectors.erp.tryton_server import Postgres, TrytonSite


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL on 127.0.0.1:<free port> with no unix socket, as an external one is."""
    import pgserver
    from pgserver._commands import pg_ctl
    from pgserver.utils import ensure_prefix_permissions

    pgdata = tmp_path / "pg"
    # pgserver's own start runs initdb (trust auth) as a non-root user when we are root;
    # then it is restarted on TCP only.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    user = server.system_user
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)
    port = free_port()
    pg_ctl(["-w", "-o", f'-h 127.0.0.1 -p {port} -k ""', "-l", str(pgdata / "tcp.log"),
            "start"], pgdata=pgdata, user=user, timeout=60)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/"
    finally:
        # Any pytest starting meanwhile on this machine makes /tmp/pytest-of-<user> private
        # again (0o700): the server's user must traverse it to stop the server.
        ensure_prefix_permissions(pgdata)
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=user, timeout=30)


async def test_tryton_fixture_on_a_postgres_url(postgres_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCMFLOW_TEST_POSTGRES_URL", postgres_url)
    postgres = Postgres.start(tmp_path)
    assert postgres.server is None and postgres.env == {}  # the URL, not the embedded one
    with psycopg.connect(postgres.conninfo) as conn:  # really over TCP
        assert conn.execute("SELECT inet_server_addr()::text").fetchone() == ("127.0.0.1/32",)

    site = TrytonSite.build(tmp_path / "tryton")
    try:
        assert site.build_s > 0  # built here, on that server
        assert site.template in site.postgres.databases()
        server = site.new_server()
        deltas = [PostingDelta.model_validate_json(v) for _, v in real_deltas(4, seed=5)]
        adapter = adapter_for(server)
        await adapter.open()
        try:
            assert [type(o) for o in await adapter.post_batch(deltas)] == [Posted] * len(deltas)
            again = await adapter.post_batch(deltas)
            assert [type(o) for o in again] == [AlreadyThere] * len(deltas)
        finally:
            await adapter.close()
        assert_moves_equal(server.rpc(), deltas)
    finally:
        site.close()
