"""deploy/prometheus: the config and the alert rules pass promtool, the alerts fire as their
unit tests say, and every metric the rules query is one an rcmflow process exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from rcmflow.runtime.settings import Settings
from tests.compose_file import load_compose, service_environment
from tests.deploy.conftest import DEPLOY
from tests.deploy.exported import SCRAPE_SERIES

PROMETHEUS = DEPLOY / "prometheus"
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and",
                       "or", "unless", "bool", "offset", "le", "inf", "nan"})


def promtool_run(promtool: str, *args: str, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (label matchers and strings removed)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "{}", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", "[]", bare)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        name, end = match.group(0), match.end()
        if name.lower() in _KEYWORDS or bare[end:].lstrip().startswith("("):
            continue  # a keyword or a function call
        if re.match(r"\d", bare[max(0, match.start() - 1):match.start()] or "x"):
            continue  # a unit of a number (1e3)
        names.add(name)
    return names


def rule_expressions() -> dict[str, str]:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return {rule.get("alert") or rule["record"]: rule["expr"]
            for group in doc["groups"] for rule in group["rules"]}


def test_promtool_accepts_the_config_and_the_rules(promtool: str) -> None:
    out = promtool_run(promtool, "check", "config", "prometheus.yml")
    assert "1 rule files found" in out, out
    out = promtool_run(promtool, "check", "rules", "rules.yml")
    assert f"{len(rule_expressions())} rules found" in out, out


def test_the_alerts_fire_as_their_unit_tests_say(promtool: str) -> None:
    out = promtool_run(promtool, "test", "rules", "rules_test.yml")
    assert "SUCCESS" in out, out
    tested = set(re.findall(r"alertname: (\w+)",
                            (PROMETHEUS / "rules_test.yml").read_text()))
    assert len(tested) >= 2 and tested <= set(rule_expressions()), tested


def test_a_broken_alert_fails_its_unit_test(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: with the ERP alert's threshold gone, they do."""
    rules = (PROMETHEUS / "rules.yml").read_text()
    broken = rules.replace("delta(rcmflow_erp_lag_records[10m]) > 0",
                           "delta(rcmflow_erp_lag_records[10m]) > -1")
    assert broken != rules
    (tmp_path / "rules.yml").write_text(broken)
    (tmp_path / "rules_test.yml").write_text((PROMETHEUS / "rules_test.yml").read_text())
    done = subprocess.run([promtool, "test", "rules", "rules_test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "RcmflowErpDown" in done.stdout + done.stderr


def test_every_metric_the_rules_query_is_exported(exported: dict[str, set[str]]) -> None:
    every = set().union(*exported.values()) | SCRAPE_SERIES
    queried = {name: metric_names(expr) for name, expr in rule_expressions().items()}
    assert all(queried.values()), queried
    unknown = {alert: sorted(names - every) for alert, names in queried.items()
               if names - every}
    assert unknown == {}, f"rules query metrics no process exports: {unknown}"


def test_the_names_parser_sees_what_a_query_selects() -> None:
    assert metric_names('sum by (le, adapter) (rate(rcmflow_erp_x_bucket{kind="a b"}[5m]))'
                        ) == {"rcmflow_erp_x_bucket"}
    assert metric_names("absent(up{job=\"rcmflow-audit\"} == 1) and on (instance) foo > 1e3"
                        ) == {"up", "foo"}


def test_the_scrape_targets_are_the_compose_services_on_their_settings_ports() -> None:
    """Each job's target is a compose service and the port that service's RCMFLOW_* port
    setting gives it (a port changed in the compose file cannot leave Prometheus behind)."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    compose = load_compose()
    variables = {"RCMFLOW_FACADE_JWT_KEY": "k", "RCMFLOW_FACADE_JWT_AUDIENCE": "a"}
    port_setting = {"worker": "RCMFLOW_WORKER_METRICS_PORT", "erp": "RCMFLOW_ERP_METRICS_PORT",
                    "erp-tryton": "RCMFLOW_ERP_METRICS_PORT",
                    "mllp": "RCMFLOW_MLLP_METRICS_PORT", "audit": "RCMFLOW_AUDIT_METRICS_PORT",
                    "facade": "RCMFLOW_FACADE_PORT"}
    known = {f"RCMFLOW_{name.upper()}" for name in Settings.model_fields}
    assert set(port_setting.values()) <= known
    scraped = set()
    for job in config["scrape_configs"]:
        if job["job_name"] in ("prometheus", "rcmflow-reconcile"):
            continue  # itself; node_exporter serving `rcmflow reconcile --metrics-file`
        targets = [(name, int(sd["port"])) for sd in job.get("dns_sd_configs", [])
                   for name in sd["names"]]
        targets += [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1]))
                    for sc in job.get("static_configs", []) for t in sc["targets"]]
        for service, port in targets:
            env = service_environment(compose, service, variables)
            assert int(env[port_setting[service]]) == port, (job["job_name"], service, port)
            scraped.add(service)
    rcmflow_services = {name for name, svc in compose["services"].items()
                        if (svc.get("command") or [None])[0] == "rcmflow"}
    assert scraped == rcmflow_services, (scraped, rcmflow_services)


@pytest.mark.parametrize("alert", sorted(rule_expressions()))
def test_every_alert_waits_before_firing(alert: str) -> None:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    (rule,) = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert rule.get("for"), f"{alert} has no `for:` (one bad scrape would page)"
    assert rule["labels"]["severity"] in ("warning", "critical"), alert
