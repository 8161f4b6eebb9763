"""How every rcmflow client reaches Kafka: the bootstrap servers and the security around them.

One object, built from the settings (``Settings.kafka()``), is handed to every client rcmflow
creates — the worker's Faust app and its outbox, producers, consumers, admin clients, the
facade's feed, the ERP connectors, ingest, reconcile — so a cluster that requires TLS and
SASL/SCRAM (or mutual TLS) is reached the same way by all of them:

=====================  ===============================================================
``security_protocol``  PLAINTEXT (dev, the embedded broker), SSL, SASL_PLAINTEXT, SASL_SSL
``sasl_mechanism``     PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (with username and password)
``ssl_*``              CA bundle that signs the brokers' certificates; a client certificate
                       and key for mutual TLS; hostname checking (on unless switched off)
=====================  ===============================================================
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = ["KafkaConnection", "SecurityProtocol", "SaslMechanism"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaConnection:
    servers: tuple[str, ...]
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("no Kafka bootstrap server")
        if self.uses_sasl and not (self.sasl_mechanism and self.username and self.password):
            raise ValueError(f"{self.security_protocol} needs RCMFLOW_KAFKA_SASL_MECHANISM, "
                             "RCMFLOW_KAFKA_USERNAME and RCMFLOW_KAFKA_PASSWORD")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both RCMFLOW_KAFKA_CERT_FILE and "
                             "RCMFLOW_KAFKA_KEY_FILE")
        if not self.uses_tls and (self.ca_file or self.cert_file):
            raise ValueError(f"certificate files are set but RCMFLOW_KAFKA_SECURITY_PROTOCOL is "
                             f"{self.security_protocol}: use SSL or SASL_SSL")

    @classmethod
    def plaintext(cls, *servers: str) -> KafkaConnection:
        """A broker on a trusted network with no security (the embedded one, tests)."""
        return cls(servers=servers)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def url(self) -> str:
        """Faust's broker URL (the security travels apart, in ``faust_credentials``)."""
        return "kafka://" + ";".join(self.servers)

    def describe(self) -> str:
        """For logs and errors: where, how, as whom (never the password)."""
        who = f" as {self.username} ({self.sasl_mechanism})" if self.uses_sasl else ""
        cert = " with a client certificate" if self.cert_file else ""
        return f"{','.join(self.servers)} over {self.security_protocol}{who}{cert}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file and self.key_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file),
                                    password=self.key_password)
        if not self.check_hostname:
            context.check_hostname = False
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's consumers, producers and admin clients."""
        options: dict[str, Any] = {"bootstrap_servers": list(self.servers),
                                   "security_protocol": self.security_protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options.update(sasl_mechanism=self.sasl_mechanism,
                           sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options

    def faust_credentials(self) -> CredentialsT | None:
        """The same security for Faust's own consumer, producers and topic creation."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.uses_sasl:
            return SASLCredentials(username=self.username, password=self.password,
                                   ssl_context=self.ssl_context(),
                                   mechanism=self.sasl_mechanism)
        if self.uses_tls:
            return SSLCredentials(self.ssl_context())
        return None
