"""`rcmflow facade`: the read model, its feed from rcm.accounts, and the app under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from rcmflow.facade.app import FacadeConfig, create_app
from rcmflow.facade.auth import Authenticator
from rcmflow.facade.exceptions import StoreLocked
from rcmflow.facade.feed import Feeder
from rcmflow.facade.store import Store, lock_store
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.settings import Settings

__all__ = ["build_app", "check_settings", "run_facade", "server_config", "public_url",
           "store_path", "AUTH_OFF_WARNING"]

log = logging.getLogger("rcmflow.facade")

AUTH_OFF_WARNING = ("FHIR FACADE AUTH IS OFF: anyone who reaches the port reads every "
                    "patient's billing data. Development only; never in production.")


def store_path(settings: Settings) -> Path:
    return settings.facade_store or settings.data_dir / "facade" / "read.sqlite"


def public_url(settings: Settings) -> str:
    """The FHIR base the links name: RCMFLOW_FACADE_PUBLIC_URL, required with auth on (a
    guess would send portals' tokens to the wrong place); in dev, the facade's own address."""
    if settings.facade_public_url:
        return settings.facade_public_url
    if settings.facade_auth == "jwt":
        raise ValueError(
            "RCMFLOW_FACADE_PUBLIC_URL is required when facade auth is on: the FHIR base URL "
            "portals reach the facade at (e.g. https://portal.example.org/fhir); links in "
            "responses are built from it, never from the request's Host header")
    host = settings.facade_host
    host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.facade_port}{settings.facade_base_path}"


def authenticator(settings: Settings) -> Authenticator:
    return Authenticator(
        enabled=settings.facade_auth == "jwt",
        key=settings.facade_jwt_key.get_secret_value() if settings.facade_jwt_key else None,
        algorithm=settings.facade_jwt_algorithm, audience=settings.facade_jwt_audience,
        leeway_s=settings.facade_jwt_leeway_s,
        lifetime_max_s=settings.facade_jwt_lifetime_max_s)


def check_settings(settings: Settings) -> None:
    """Raises ValueError, naming the setting, for settings the facade must not start with:
    auth on without a key, an audience or a public URL; an HMAC key shorter than its hash."""
    authenticator(settings)
    public_url(settings)


def build_app(settings: Settings, kafka: KafkaConnection, source: str) -> FastAPI:
    """The app with its store and a feed that runs while the app does (ValueError: see
    ``check_settings``; StoreLocked when another facade holds the store: its lock is held
    until the app stops)."""
    auth = authenticator(settings)
    url = public_url(settings)
    if not auth.enabled:
        log.warning(AUTH_OFF_WARNING)
    lock = lock_store(store_path(settings))
    store = Store(store_path(settings), validate_every=settings.facade_validate_every)
    feeder = Feeder(store, kafka, source=source)
    config = FacadeConfig(
        public_url=url, base_path=settings.facade_base_path, count_max=settings.facade_count_max,
        request_bytes_max=settings.facade_request_bytes_max,
        cors_origins=tuple(o.strip() for o in settings.facade_cors_origins.split(",")
                           if o.strip()))
    app = create_app(store, auth, config, feeder.status)
    app.state.feeder = feeder

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(feeder.run(), name="facade-feed")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            store.close()
            lock.close()

    app.router.lifespan_context = lifespan
    return app


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn's settings for the facade.

    Proxy headers: X-Forwarded-For and X-Forwarded-Proto are believed only from
    RCMFLOW_FACADE_TRUSTED_PROXIES (uvicorn's forwarded_allow_ips; never its
    FORWARDED_ALLOW_IPS environment variable); they set the client address the facade logs.
    Forwarded, X-Forwarded-Host and X-Forwarded-Prefix are not read, and no header changes a
    link (those come from RCMFLOW_FACADE_PUBLIC_URL).
    """
    trusted = settings.facade_trusted_proxies
    # No access log: URLs carry search values (identifiers, dates) that may be PHI.
    # Finite limits: uvicorn leaves concurrency open; h11 bounds headers (16 KiB).
    return uvicorn.Config(
        app, host=settings.facade_host, port=settings.facade_port, log_level="warning",
        access_log=False, limit_concurrency=1000, timeout_keep_alive=5,
        proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None)


def run_facade(settings: Settings, kafka: KafkaConnection, source: str) -> ExitCode:
    """Serve until interrupted (0), or until the broker refuses the feed's login or ACL (2:
    a read model that silently stops following rcm.accounts would serve stale balances).
    Raises ValueError for settings it must not start with (``build_app``)."""
    level = {"warn": "WARNING"}.get(settings.log_level, settings.log_level.upper())
    log.setLevel(level)
    try:
        app = build_app(settings, kafka, source)
    except StoreLocked as exc:
        print(f"rcmflow facade: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    feeder: Feeder = app.state.feeder
    log.info("FHIR facade on http://%s:%d%s, links name %s (auth %s)", settings.facade_host,
             settings.facade_port, settings.facade_base_path, public_url(settings),
             settings.facade_auth)
    server = uvicorn.Server(server_config(app, settings))

    def stop(_: Exception) -> None:
        # A graceful stop (in-flight requests finish), as on SIGTERM; a signal would be
        # re-raised by uvicorn after its shutdown and end the process before we say why.
        server.should_exit = True

    feeder.on_fatal = stop
    server.run()
    if feeder.fatal is not None:
        print(f"rcmflow {feeder.fatal}", file=sys.stderr)
        return ExitCode.REFUSED
    return ExitCode.OK
