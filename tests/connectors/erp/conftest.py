"""Fixtures: a real Tryton on PostgreSQL (template built once per session, cloned per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rcmflow.connectors.erp.tryton import TrytonAdapter
from rcmflow.streams.chart import load_chart
from tests.connectors.erp.tryton_server import ADMIN_PASSWORD, TrytonServer, TrytonSite


@pytest.fixture(scope="session")
def tryton_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonSite]:
    """PostgreSQL + the template database (~25 s, once)."""
    site = TrytonSite.build(tmp_path_factory.mktemp("tryton"))
    try:
        yield site
    finally:
        site.close()


@pytest.fixture
def tryton(tryton_site: TrytonSite) -> Iterator[TrytonServer]:
    """A trytond on loopback serving a fresh clone of the template (~1 s)."""
    server = tryton_site.new_server()
    try:
        yield server
    finally:
        server.stop()


def adapter_for(server: TrytonServer, **options: object) -> TrytonAdapter:
    return TrytonAdapter(url=server.url, db=server.db, user="admin", password=ADMIN_PASSWORD,
                         chart=load_chart(), **options)  # type: ignore[arg-type]


def tryton_env(server: TrytonServer) -> dict[str, str]:
    """RCMFLOW_* settings for an `rcmflow erp tryton` process against this server."""
    return {"RCMFLOW_ERP_TRYTON_URL": server.url, "RCMFLOW_ERP_TRYTON_DB": server.db,
            "RCMFLOW_ERP_TRYTON_PASSWORD": ADMIN_PASSWORD}
