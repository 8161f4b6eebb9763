"""deploy/grafana: the provisioning Grafana reads and the dashboard JSON it loads.

Grafana itself is not installable on these machines: the checks are structural (the JSON is
a dashboard, every panel has a datasource and queries, the datasource uid is the provisioned
one), every query parses as PromQL (promtool, through a rule file), and every metric a query
selects is one an rcmflow process exports (``tests/deploy/exported.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.compose_file import load_compose
from tests.deploy.conftest import DEPLOY
from tests.deploy.exported import SCRAPE_SERIES
from tests.deploy.test_prometheus import metric_names, promtool_run

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def provisioned_datasource() -> dict[str, Any]:
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = doc["datasources"]
    return dict(source)


def dashboard(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    assert isinstance(doc, dict)
    return doc


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target."""
    return [(panel["title"], target["expr"]) for panel in doc["panels"]
            for target in panel["targets"]]


def test_the_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    source = provisioned_datasource()
    assert source["type"] == "prometheus" and source["uid"]
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert source["url"].endswith(":9090")  # Prometheus' port in docker-compose.yml
    assert config["global"]["scrape_interval"] == source["jsonData"]["timeInterval"]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/rcmflow.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"]
    assert DASHBOARDS, "no dashboard JSON"
    # docker-compose.yml mounts them where the provisioning looks.
    services = load_compose()["services"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in services["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == entry["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services
    prometheus = dict(v.rsplit(":", 2)[:2] for v in services["prometheus"]["volumes"]
                      if v.startswith("./"))
    assert prometheus["./deploy/prometheus"] == "/etc/prometheus"


def test_the_dashboard_is_well_formed() -> None:
    uid = provisioned_datasource()["uid"]
    for path in DASHBOARDS:
        doc = dashboard(path)
        assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 30, path
        ids = [panel["id"] for panel in doc["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        titles = {panel["title"] for panel in doc["panels"]}
        # What the operators asked for (issue 16): each has its panel.
        for wanted in ("Throughput", "End-to-end latency", "Lag", "exceptions by reason",
                       "exceptions by entity", "ERP: posted vs pending", "Facade request"):
            assert any(wanted.lower() in t.lower() for t in titles), (path.name, wanted)
        for panel in doc["panels"]:
            where = f"{path.name}: {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": uid}, where
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
            assert panel["targets"], where
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid and target["expr"].strip(), where


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for path in DASHBOARDS for i, (_, expr) in enumerate(queries(dashboard(path)))]}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules))
    promtool_run(promtool, "check", "rules", "dashboard_rules.yml", cwd=tmp_path)


def test_every_metric_the_dashboard_queries_is_exported(exported: dict[str, set[str]]) -> None:
    every = set().union(*exported.values()) | SCRAPE_SERIES
    unknown = {}
    for path in DASHBOARDS:
        for title, expr in queries(dashboard(path)):
            names = metric_names(expr)
            assert names, (title, expr)
            if names - every:
                unknown[f"{path.name}: {title}"] = sorted(names - every)
    assert unknown == {}, f"the dashboard queries metrics no process exports: {unknown}"


def test_a_renamed_metric_is_caught(exported: dict[str, set[str]]) -> None:
    """The check above fails when the dashboard names a metric the code does not export."""
    every = set().union(*exported.values())
    assert "rcmflow_worker_event_to_posting_seconds_bucket" in every
    assert "rcmflow_worker_event_to_posting_seconds" not in every  # a histogram's bare name
    assert "rcmflow_erp_posted" not in every and "rcmflow_erp_posted_total" in every
