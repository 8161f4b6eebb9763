"""The cloud ERP adapters by name, for ``rcmflow erp ADAPTER`` and ``rcmflow reconcile``.

Kept apart from ``ADAPTERS`` in ``__init__.py`` only while that file is edited by others.
Merging is one line there: ``ADAPTERS |= CLOUD_ADAPTERS`` (or the three entries in the dict).
"""

from __future__ import annotations

__all__ = ["CLOUD_ADAPTERS", "all_adapters"]

#: Adapter name -> module under ``rcmflow.connectors.erp`` that has ``build(settings, chart)``.
CLOUD_ADAPTERS = {"netsuite": "netsuite", "odoo": "odoo", "erpnext": "erpnext"}


def all_adapters() -> dict[str, str]:
    from rcmflow.connectors.erp import ADAPTERS

    return {**CLOUD_ADAPTERS, **ADAPTERS}
