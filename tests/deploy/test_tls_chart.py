"""The chart's transport-security environment: plaintext only when TLS is off (explicitly),
and with TLS a server name the shared certificate covers (replicas are reached by pod IP)."""

from __future__ import annotations

from typing import Any

from deploy_tools import NAMESPACE, RELEASE, VALUES_PRODUCTION, Tools, containers, env_of, find

from spar.config import Settings
from spar.security import server_credentials

Objects = list[dict[str, Any]]
FULL = f"{RELEASE}-spar" if RELEASE != "spar" else "spar"


def spar_containers(objects: Objects) -> list[dict[str, Any]]:
    pods = find(objects, "Deployment") + find(objects, "Pod")
    return [c for obj in pods for c in containers(obj) if c["command"] == ["spar"]]


def test_without_tls_every_spar_container_allows_plaintext_explicitly(
    default_objects: Objects, cpu_objects: Objects
) -> None:
    for objects in (default_objects, cpu_objects):
        found = spar_containers(objects)
        assert len(found) >= 4
        for c in found:
            env = env_of(c)
            assert env["SPAR_TLS__PLAINTEXT"] == "true", c["name"]
            assert "SPAR_TLS__CERT_FILE" not in env
            tls = Settings.model_validate({"tls": {"plaintext": env["SPAR_TLS__PLAINTEXT"]}}).tls
            assert server_credentials(tls) is None  # the server starts, plaintext


def test_with_tls_clients_check_one_name_the_certificate_covers(
    production_objects: Objects, tools: Tools
) -> None:
    refiner = f"{FULL}-refiner.{NAMESPACE}.svc.cluster.local"
    for c in spar_containers(production_objects):
        env = env_of(c)
        assert "SPAR_TLS__PLAINTEXT" not in env, c["name"]
        assert env["SPAR_TLS__SERVER_NAME"] == refiner
    custom = tools.render(VALUES_PRODUCTION, sets=["tls.serverName=spar.internal"])
    for c in spar_containers(custom):
        assert env_of(c)["SPAR_TLS__SERVER_NAME"] == "spar.internal"
