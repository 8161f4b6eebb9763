"""The root of rcmflow's own exceptions, and the runtime's: ``except RcmflowError`` catches
every error rcmflow raises on purpose (a refusal, a broker or ERP failure it names), and
nothing else. Each package keeps its own in its ``exceptions.py`` (streams, facade,
connectors/inbound, connectors/erp, audit, cli); a refused *input* is no exception but a
``Rejection`` value (streams/rejections.py) that becomes a DLQ record.

Errors that callers already catch as ``ValueError``, ``RuntimeError`` or ``OSError`` derive
from both (``class ChartError(RcmflowError, ValueError)``), so nothing that caught them
before misses them now. Plain Python only: the pure core imports it.
"""

from __future__ import annotations

__all__ = ["RcmflowError", "RecordTooLarge", "BrokerNotFound", "BrokerError",
           "TopicCreateDenied", "KafkaAccessError", "BrokerUnreachable"]


class RcmflowError(Exception):
    """An error rcmflow raises on purpose, with a message that says what to do."""


class RecordTooLarge(RcmflowError, ValueError):
    """A record larger than its topic takes: no re-send can succeed (refuse the input)."""


class BrokerNotFound(RcmflowError, RuntimeError):
    """No RCMFLOW_BROKER and no embedded broker running for this data dir."""


class BrokerError(RcmflowError, RuntimeError):
    """The embedded broker could not be started or reached."""


class TopicCreateDenied(BrokerError):
    """A topic the caller needs is missing and its principal may not create it (ACLs)."""


class KafkaAccessError(RcmflowError, RuntimeError):
    """This command cannot work on this cluster as configured: authentication, TLS or an ACL.
    The message is one line: the cause, then the setting or the ACL that fixes it."""


class BrokerUnreachable(KafkaAccessError):
    """No bootstrap server accepted a TCP connection (or none answered in time)."""
