"""``rcmflow_ext``: the Tryton module the ``tryton`` adapter needs on the Tryton server.

Stock ``account.move`` has no unique external key, so a search-then-create has a race and a
crash window. This module adds ``account.move.external_id`` with a PostgreSQL
``UNIQUE (company, external_id)`` constraint and one RPC, ``post_external(values_list)``,
that in ONE transaction finds the moves already there for the keys, creates the missing ones
and posts every draft among them. Installed with rcmflow (entry point ``trytond.modules``:
``rcmflow_ext``); activate it with ``trytond-admin -d DB -u rcmflow_ext``.

Imported only by trytond (it needs trytond and trytond_account); rcmflow itself never
imports it.
"""

from __future__ import annotations

from trytond.pool import Pool

from rcmflow.connectors.erp.tryton_module.move import Move

__all__ = ["register"]


def register() -> None:
    # Registered here, not in tryton.cfg: tryton.cfg class names resolve under
    # trytond.modules.<name>, and this package lives inside rcmflow.
    Pool.register(Move, module="rcmflow_ext", type_="model")
