"""Every Kafka client rcmflow creates carries the connection's security settings.

A client built from bare ``bootstrap_servers`` would connect PLAINTEXT and, on a secure
cluster, fail far from the setting that fixes it. The source is read (AST, not text) for
every aiokafka client constructor and Faust app in the package: each must take its options
from ``KafkaConnection.client_options()`` (or ``faust_credentials()`` for Faust). Then the
Faust app a worker builds is checked to hand SASL and TLS to its own consumer and producers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rcmflow.runtime.settings import Settings
from tests.apache_kafka.certs import CertificateAuthority

ROOT = Path(__file__).resolve().parents[2]
#: The folders that install as the rcmflow package (pyproject.toml package-dir).
PACKAGE_DIRS = ("rcmflow", "streams", "tables", "facade", "connectors", "audit")
CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient",
           "create_conn"}
#: Calls whose ``**options`` are client_options() minus bootstrap_servers (a connection per
#: bootstrap server, to read the real error of each).
DERIVED = {("rcmflow/runtime/kafka_preflight.py", "options")}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _client_calls() -> list[tuple[str, int, str, ast.Call]]:
    found = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and (_name(node.func) in CLIENTS or (
                        _name(node.func) == "App" and "faust" in ast.unparse(node.func))):
                    found.append((str(path.relative_to(ROOT)), node.lineno,
                                  _name(node.func), node))
    return found


def test_every_aiokafka_client_takes_client_options() -> None:
    calls = _client_calls()
    kinds = {kind for _, _, kind, _ in calls}
    # Not vacuous: the known clients are all found.
    assert {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "create_conn",
            "App"} <= kinds, kinds
    assert len(calls) >= 12, calls
    bare = []
    for where, line, kind, call in calls:
        if kind == "App":
            credentials = [k for k in call.keywords if k.arg == "broker_credentials"]
            if not credentials or "faust_credentials" not in ast.unparse(credentials[0].value):
                bare.append(f"{where}:{line} faust.App without broker_credentials")
            continue
        spread = [ast.unparse(k.value) for k in call.keywords if k.arg is None]
        if not any("client_options" in s or (where, s) in DERIVED for s in spread):
            bare.append(f"{where}:{line} {kind}({ast.unparse(call)[:80]}...)")
        if any(k.arg in ("bootstrap_servers", "security_protocol") for k in call.keywords):
            bare.append(f"{where}:{line} {kind} sets its own servers or protocol")
    assert not bare, "clients built without KafkaConnection.client_options():\n" + "\n".join(bare)


def test_the_worker_app_gives_faust_the_sasl_and_tls_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from rcmflow.streams.chart import load_chart
    from rcmflow.streams.refund_policy import load_refund_policy
    from rcmflow.streams.shell.worker import build_worker

    ca = CertificateAuthority(tmp_path / "ca")
    settings = Settings(
        broker="kafka://127.0.0.1:9093", data_dir=tmp_path, kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_username="worker",
        kafka_password="s3cret", kafka_ca_file=ca.ca_file)
    app, _ = build_worker(settings, load_chart(), load_refund_policy(),
                          datadir=tmp_path / "tables")
    # What Faust's consumer, producers and the highwater probe pass to aiokafka.
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("worker", "s3cret")
    assert auth["ssl_context"] is not None and auth["ssl_context"].check_hostname
    assert "s3cret" not in repr(app.conf.broker_credentials)
    assert "s3cret" not in repr(settings.kafka()) and "s3cret" not in settings.kafka().describe()
