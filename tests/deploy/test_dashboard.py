"""The Grafana dashboard: well-formed, on the metric contract, every query valid PromQL."""

from __future__ import annotations

from pathlib import Path

import yaml
from dashboard_queries import load_dashboard, queries, substitute
from deploy_tools import Tools
from metric_contract import (
    allowed_labels,
    labels_in,
    load_families,
    metrics_in,
    series_index,
)

VARIABLES = {"namespace": "ns", "window": "5m"}


def test_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"] == "spar"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'namespace="$namespace"' in target["expr"], panel["title"]


def test_every_query_uses_only_the_metric_contract() -> None:
    index = series_index(load_families())
    for q in queries(load_dashboard()):
        used = metrics_in(q.expr)
        assert used, f"{q.name}: selects no spar metric"
        unknown = used - set(index) - {"up"}
        assert not unknown, f"{q.name}: not in docs/metrics.md: {unknown}"
        bad = labels_in(q.expr) - allowed_labels(q.expr, index)
        assert not bad, f"{q.name}: labels its metrics do not have: {bad}"


def test_every_metric_family_is_on_the_dashboard() -> None:
    families = load_families()
    index = series_index(families)
    used = {m for q in queries(load_dashboard()) for m in metrics_in(q.expr)}
    shown = {index[m].name for m in used if m in index}
    assert set(families) - shown == set()


def test_the_panels_the_issue_asks_for() -> None:
    titles = {p["title"] for p in load_dashboard()["panels"]}
    for wanted in [
        "Search cost", "Tokens per answer by phase", "Nodes and judge samples per answer",
        "Search latency", "Search outcomes", "Searches in flight and queue per replica",
        "Unusable refinements and guardrail failures per search",
        "LLM votes skipped by the verifier",
        "Serving", "Requests by service and status", "Request latency",
        "Tokens per second per replica",
        "Rollout", "Active adapter version per replica", "Version skew", "Rollout duration",
        "Rollouts by result",
        "Training", "Training loss", "DPO reward margin and accuracy",
        "Training tokens per second",
        "Governance", "Awaiting approval", "Audit records by action",
        "Outside judge agreement per criterion", "Outside judge calls", "Criteria packs",
    ]:  # fmt: skip
        assert wanted in titles, wanted


def test_namespace_variable_lists_spar_namespaces() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    query = variables["namespace"]["query"]["query"]
    assert query == "label_values(spar_requests_total, namespace)"
    assert "spar_requests_total" in load_families()


def test_every_query_is_valid_promql(tools: Tools, tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule) with Prometheus's own parser."""
    qs = queries(load_dashboard())
    rules = [
        {"record": f"spar_dashboard:query_{i}", "expr": substitute(q.expr, **VARIABLES)}
        for i, q in enumerate(qs)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = tools.run("promtool", "check", "rules", str(path), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(qs)} rules found" in result.stdout


def test_promql_check_catches_a_broken_query(tools: Tools, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    rule = {"record": "x:y", "expr": "sum by (phase (rate(spar_search_tokens_total[5m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    assert tools.run("promtool", "check", "rules", str(path), check=False).returncode != 0
