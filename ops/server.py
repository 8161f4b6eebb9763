"""`rcmflow ops`: the site built from the settings and served by uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from rcmflow.audit.reconcile_metrics import last_run_path
from rcmflow.ops.identity import signing_key
from rcmflow.ops.site import SiteConfig, create_site
from rcmflow.ops.users import Users
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.settings import Settings
from rcmflow.streams.denial_routing import load_denial_routing
from rcmflow.streams.refund_policy import load_refund_policy

__all__ = ["run_ops_site", "site_config", "users_of", "metrics_urls"]

log = logging.getLogger("rcmflow.ops")


def users_of(settings: Settings) -> Users:
    return Users(settings.ops_users_file or settings.data_dir / "ops-users.json")


def metrics_urls(settings: Settings) -> dict[str, str]:
    """The /metrics of the processes whose port is set (the facade's is always on)."""
    host = settings.metrics_host
    ports = {"worker": settings.worker_metrics_port, "erp": settings.erp_metrics_port,
             "mllp": settings.mllp_metrics_port}
    urls = {name: f"http://{host}:{port}/metrics" for name, port in ports.items() if port}
    facade_host = "127.0.0.1" if settings.facade_host in ("", "0.0.0.0") else settings.facade_host
    urls["facade"] = f"http://{facade_host}:{settings.facade_port}/metrics"
    return urls


def site_config(settings: Settings, kafka: KafkaConnection,
                metrics: dict[str, str] | None = None) -> SiteConfig:
    """Raises ValueError for a session key too short to sign with."""
    key = signing_key(settings)
    return SiteConfig(kafka=kafka, users=users_of(settings), session_key=key,
                      session_s=settings.ops_session_hours * 3600, app_id=settings.app_id,
                      metrics=metrics_urls(settings) if metrics is None else metrics,
                      prometheus_url=settings.ops_prometheus_url,
                      reconcile_file=last_run_path(settings),
                      refund_policy=load_refund_policy(settings.refund_policy),
                      denial_routing=load_denial_routing(settings.denial_routing))


def run_ops_site(settings: Settings, kafka: KafkaConnection) -> ExitCode:
    """Serve until interrupted. Raises ValueError for settings it must not start with."""
    config = site_config(settings, kafka)
    if not config.users.names():
        log.warning("ops site: no logins yet in %s: make one with `rcmflow ops-user NAME "
                    "--role operator`", config.users.path)
    log.info("ops site on http://%s:%d", settings.ops_host, settings.ops_port)
    # No access log: account numbers and trace ids are in the URLs.
    uvicorn.run(create_site(config), host=settings.ops_host, port=settings.ops_port,
                log_level="warning", access_log=False, limit_concurrency=200,
                timeout_keep_alive=5)
    return ExitCode.OK
