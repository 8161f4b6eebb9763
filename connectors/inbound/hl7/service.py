"""Wiring for the commands: settings -> mapping config, replay store, sink, listener."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rcmflow.connectors.inbound.exceptions import ReplayStoreLocked
from rcmflow.connectors.inbound.hl7.intake import Intake, KafkaSink, Sink, raw_record_bytes_max
from rcmflow.connectors.inbound.hl7.listener import ListenerLimits, MllpListener
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.connectors.inbound.hl7.tls import is_loopback, tls_from_settings
from rcmflow.runtime import metrics
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.faults import NO_FAULTS, Faults
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.date_window import DateWindow

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["mapping_config", "replay_dir", "limits", "run_mllp", "kafka_sink", "new_intake"]

log = logging.getLogger("rcmflow.hl7")


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"RCMFLOW_HL7_TIMEZONE {name!r} is not an IANA time zone") from exc


def mapping_config(settings: Settings) -> MappingConfig:
    return MappingConfig(
        ft1_types={k.upper(): v for k, v in settings.hl7_ft1_types.items()},
        account_fields=tuple(settings.hl7_account_fields),
        status_by_trigger={k.upper(): v for k, v in settings.hl7_status_by_trigger.items()},
        default_tz=_zone(settings.hl7_timezone),
        ft1_max=settings.hl7_ft1_max,
        date_window=DateWindow.from_settings(settings),
    )


def kafka_sink(settings: Settings, kafka: KafkaConnection) -> KafkaSink:
    """The intake's producer, sized for the largest message the settings accept."""
    return KafkaSink(kafka, settings.hl7_write_timeout_s,
                     raw_record_bytes_max(settings.mllp_message_bytes_max, settings.hl7_ft1_max))


def new_intake(settings: Settings, sink: Sink, store: ReplayStore, channel: str) -> Intake:
    """The intake every HL7 path shares, with the settings' mapping and bounds."""
    return Intake(sink=sink, store=store, config=mapping_config(settings), channel=channel,
                  message_bytes_max=settings.mllp_message_bytes_max,
                  dlq_payload_bytes_max=settings.dlq_payload_bytes_max)


def replay_dir(settings: Settings, channel: str) -> Path:
    """One store per channel ("mllp", "files", "consume-<group>"): a file ingest or a topic
    consumer can run beside the listener."""
    return settings.data_dir / "hl7" / f"replay-{channel}"


def limits(settings: Settings) -> ListenerLimits:
    return ListenerLimits(
        message_bytes_max=settings.mllp_message_bytes_max,
        connections_max=settings.mllp_connections_max,
        idle_timeout_s=settings.mllp_idle_timeout_s,
    )


async def serve(settings: Settings, kafka: KafkaConnection, host: str, port: int,
                ready: asyncio.Event | None = None, metrics_port: int = 0,
                faults: Faults = NO_FAULTS) -> None:
    """Listen until signalled; ``metrics_port`` > 0 also serves /metrics there; ``faults``:
    test-only kills and breaks (``rcmflow/runtime/faults.py``)."""
    store = ReplayStore(replay_dir(settings, "mllp"), settings.hl7_replay_retention_s)
    sink = kafka_sink(settings, kafka)
    try:
        await sink.start()
        intake = new_intake(settings, sink, store, "mllp")
        listener = MllpListener(intake, limits(settings), tls=tls_from_settings(settings),
                                allow_plain_network=settings.mllp_allow_plain_network,
                                faults=faults)
        await listener.start(host, port)
        if metrics_port:
            bound = metrics.serve(metrics.new_registry(listener.families),
                                  settings.metrics_host, metrics_port)
            log.info("MLLP metrics on %s", metrics.url(settings.metrics_host, bound))
        if ready is not None:
            ready.set()
        await listener.serve_until_signalled()
    finally:
        await sink.stop()
        store.close()


def run_mllp(settings: Settings, kafka: KafkaConnection, host: str, port: int,
             metrics_port: int = 0, faults: Faults = NO_FAULTS) -> ExitCode:
    """`rcmflow mllp`: runs until SIGINT/SIGTERM; 0 on a clean stop, 2 on a setup error
    (a port taken included), 3 when the broker cannot be reached at start (nothing was
    listening yet, so no sender was answered: start it again once the broker is up)."""
    from aiokafka.errors import KafkaConnectionError

    from rcmflow.runtime.kafka_preflight import explain_kafka_error

    # `rcmflow` configures the root handler at WARNING; a listener also reports its traffic.
    logging.getLogger("rcmflow").setLevel(
        {"warn": "WARNING"}.get(settings.log_level, settings.log_level.upper()))
    try:
        mapping_config(settings)
        tls = tls_from_settings(settings)
        if tls is None and settings.mllp_allow_plain_network and not is_loopback(host):
            log.warning("MLLP: plain TCP on %s (RCMFLOW_MLLP_ALLOW_PLAIN_NETWORK): patient "
                        "data crosses this network unencrypted", host)
        asyncio.run(serve(settings, kafka, host, port, metrics_port=metrics_port,
                          faults=faults))
    except KafkaConnectionError as exc:
        log.error("MLLP: the broker is unreachable, not listening: %s; run it again once the "
                  "broker is up", explain_kafka_error(exc, kafka))
        return ExitCode.BROKER
    except (ReplayStoreLocked, ValueError, OSError) as exc:
        log.error("%s", exc)
        return ExitCode.REFUSED
    return ExitCode.OK
