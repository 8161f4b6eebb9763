"""Errors of the ERP connectors (a refused posting is a value, ``Rejected``, not an
exception)."""

from __future__ import annotations

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["TransientError", "AdapterConfigError", "TrytonError", "OdooError"]


class TransientError(RcmflowError):
    """The ERP could not answer now (timeout, 5xx, connection refused, lock conflict).

    The connector retries the same deltas with backoff; nothing is committed meanwhile.
    """


class AdapterConfigError(RcmflowError):
    """The adapter is set up wrongly (bad credentials, ERP module missing, no company).

    Retrying cannot help: the connector stops (``ExitCode.ERP_CONFIG``) and commits nothing.
    """


class TrytonError(RcmflowError):
    """A JSON-RPC error body: ``kind`` is Tryton's exception name (UserError, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class OdooError(RcmflowError):
    """A 4xx answer from Odoo: its exception name and message."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.status, self.name, self.message = status, name, message
