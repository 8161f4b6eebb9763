"""Reconcile's tests read back a real Tryton: the ERP tests' fixtures."""

from tests.connectors.erp.conftest import tryton, tryton_site

__all__ = ["tryton", "tryton_site"]
