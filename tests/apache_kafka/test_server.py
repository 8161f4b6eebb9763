"""ApacheKafka's plumbing, without the jars: a broker that cannot start says why."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from rcmflow.runtime.exceptions import BrokerError
from tests.apache_kafka.fetch import FetchError, cache_dir, ensure_jars, find_java, kafka_version
from tests.apache_kafka.server import ApacheKafka


def test_a_kafka_that_cannot_start_fails_with_its_log(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        find_java()
    except FetchError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # A "fetched" cache whose StorageTool is an empty class file: the JVM refuses it.
    jars = cache_dir()
    jars.mkdir(parents=True)
    (jars / ".complete").touch()
    with zipfile.ZipFile(jars / f"kafka_2.13-{kafka_version()}.jar", "w") as jar:
        jar.writestr("kafka/tools/StorageTool.class", b"")
    assert ensure_jars() == jars  # cached: no Maven run
    kafka = ApacheKafka(data_dir=tmp_path / "kafka")
    with pytest.raises(BrokerError, match="(?s)storage format failed.*kafka.log.*StorageTool"):
        kafka.start()
    properties = (tmp_path / "kafka" / "server.properties").read_text()
    assert f"listeners=PLAINTEXT://127.0.0.1:{kafka.port},CONTROLLER://" in properties
    assert "transaction.state.log.min.isr=1" in properties
    assert kafka.process is None


def test_cluster_ids_never_start_with_a_dash() -> None:
    """The storage tool would read `-t -abc...` as an option: 1 start in 64 failed so."""
    from tests.apache_kafka.server import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]  # a plain draw gives ~31 dashes here
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)


def test_secure_mode_properties_without_a_jvm(tmp_path: Path) -> None:
    """What the secure broker is told (no JVM): its listeners, PEM material kept line by line
    (joined with spaces, Kafka served the CA as the broker's certificate), deny by default."""
    from cryptography import x509

    from tests.apache_kafka.server import KafkaSecurity

    kafka = ApacheKafka(data_dir=tmp_path / "kafka",
                        secure=KafkaSecurity(scram_users={"worker": "pw-1"}))
    props = kafka.properties()
    assert props["listeners"].split(",")[:3] == [
        f"PLAINTEXT://127.0.0.1:{kafka.port}", f"SASL_SSL://127.0.0.1:{kafka.sasl_port}",
        f"SSL://127.0.0.1:{kafka.ssl_port}"]
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props[
        "authorizer.class.name"]
    chain = props["ssl.keystore.certificate.chain"].replace("\\n", "\n")
    leaf, ca = x509.load_pem_x509_certificates(chain.encode())
    assert "CN=broker" in leaf.subject.rfc4514_string() and ca.subject == leaf.issuer
    assert "\n" not in props["ssl.keystore.key"]  # one properties line
    assert kafka._scram_arguments()[:2] == ["--add-scram",
                                            "SCRAM-SHA-512=[name=worker,password=pw-1]"]
    # The default mode is untouched.
    plain = ApacheKafka(data_dir=tmp_path / "plain").properties()
    assert plain["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not any(key.startswith(("ssl.", "sasl.", "authorizer")) for key in plain)
