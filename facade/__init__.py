"""FHIR R4 read API for patient portals : Account, Claim, ClaimResponse and
PaymentReconciliation built from the compacted ``rcm.accounts`` records (heads and items).

``store`` (SQLite read model) · ``feed`` (rcm.accounts → store) · ``resources`` (records →
FHIR) · ``params`` (the search parameter table) · ``auth`` (bearer JWT scopes) · ``errors``
(OperationOutcome everywhere) · ``app`` (routes) · ``docs`` (API pages, local assets) ·
``server`` (`rcmflow facade`).
"""

from rcmflow.facade.app import FacadeConfig, capability_statement, create_app
from rcmflow.facade.auth import Authenticator, Principal
from rcmflow.facade.resources import build_resources, patient_id_for
from rcmflow.facade.store import Store

__all__ = [
    "Authenticator",
    "FacadeConfig",
    "Principal",
    "Store",
    "build_resources",
    "capability_statement",
    "create_app",
    "patient_id_for",
]
