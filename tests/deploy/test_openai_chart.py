"""The chart's switch for the refiner's OpenAI-compatible HTTP endpoint: off by default,
one value turns it on; then the port is on the refiner's container and client Service,
open to its clients, and readiness probes it (plaintext and TLS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deploy_tools import (
    CHART,
    VALUES_PRODUCTION,
    Tools,
    containers,
    find,
    kubernetes_validate,
    one,
)
from test_chart import FULL, _reachable_ports, namespace, pod_spec_labels

from spar.config import OpenAISettings
from spar_cli.commands.refiner import register

Objects = list[dict[str, Any]]
ON = ["refiner.openai.enabled=true"]


@pytest.fixture(scope="module")
def openai_objects(tools: Tools) -> Objects:
    return tools.render(sets=ON)


@pytest.fixture(scope="module")
def openai_tls_objects(tools: Tools) -> Objects:
    return tools.render(VALUES_PRODUCTION, sets=ON)


def refiner_container(objects: Objects) -> dict[str, Any]:
    container: dict[str, Any] = containers(one(objects, "Deployment", f"{FULL}-refiner"))[0]
    return container


def service_ports(objects: Objects, name: str) -> dict[str, int]:
    return {p["name"]: p["port"] for p in one(objects, "Service", name)["spec"]["ports"]}


def test_off_by_default(default_objects: Objects) -> None:
    assert OpenAISettings().enabled is False
    refiner = refiner_container(default_objects)
    assert "openai" not in {p["name"] for p in refiner["ports"]}
    assert "--openai-port" not in refiner["args"]
    assert "openai" not in service_ports(default_objects, f"{FULL}-refiner")
    assert "grpc" in refiner["readinessProbe"]


def test_one_value_serves_it_on_the_refiner_service(openai_objects: Objects) -> None:
    refiner = refiner_container(openai_objects)
    args = refiner["args"]
    assert args[args.index("--openai-port") + 1] == "8000"
    assert {p["name"]: p["containerPort"] for p in refiner["ports"]}["openai"] == 8000
    svc = one(openai_objects, "Service", f"{FULL}-refiner")
    port = next(p for p in svc["spec"]["ports"] if p["name"] == "openai")
    assert port == {"name": "openai", "port": 8000, "targetPort": "openai", "protocol": "TCP"}
    # The headless Service (round_robin gRPC, scraping) and the other roles are unchanged.
    assert "openai" not in service_ports(openai_objects, f"{FULL}-refiner-headless")
    for role in ("actor", "trainer", "coordinator"):
        c = containers(one(openai_objects, "Deployment", f"{FULL}-{role}"))[0]
        assert "openai" not in {p["name"] for p in c["ports"]}


def test_readiness_probes_the_http_endpoint(
    openai_objects: Objects, openai_tls_objects: Objects
) -> None:
    plain = refiner_container(openai_objects)
    assert plain["readinessProbe"]["httpGet"] == {"path": "/health", "port": "openai"}
    assert "grpc" in plain["livenessProbe"] and "grpc" in plain["startupProbe"]
    # With TLS kubelet cannot present a client certificate: spar health asks both ports.
    tls = refiner_container(openai_tls_objects)
    assert tls["readinessProbe"]["exec"]["command"] == [
        "spar", "health", "--target", "localhost:50052", "--http-port", "8000",
    ]  # fmt: skip


def test_the_probe_command_and_the_serve_flag_exist() -> None:
    """The chart's args and probe name flags the CLI really has."""
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["refiner", "serve", "--openai-port", "8000"])
    assert args.openai_port == 8000

    from spar_cli.commands.up import register as register_up

    parser = argparse.ArgumentParser()
    register_up(parser.add_subparsers())
    args = parser.parse_args(["health", "--target", "localhost:50052", "--http-port", "8000"])
    assert args.http_port == 8000


def test_refiner_clients_reach_the_http_port(
    openai_objects: Objects, openai_tls_objects: Objects
) -> None:
    labels = pod_spec_labels(openai_objects, "refiner")
    outsider = ({"app": "someone-else"}, namespace("other"))
    assert _reachable_ports(openai_objects, labels, *outsider) == {"grpc", "openai"}
    actor = pod_spec_labels(openai_objects, "actor")
    assert _reachable_ports(openai_objects, actor, *outsider) == set()
    # networkPolicy.refinerClients restricts both client ports alike.
    labels = pod_spec_labels(openai_tls_objects, "refiner")
    client_ns = namespace("shop", **{"spar-client": "true"})
    assert _reachable_ports(openai_tls_objects, labels, {"app": "x"}, client_ns) == {
        "grpc",
        "openai",
    }
    assert _reachable_ports(openai_tls_objects, labels, {"app": "x"}, namespace("x")) == set()


def test_port_is_a_value_and_the_schema_checks_it(tools: Tools) -> None:
    objects = tools.render(sets=[*ON, "refiner.openai.port=9000"])
    assert service_ports(objects, f"{FULL}-refiner")["openai"] == 9000
    args = refiner_container(objects)["args"]
    assert args[args.index("--openai-port") + 1] == "9000"
    for bad, where in (
        (["refiner.openai.port=70000"], "/refiner/openai/port"),
        (["refiner.openai.enabled=yes"], "/refiner/openai/enabled"),
        (["refiner.openai.prot=1"], "'prot' not allowed"),
    ):
        result = tools.template(sets=bad, check=False)
        assert result.returncode != 0 and where in result.stderr, (bad, result.stderr)


@pytest.mark.parametrize("production", [False, True])
def test_enabled_renders_pass_lint_and_strict_schemas(
    tools: Tools, tmp_path: Path, production: bool
) -> None:
    files = [VALUES_PRODUCTION] if production else []
    args = ["lint", "--strict", str(CHART)]
    for f in files:
        args += ["--values", str(f)]
    lint = tools.run("helm", *args, "--set", ON[0], check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    manifest = tmp_path / "openai.yaml"
    manifest.write_text(tools.template(*files, sets=ON).stdout)
    result = kubernetes_validate(manifest, version="1.35.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert find(tools.render(*files, sets=ON), "Deployment")


def test_search_cost_panels_include_http_requests() -> None:
    """HTTP answers count in the search-cost row: a panel shows answers by API next to
    the cost panels, and the serving row shows HTTP requests by status."""
    from dashboard_queries import load_dashboard

    panels = load_dashboard()["panels"]
    rows = [p for p in panels if p["type"] == "row"]
    serving_y = next(r["gridPos"]["y"] for r in rows if r["title"] == "Serving")

    def exprs(title: str) -> str:
        panel = next(p for p in panels if p["title"] == title)
        return " ".join(t["expr"] for t in panel["targets"])

    by_api = next(p for p in panels if p["title"] == "Refined answers by API")
    assert by_api["gridPos"]["y"] < serving_y, "it belongs to the search-cost row"
    assert 'method="Answer"' in exprs("Refined answers by API")
    assert "spar_http_requests_total" in exprs("Refined answers by API")
    assert "spar_http_request_duration_seconds_bucket" in exprs("Chat completions latency")
    assert "spar_http_requests_total" in exprs("Requests by service and status")
