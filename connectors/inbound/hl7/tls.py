"""MLLP over TLS: the server context, the sender allow-list, and the rule for plain TCP.

Interfaces that leave a host must be encrypted. Plain TCP is allowed on a loopback address
only; binding it anywhere else is refused at start unless TLS is configured, or the operator
says in so many words that the segment is trusted (``RCMFLOW_MLLP_ALLOW_PLAIN_NETWORK``: a
TLS-terminating proxy such as stunnel in front, a container whose published port is bound to
the host's loopback, or an isolated interface VLAN with senders that cannot speak TLS).

With a client CA, every sender must present a certificate it signed (mutual TLS); with an
allow-list as well, the certificate's subject CN or one of its SAN DNS names must be on it.
A sender that fails either is refused at connect, before any byte of a message is read, and
the refusal is logged with the peer address and the certificate's names (no patient data).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["MllpTls", "tls_from_settings", "check_bind", "is_loopback", "sender_names"]

#: TLS 1.0 and 1.1 are deprecated (RFC 8996); nothing older is offered or accepted.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class MllpTls:
    """What the listener serves TLS with (all paths are PEM files)."""

    cert_file: Path
    key_file: Path
    key_password: str | None = None
    #: CA bundle whose certificates senders must present; None: no client certificates.
    client_ca_file: Path | None = None
    #: Subject CNs / SAN DNS names accepted (case-insensitive); empty: any the CA signed.
    allowed_senders: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.allowed_senders and self.client_ca_file is None:
            raise ValueError("RCMFLOW_MLLP_TLS_ALLOWED_SENDERS needs "
                             "RCMFLOW_MLLP_TLS_CLIENT_CA: senders are named by their "
                             "client certificates")

    def server_context(self) -> ssl.SSLContext:
        """The listener's context; a missing or unreadable file is a ValueError naming it."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MINIMUM_VERSION
        try:
            context.load_cert_chain(self.cert_file, self.key_file, password=self.key_password)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the MLLP TLS certificate {self.cert_file} with key "
                             f"{self.key_file} (RCMFLOW_MLLP_TLS_CERT / RCMFLOW_MLLP_TLS_KEY): "
                             f"{exc}") from exc
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load the MLLP client CA {self.client_ca_file} "
                                 f"(RCMFLOW_MLLP_TLS_CLIENT_CA): {exc}") from exc
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def refusal(self, peer_cert: dict[str, Any] | None) -> str | None:
        """Why a handshaken sender is refused (not on the allow-list), or None."""
        if not self.allowed_senders:
            return None
        names = sender_names(peer_cert)
        if names & self.allowed_senders:
            return None
        shown = ", ".join(sorted(names)) or "no CN or DNS name"
        return (f"client certificate ({shown}) is not on RCMFLOW_MLLP_TLS_ALLOWED_SENDERS")


def sender_names(peer_cert: dict[str, Any] | None) -> frozenset[str]:
    """The subject CNs and SAN DNS names of a verified peer certificate, lower-cased."""
    if not peer_cert:
        return frozenset()
    names = {value for rdn in peer_cert.get("subject", ()) for key, value in rdn
             if key == "commonName"}
    names |= {value for kind, value in peer_cert.get("subjectAltName", ()) if kind == "DNS"}
    return frozenset(name.lower() for name in names)


def tls_from_settings(settings: Settings) -> MllpTls | None:
    """The TLS settings as one value, or None when TLS is off; half a configuration (a
    certificate without its key, a client CA without a certificate) is a ValueError."""
    cert, key = settings.mllp_tls_cert, settings.mllp_tls_key
    if cert is None and key is None:
        if settings.mllp_tls_client_ca is not None or settings.mllp_tls_allowed_senders:
            raise ValueError("RCMFLOW_MLLP_TLS_CLIENT_CA / _ALLOWED_SENDERS are set but TLS is "
                             "not: set RCMFLOW_MLLP_TLS_CERT and RCMFLOW_MLLP_TLS_KEY too")
        return None
    if cert is None or key is None:
        raise ValueError("MLLP TLS needs both RCMFLOW_MLLP_TLS_CERT and RCMFLOW_MLLP_TLS_KEY")
    password = settings.mllp_tls_key_password
    return MllpTls(cert_file=cert, key_file=key,
                   key_password=password.get_secret_value() if password else None,
                   client_ca_file=settings.mllp_tls_client_ca,
                   allowed_senders=_lowered(settings.mllp_tls_allowed_senders))


def _lowered(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.strip().lower() for name in names if name.strip())


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost"; any other name or address (0.0.0.0, "") is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tls: MllpTls | None, *, allow_plain_network: bool) -> None:
    """Refuse plain TCP on a non-loopback address (ValueError saying what to set)."""
    if tls is not None or is_loopback(host) or allow_plain_network:
        return
    raise ValueError(
        f"refusing plain TCP MLLP on {host or 'all interfaces'}: HL7 messages carry patient "
        "data, and plain TCP is served on 127.0.0.1 only. Configure TLS "
        "(RCMFLOW_MLLP_TLS_CERT and RCMFLOW_MLLP_TLS_KEY), bind 127.0.0.1, or, on a trusted "
        "segment (a TLS proxy in front, a container port published on loopback), set "
        "RCMFLOW_MLLP_ALLOW_PLAIN_NETWORK=true")
