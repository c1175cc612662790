"""Alert rules: one source (rules/spar-alerts.yaml) for promtool and the PrometheusRule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from deploy_tools import CHART, ROOT, RULE_TESTS, RULES, Tools, find
from metric_contract import allowed_labels, labels_in, load_families, metrics_in, series_index

ALERTS = {
    "SparSearchCostHigh",
    "SparAdapterVersionSkew",
    "SparRolloutFailed",
    "SparTrainJobFailed",
    "SparServiceDown",
    "SparExternalJudgeAgreementLow",
    "SparExternalJudgeDown",
}


def file_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rendered_rule(tools: Tools, *sets: str) -> dict[str, Any]:
    objects = tools.render(sets=["metrics.prometheusRule.enabled=true", *sets])
    (rule,) = find(objects, "PrometheusRule")
    return rule


def test_promtool_check_rules(tools: Tools) -> None:
    result = tools.run("promtool", "check", "rules", str(RULES))
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_rule_unit_tests(tools: Tools) -> None:
    tests = sorted(RULE_TESTS.glob("*_test.yaml"))
    assert tests
    result = tools.run("promtool", "test", "rules", *map(str, tests), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS.glob("*_test.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert {r["alert"] for r in file_rules()} == ALERTS
    assert fired == ALERTS
    assert quiet == ALERTS


def test_rules_use_only_the_metric_contract() -> None:
    index = series_index(load_families())
    for rule in file_rules():
        expr = rule["expr"]
        unknown = metrics_in(expr) - set(index) - {"up"}
        assert not unknown, f"{rule['alert']}: not in docs/metrics.md: {unknown}"
        bad = labels_in(expr) - allowed_labels(expr, index)
        assert not bad, f"{rule['alert']}: labels not in docs/metrics.md: {bad}"


def test_prometheusrule_is_the_rules_file_with_default_values(tools: Tools) -> None:
    """values.yaml's alert defaults equal the file, so promtool tests what gets deployed."""
    rule = rendered_rule(tools)
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_prometheusrule_takes_thresholds_durations_and_severities(
    tools: Tools, tmp_path: Path
) -> None:
    rule = rendered_rule(
        tools,
        "alerts.SparSearchCostHigh.threshold=12345",
        "alerts.SparSearchCostHigh.for=30m",
        "alerts.SparServiceDown.severity=warning",
        "alerts.SparRolloutFailed.enabled=false",
        "metrics.prometheusRule.labels.release=kube-prometheus-stack",
    )
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(rules) == ALERTS - {"SparRolloutFailed"}
    cost = rules["SparSearchCostHigh"]
    assert cost["expr"].rstrip().endswith("> 12345")
    assert cost["expr"].count("12345") == 1 and "20000" not in cost["expr"]
    assert cost["for"] == "30m"
    assert rules["SparServiceDown"]["labels"]["severity"] == "warning"
    # What the cluster gets is still a valid rule file.
    spec = tmp_path / "rendered-rules.yaml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    tools.run("promtool", "check", "rules", str(spec))


def test_every_alert_has_values_and_a_runbook() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    for rule in file_rules():
        name = rule["alert"]
        assert name in values["alerts"], name
        assert values["alerts"][name]["for"] == rule["for"], name
        assert values["alerts"][name]["severity"] == rule["labels"]["severity"], name
        anchor = f"docs/operations.md#{name.lower()}"
        assert anchor in rule["annotations"]["description"], name
        assert name.lower() in anchors, f"docs/operations.md has no section {name}"
