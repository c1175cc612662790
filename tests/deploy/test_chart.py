"""The Helm chart, validated offline: lint, render, Kubernetes schemas, values schema, and
what the rendered objects promise (discovery, single writer, probes, network exposure,
TLS and auth wiring, GPUs, model source)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from deploy_tools import (
    CHART,
    DASHBOARD,
    NAMESPACE,
    RELEASE,
    VALUES_CPU,
    VALUES_PRODUCTION,
    Tools,
    containers,
    env_of,
    find,
    kubernetes_validate,
    one,
    parse_manifests,
    pod_spec,
)

from spar.config import Settings

Objects = list[dict[str, Any]]
FULL = f"{RELEASE}-spar" if RELEASE != "spar" else "spar"
ENGINE_ROLES = ("actor", "refiner")
ROLES = ("actor", "refiner", "trainer", "coordinator")
PORTS = {"actor": 50051, "refiner": 50052, "trainer": 50053, "coordinator": 50054}


def fqdn(name: str) -> str:
    return f"{name}.{NAMESPACE}.svc.cluster.local"


# -- lint, render, Kubernetes schemas ----------------------------------------------------


@pytest.mark.parametrize("which", ["defaults", "production", "cpu"])
def test_helm_lint_strict(tools: Tools, values_files: dict[str, list[Path]], which: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for f in values_files[which]:
        args += ["--values", str(f)]
    result = tools.run("helm", *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.fixture(scope="module")
def manifests(rendered: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The chart rendered with each values combination, a file each (named after it)."""
    folder = tmp_path_factory.mktemp("manifests")
    for which, text in rendered.items():
        (folder / f"{which}.yaml").write_text(text)
    return sorted(folder.iterdir())


@pytest.mark.parametrize("k8s", ["1.33.0", "1.34.0", "1.35.0"])
def test_rendered_manifests_pass_strict_kubernetes_schemas(manifests: list[Path], k8s: str) -> None:
    result = kubernetes_validate(*manifests, version=k8s)
    assert result.returncode == 0, f"@ {k8s}:\n{result.stdout}{result.stderr}"
    # Only the Prometheus Operator's custom resources may go unchecked (no schema
    # offline); their content is checked in test_alerts.py and below.
    for line in (result.stdout + result.stderr).splitlines():
        if "Couldn't find schema" in line:
            assert "monitoring.coreos.com/v1" in line, line


def test_strict_validation_catches_a_misspelled_field(tmp_path: Path) -> None:
    """The validator really checks fields (a misspelling is what only --strict finds)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
        "spec: {ports: [{port: 1}], selectr: {a: b}}\n"
    )
    result = kubernetes_validate(bad, version="1.35.0")
    assert result.returncode != 0
    assert "selectr" in result.stdout + result.stderr


def test_default_render_has_every_part(default_objects: Objects) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in default_objects}
    for role in ROLES:
        assert ("Deployment", f"{FULL}-{role}") in kinds
        assert ("Service", f"{FULL}-{role}") in kinds
        assert ("Service", f"{FULL}-{role}-headless") in kinds
    for role in ENGINE_ROLES:
        assert ("PodDisruptionBudget", f"{FULL}-{role}") in kinds
    assert ("Role", f"{FULL}-coordinator") in kinds
    assert ("RoleBinding", f"{FULL}-coordinator") in kinds
    assert ("PersistentVolumeClaim", f"{FULL}-trainer-store") in kinds
    assert ("PersistentVolumeClaim", f"{FULL}-coordinator-state") in kinds
    assert ("ConfigMap", f"{FULL}-dashboard") in kinds
    assert ("Pod", f"{FULL}-test-refined-answer") in kinds
    assert ("NetworkPolicy", f"{FULL}-internal") in kinds
    assert ("NetworkPolicy", f"{FULL}-refiner-clients") in kinds
    # The Prometheus Operator resources are opt-in.
    assert not find(default_objects, "ServiceMonitor")
    assert not find(default_objects, "PrometheusRule")


def test_production_render_enables_operator_resources(production_objects: Objects) -> None:
    assert len(find(production_objects, "ServiceMonitor")) == 1
    assert len(find(production_objects, "PrometheusRule")) == 1
    for role, replicas in (("actor", 3), ("refiner", 2)):
        assert one(production_objects, "Deployment", f"{FULL}-{role}")["spec"]["replicas"] == (
            replicas
        )


# -- values schema -----------------------------------------------------------------------

BAD_VALUES = [
    (["actor.gpu=-1"], "/actor/gpu"),
    (["image.variant=rocm"], "/image/variant"),
    (["actor.replicass=2"], "'replicass' not allowed"),
    (["refiner.replicas=-1"], "/refiner/replicas"),
    (["engine.gpuMemoryUtilization=1.5"], "/engine/gpuMemoryUtilization"),
    (["engine.dtype=fp8"], "/engine/dtype"),
    (["tls.enabled=true"], "/tls/existingSecret"),
    (["auth.enabled=true"], "/auth/existingSecret"),
    (["model.source=pvc"], "/model/existingClaim"),
    (["model.source=s3"], "/model/source"),
    (["model.source=pvc", "model.existingClaim=m", "model.path=../etc"], "/model/path"),
    (["coordinator.discovery=static"], "'discovery' not allowed"),
    (["coordinator.persistence.size=1 GB"], "/coordinator/persistence/size"),
    (["ports.actor.grpc=70000"], "/ports/actor/grpc"),
    (["refiner.service.type=ExternalName"], "/refiner/service/type"),
    (["alerts.SparSearchCostHigh.threshold=0"], "/alerts/SparSearchCostHigh/threshold"),
    (["alerts.SparServiceDown.for=five minutes"], "/alerts/SparServiceDown/for"),
    (["alerts.SparServiceDown.severity=page"], "/alerts/SparServiceDown/severity"),
    (["alerts.SparNope.enabled=true"], "'SparNope' not allowed"),
    (["cache.sizeLimit=lots"], "/cache/sizeLimit"),
    (["trainer.shm.sizeLimit=lots"], "/trainer/shm/sizeLimit"),
    (["actor.resources.requests.memory=16 GB"], "/actor/resources/requests/memory"),
    (["actor.pdb.maxUnavailable=0"], "/actor/pdb/maxUnavailable"),
    (["networkPolicy.monitoringNamespace=Not_A_Namespace"], "/networkPolicy/monitoringNamespace"),
]


@pytest.mark.parametrize(("sets", "where"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_schema_rejects_bad_values(tools: Tools, sets: list[str], where: str) -> None:
    result = tools.template(sets=sets, check=False)
    assert result.returncode != 0, f"{sets} rendered without error"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr, result.stderr


def test_schema_is_closed_everywhere_it_can_be() -> None:
    """Every object of values.schema.json that lists properties refuses unknown keys."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            # if/then overlays only add conditions to a closed object.
            overlay = path.endswith(("/if", "/then"))
            closed = node.get("additionalProperties") is False
            if "properties" in node and not closed and not overlay:
                open_objects.append(path or "/")
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert open_objects == [], open_objects


def test_every_default_value_is_in_the_schema(tools: Tools) -> None:
    """values.yaml and the schema agree (helm lint --strict would fail otherwise, but the
    example files must pass too): render each shipped values file."""
    for files in ([], [VALUES_PRODUCTION], [VALUES_CPU]):
        assert tools.template(*files).returncode == 0


# -- discovery and services --------------------------------------------------------------


def _selects(service: dict[str, Any], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in service["spec"]["selector"].items())


def test_services_select_their_role_only(default_objects: Objects) -> None:
    deployments = find(default_objects, "Deployment")
    for role in ROLES:
        for name in (f"{FULL}-{role}", f"{FULL}-{role}-headless"):
            svc = one(default_objects, "Service", name)
            selected = [d["metadata"]["name"] for d in deployments if _selects(svc, d)]
            assert selected == [f"{FULL}-{role}"], (name, selected)
        headless = one(default_objects, "Service", f"{FULL}-{role}-headless")
        assert headless["spec"]["clusterIP"] == "None"
        ports = {p["name"]: p["port"] for p in headless["spec"]["ports"]}
        assert ports["grpc"] == PORTS[role]
        assert "metrics" in ports


def test_refiner_reaches_every_actor_through_the_headless_service(
    default_objects: Objects,
) -> None:
    refiner = containers(one(default_objects, "Deployment", f"{FULL}-refiner"))[0]
    args = refiner["args"]
    target = args[args.index("--actor") + 1]
    assert target == f"dns:///{fqdn(f'{FULL}-actor-headless')}:{PORTS['actor']}"
    # Every pod's clients find the engine roles the same way (round_robin over DNS).
    env = env_of(refiner)
    assert env["SPAR_ACTOR_TARGET"] == target
    assert env["SPAR_REFINER_TARGET"].startswith(f"dns:///{fqdn(f'{FULL}-refiner-headless')}")


def test_coordinator_can_only_read_endpointslices_in_its_namespace(
    default_objects: Objects,
) -> None:
    assert not find(default_objects, "ClusterRole")
    assert not find(default_objects, "ClusterRoleBinding")
    role = one(default_objects, "Role", f"{FULL}-coordinator")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = one(default_objects, "RoleBinding", f"{FULL}-coordinator")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{FULL}-coordinator", "namespace": NAMESPACE}
    ]
    coordinator = one(default_objects, "Deployment", f"{FULL}-coordinator")
    spec = pod_spec(coordinator)
    assert spec["serviceAccountName"] == f"{FULL}-coordinator"
    assert spec["automountServiceAccountToken"] is True
    env = env_of(containers(coordinator)[0])
    for r in ENGINE_ROLES:
        prefix = f"SPAR_COORDINATOR__{r.upper()}__"
        service = one(default_objects, "Service", env[f"{prefix}SERVICE"])
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == r
        assert env[f"{prefix}NAMESPACE"] == NAMESPACE
        assert env[f"{prefix}PORT"] in {p["name"] for p in service["spec"]["ports"]}
        target = env[f"SPAR_COORDINATOR__{r.upper()}_TARGET"]
        assert target == f"dns:///{fqdn(service['metadata']['name'])}:{PORTS[r]}"
    assert env["SPAR_COORDINATOR__TRAINER_TARGET"] == f"{fqdn(f'{FULL}-trainer')}:50053"
    # Nothing else gets an API token.
    for role in ("actor", "refiner", "trainer"):
        spec = pod_spec(one(default_objects, "Deployment", f"{FULL}-{role}"))
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] != f"{FULL}-coordinator"


def test_replicas_know_the_coordinator(default_objects: Objects) -> None:
    """A (re)starting replica reconciles to the coordinator's desired version."""
    for role in ENGINE_ROLES:
        env = env_of(containers(one(default_objects, "Deployment", f"{FULL}-{role}"))[0])
        assert env["SPAR_COORDINATOR_TARGET"] == f"{fqdn(f'{FULL}-coordinator')}:50054"


def test_coordinator_state_survives_restarts(default_objects: Objects, tools: Tools) -> None:
    coordinator = one(default_objects, "Deployment", f"{FULL}-coordinator")
    assert coordinator["spec"]["strategy"] == {"type": "Recreate"}
    container = containers(coordinator)[0]
    state = env_of(container)["SPAR_COORDINATOR__STATE_DIR"]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["state"] == state
    volumes = {v["name"]: v for v in pod_spec(coordinator)["volumes"]}
    claim = volumes["state"]["persistentVolumeClaim"]["claimName"]
    pvc = one(default_objects, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # Without persistence the state lives in an emptyDir and no claim is made.
    objects = tools.render(sets=["coordinator.persistence.enabled=false"])
    volumes = {
        v["name"]: v for v in pod_spec(one(objects, "Deployment", f"{FULL}-coordinator"))["volumes"]
    }
    assert "emptyDir" in volumes["state"]
    assert not find(objects, "PersistentVolumeClaim", f"{FULL}-coordinator-state")


def test_approval_mode_is_a_chart_value(default_objects: Objects, tools: Tools) -> None:
    def approval(objects: Objects) -> str:
        coordinator = one(objects, "Deployment", f"{FULL}-coordinator")
        return env_of(containers(coordinator)[0])["SPAR_COORDINATOR__REQUIRE_APPROVAL"]

    assert approval(default_objects) == "false"
    assert approval(tools.render(sets=["coordinator.requireApproval=true"])) == "true"
    assert Settings(coordinator={"require_approval": "true"}).coordinator.require_approval


def test_criteria_packs_and_the_outside_judge_reach_refiner_and_coordinator(
    tools: Tools, default_objects: Objects, tmp_path: Path
) -> None:
    import yaml

    from spar.criteria_packs import parse_pack

    example = Path(__file__).resolve().parents[2] / "examples" / "criteria" / "support.yaml"
    values = tmp_path / "judging.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "criteria": {"packs": {"support.yaml": example.read_text()}},
                "externalJudge": {
                    "url": "https://judge.example/v1", "model": "judge-large",
                    "apiKeySecret": "judge-key", "sampleFraction": 0.1,
                },
            }
        )
    )  # fmt: skip
    objects = tools.render(values)
    config = one(objects, "ConfigMap", f"{FULL}-criteria")
    assert parse_pack(config["data"]["support.yaml"], "support.yaml").name == "support"
    for role in ("refiner", "coordinator"):
        deployment = one(objects, "Deployment", f"{FULL}-{role}")
        container = containers(deployment)[0]
        env = env_of(container)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        assert env["SPAR_CRITERIA__DIR"] == mounts["criteria"]["mountPath"], role
        assert "subPath" not in mounts["criteria"], "a subPath mount never sees updates"
        assert volumes["criteria"]["configMap"]["name"] == f"{FULL}-criteria"
        assert env["SPAR_EXTERNAL_JUDGE__URL"] == "https://judge.example/v1"
        assert env["SPAR_EXTERNAL_JUDGE__MODEL"] == "judge-large"
        assert env["SPAR_EXTERNAL_JUDGE__SAMPLE_FRACTION"] == "0.1"
        key_file = Path(env["SPAR_EXTERNAL_JUDGE__API_KEY_FILE"])
        assert str(key_file.parent) == mounts["external-judge"]["mountPath"]
        assert volumes["external-judge"]["secret"] == {
            "secretName": "judge-key", "items": [{"key": "api-key", "path": key_file.name}],
        }  # fmt: skip
    actor_env = env_of(containers(one(objects, "Deployment", f"{FULL}-actor"))[0])
    assert not any(k.startswith(("SPAR_CRITERIA", "SPAR_EXTERNAL")) for k in actor_env)
    manifest = tmp_path / "judging-manifest.yaml"
    manifest.write_text(tools.template(values).stdout)
    result = kubernetes_validate(manifest, version="1.35.0")
    assert result.returncode == 0, result.stdout + result.stderr
    # Off by default; an existing ConfigMap is used instead of packs.
    assert not find(default_objects, "ConfigMap", f"{FULL}-criteria")
    refiner_env = env_of(containers(one(default_objects, "Deployment", f"{FULL}-refiner"))[0])
    assert "SPAR_CRITERIA__DIR" not in refiner_env and "SPAR_EXTERNAL_JUDGE__URL" not in refiner_env
    objects = tools.render(sets=["criteria.existingConfigMap=our-packs"])
    volumes = {
        v["name"]: v for v in pod_spec(one(objects, "Deployment", f"{FULL}-refiner"))["volumes"]
    }
    assert volumes["criteria"]["configMap"]["name"] == "our-packs"
    assert not find(objects, "ConfigMap", f"{FULL}-criteria")
    # A URL without a model is refused by the values schema.
    bad = tools.template(sets=["externalJudge.url=https://x/v1"], check=False)
    assert bad.returncode != 0 and "model" in bad.stderr


# -- trainer: one writer -----------------------------------------------------------------


def test_trainer_is_a_single_writer_on_a_rwo_claim(default_objects: Objects) -> None:
    trainer = one(default_objects, "Deployment", f"{FULL}-trainer")
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"] == {"type": "Recreate"}
    claim = one(default_objects, "PersistentVolumeClaim", f"{FULL}-trainer-store")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    container = containers(trainer)[0]
    args = container["args"]
    store, state = args[args.index("--store") + 1], args[args.index("--state-dir") + 1]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # Store and state: two folders of the one claim.
    assert mounts[store]["name"] == mounts[state]["name"] == "data"
    assert mounts[store]["subPath"] != mounts[state]["subPath"]
    volumes = {v["name"]: v for v in pod_spec(trainer)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{FULL}-trainer-store"
    assert not find(default_objects, "PodDisruptionBudget", f"{FULL}-trainer")


def test_trainer_uses_an_existing_claim_when_given(tools: Tools) -> None:
    objects = tools.render(sets=["trainer.persistence.existingClaim=store"])
    assert not find(objects, "PersistentVolumeClaim", f"{FULL}-trainer-store")
    volumes = {
        v["name"]: v for v in pod_spec(one(objects, "Deployment", f"{FULL}-trainer"))["volumes"]
    }
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "store"


# -- probes, GPUs, shm, model source -----------------------------------------------------


def test_grpc_probes_on_the_service_port(default_objects: Objects) -> None:
    for role in ROLES:
        container = containers(one(default_objects, "Deployment", f"{FULL}-{role}"))[0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == PORTS[role]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": PORTS[role]}, (role, probe)
        startup = container["startupProbe"]
        # The engine loads and warms before health reports SERVING: allow 10+ minutes.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_gpus_shm_and_scheduling(production_objects: Objects, cpu_objects: Objects) -> None:
    for role, gpus in (("actor", 1), ("refiner", 1), ("trainer", 2)):
        deployment = one(production_objects, "Deployment", f"{FULL}-{role}")
        spec = pod_spec(deployment)
        resources = containers(deployment)[0]["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == gpus
        assert resources["limits"]["nvidia.com/gpu"] == gpus
        assert spec["runtimeClassName"] == "nvidia"
        assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        shm = {v["name"]: v for v in spec["volumes"]}["shm"]["emptyDir"]
        assert shm["medium"] == "Memory"
        mounts = {m["name"]: m["mountPath"] for m in containers(deployment)[0]["volumeMounts"]}
        assert mounts["shm"] == "/dev/shm"
    coordinator = containers(one(production_objects, "Deployment", f"{FULL}-coordinator"))[0]
    assert "nvidia.com/gpu" not in coordinator["resources"].get("limits", {})
    for role in ("actor", "refiner", "trainer"):
        resources = containers(one(cpu_objects, "Deployment", f"{FULL}-{role}"))[0]["resources"]
        assert "nvidia.com/gpu" not in resources.get("limits", {})
        assert "nvidia.com/gpu" not in resources.get("requests", {})
    actor_env = env_of(containers(one(cpu_objects, "Deployment", f"{FULL}-actor"))[0])
    assert actor_env["SPAR_ENGINE__DTYPE"] == "auto"
    assert actor_env["SPAR_ENGINE__ENFORCE_EAGER"] == "true"


def test_trainer_jobs_use_every_gpu_of_the_pod(
    production_objects: Objects, cpu_objects: Objects, tools: Tools
) -> None:
    """trainer.gpu is the pod's GPUs and each job's world size; NCCL gets its /dev/shm and
    never NVLink multicast."""

    def trainer(objects: Objects) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        deployment = one(objects, "Deployment", f"{FULL}-trainer")
        container = containers(deployment)[0]
        shm = {v["name"]: v for v in pod_spec(deployment)["volumes"]}["shm"]["emptyDir"]
        return env_of(container), container["resources"], shm

    env, resources, shm = trainer(production_objects)
    assert resources["limits"]["nvidia.com/gpu"] == 2
    assert env["SPAR_TRAINER__WORLD_SIZE"] == "2"
    assert env["NCCL_NVLS_ENABLE"] == "0"
    assert shm == {"medium": "Memory", "sizeLimit": "16Gi"}, "the chart-wide size by default"
    env, _, _ = trainer(cpu_objects)
    assert env["SPAR_TRAINER__WORLD_SIZE"] == "0", "0: one process on CPU"
    objects = tools.render(sets=["trainer.gpu=4", "trainer.shm.sizeLimit=32Gi"])
    env, resources, shm = trainer(objects)
    assert env["SPAR_TRAINER__WORLD_SIZE"] == "4"
    assert resources["requests"]["nvidia.com/gpu"] == 4
    assert shm["sizeLimit"] == "32Gi"
    actor = pod_spec(one(objects, "Deployment", f"{FULL}-actor"))
    assert {v["name"]: v for v in actor["volumes"]}["shm"]["emptyDir"]["sizeLimit"] == "8Gi"


def test_default_model_is_prepared_into_the_cache_volume(default_objects: Objects) -> None:
    for role in ("actor", "refiner", "trainer"):
        deployment = one(default_objects, "Deployment", f"{FULL}-{role}")
        (init,) = containers(deployment, init=True)
        main = containers(deployment)[0]
        assert init["command"] + init["args"] == ["spar", "model", "prepare"]
        assert env_of(init)["SPAR_CACHE_DIR"] == env_of(main)["SPAR_CACHE_DIR"]
        init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
        main_mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
        assert init_mounts["cache"] == main_mounts["cache"] == env_of(main)["SPAR_CACHE_DIR"]
        assert "--model" not in main["args"]
    coordinator = one(default_objects, "Deployment", f"{FULL}-coordinator")
    assert not containers(coordinator, init=True)


def test_model_from_an_existing_claim(production_objects: Objects) -> None:
    for role in ("actor", "refiner", "trainer"):
        deployment = one(production_objects, "Deployment", f"{FULL}-{role}")
        assert not containers(deployment, init=True)
        main = containers(deployment)[0]
        assert main["args"][main["args"].index("--model") + 1] == "/models/Qwen2.5-7B-Instruct"
        mounts = {m["name"]: m for m in main["volumeMounts"]}
        assert mounts["model"]["mountPath"] == "/models" and mounts["model"]["readOnly"]
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        claim = volumes["model"]["persistentVolumeClaim"]
        assert claim == {"claimName": "models", "readOnly": True}


def test_pods_run_as_non_root(default_objects: Objects) -> None:
    for obj in find(default_objects, "Deployment") + find(default_objects, "Pod"):
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for c in containers(obj) + containers(obj, init=True):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


# -- network exposure --------------------------------------------------------------------


Labels = dict[str, str]


def namespace(name: str, **labels: str) -> Labels:
    return {"kubernetes.io/metadata.name": name, **labels}


def _reachable_ports(
    objects: Objects, pod_labels: Labels, peer_labels: Labels, peer_ns: Labels
) -> set[str] | None:
    """Named ports of a pod a peer may reach under the NetworkPolicies (None: every port)."""
    policies = [
        p
        for p in find(objects, "NetworkPolicy")
        if all(pod_labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
    ]
    if not policies:
        return None
    reachable: set[str] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if peers is not None and not any(
                _peer_matches(peer, peer_labels, peer_ns) for peer in peers
            ):
                continue
            if "ports" not in rule:
                return None
            reachable |= {str(p["port"]) for p in rule["ports"]}
    return reachable


def _peer_matches(peer: dict[str, Any], labels: Labels, ns: Labels) -> bool:
    if "namespaceSelector" in peer:
        wanted = peer["namespaceSelector"].get("matchLabels", {})
        if any(ns.get(k) != v for k, v in wanted.items()):
            return False
    elif ns["kubernetes.io/metadata.name"] != NAMESPACE:
        return False  # a bare podSelector only matches pods of the policy's namespace
    wanted = peer.get("podSelector", {}).get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def test_only_the_refiner_client_port_is_reachable_from_outside(
    default_objects: Objects,
) -> None:
    outsider = ({"app": "someone-else"}, namespace("other"))
    in_namespace = ({"app": "someone-else"}, namespace(NAMESPACE))
    monitoring = ({"app": "prometheus"}, namespace("monitoring"))
    for role in ROLES:
        labels = pod_spec_labels(default_objects, role)
        sibling = (dict(labels, **{"app.kubernetes.io/component": "actor"}), namespace(NAMESPACE))
        for peer_labels, ns in (outsider, in_namespace):
            ports = _reachable_ports(default_objects, labels, peer_labels, ns)
            expected = {"grpc"} if role == "refiner" else set()
            assert ports == expected, (role, ns, ports)
        assert _reachable_ports(default_objects, labels, *monitoring) == (
            {"grpc", "metrics"} if role == "refiner" else {"metrics"}
        )
        # Pods of the release (and the helm test pod) reach every port.
        assert _reachable_ports(default_objects, labels, *sibling) is None


def test_refiner_clients_can_be_restricted(production_objects: Objects) -> None:
    labels = pod_spec_labels(production_objects, "refiner")
    assert _reachable_ports(production_objects, labels, {"app": "x"}, namespace("other")) == set()
    client_ns = namespace("shop", **{"spar-client": "true"})
    assert _reachable_ports(production_objects, labels, {"app": "x"}, client_ns) == {"grpc"}
    actor = pod_spec_labels(production_objects, "actor")
    assert _reachable_ports(production_objects, actor, {"app": "x"}, client_ns) == set()


def pod_spec_labels(objects: Objects, role: str) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment", f"{FULL}-{role}")["spec"]["template"][
        "metadata"
    ]["labels"]
    return labels


# -- TLS and auth ------------------------------------------------------------------------


def test_tls_and_auth_files_are_wired_into_every_spar_container(
    production_objects: Objects,
) -> None:
    pods = find(production_objects, "Deployment") + find(production_objects, "Pod")
    assert len(pods) == 5
    for obj in pods:
        volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "spar-tls"
        assert {i["key"] for i in volumes["tls"]["secret"]["items"]} == {
            "tls.crt",
            "tls.key",
            "ca.crt",
        }
        assert volumes["auth"]["secret"]["secretName"] == "spar-auth"
        for c in containers(obj):
            env = env_of(c)
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            assert mounts["tls"]["readOnly"] and mounts["auth"]["readOnly"]
            tls_dir, auth_dir = mounts["tls"]["mountPath"], mounts["auth"]["mountPath"]
            items = {i["path"] for i in volumes["tls"]["secret"]["items"]}
            for var, file in (
                ("SPAR_TLS__CERT_FILE", "tls.crt"),
                ("SPAR_TLS__KEY_FILE", "tls.key"),
                ("SPAR_TLS__CA_FILE", "ca.crt"),
            ):
                assert env[var] == f"{tls_dir}/{file}" and file in items
            auth_items = {i["path"] for i in volumes["auth"]["secret"]["items"]}
            assert env["SPAR_AUTH__TOKENS_FILE"] == f"{auth_dir}/tokens"
            assert env["SPAR_AUTH__TOKEN_FILE"] == f"{auth_dir}/token"
            assert auth_items == {"tokens", "token"}


def test_tls_switches_probes_to_spar_health(production_objects: Objects) -> None:
    """Kubelet's gRPC probe cannot speak TLS; `spar health` inside the pod can."""
    for role in ROLES:
        container = containers(one(production_objects, "Deployment", f"{FULL}-{role}"))[0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" not in container[probe]
            assert container[probe]["exec"]["command"] == [
                "spar",
                "health",
                "--target",
                f"localhost:{PORTS[role]}",
            ]


# -- observability and helm test ---------------------------------------------------------


def test_servicemonitor_scrapes_each_replica_once_with_the_alert_labels(
    production_objects: Objects,
) -> None:
    (monitor,) = find(production_objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s
        for s in find(production_objects, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    # Headless Services only: scraping a ClusterIP would hit a random replica.
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(
        f"{FULL}-{r}-headless" for r in ROLES
    )
    assert all("metrics" in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    # spar's own `service` label (actor, refiner, ...) must win over the Service name.
    assert endpoint["honorLabels"] is True
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == "spar"  # the alerts' up{job="spar"}
    assert relabel["service"]["sourceLabels"] == [
        "__meta_kubernetes_service_label_app_kubernetes_io_component"
    ]


def test_dashboard_configmap_carries_the_dashboard(
    default_objects: Objects, production_objects: Objects
) -> None:
    cm = one(default_objects, "ConfigMap", f"{FULL}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["spar.json"]) == json.loads(DASHBOARD.read_text())
    prod = one(production_objects, "ConfigMap", f"{FULL}-dashboard")
    assert prod["metadata"]["namespace"] == "monitoring"
    assert prod["metadata"]["annotations"] == {"grafana_folder": "spar"}


def test_dashboard_label_is_configurable(tools: Tools) -> None:
    objects = tools.render(sets=["dashboard.labels.grafana_dashboard=null", "dashboard.labels.x=y"])
    labels = one(objects, "ConfigMap", f"{FULL}-dashboard")["metadata"]["labels"]
    assert labels["x"] == "y" and "grafana_dashboard" not in labels
    assert not find(tools.render(sets=["dashboard.enabled=false"]), "ConfigMap")


def test_helm_test_pod_asks_the_refiner_for_a_refined_answer(default_objects: Objects) -> None:
    pod = one(default_objects, "Pod", f"{FULL}-test-refined-answer")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = containers(pod)
    argv = container["command"] + container["args"]
    assert argv[:2] == ["spar", "refine"]
    assert argv[argv.index("--target") + 1] == f"{fqdn(f'{FULL}-refiner')}:{PORTS['refiner']}"
    assert "--json" in argv


def test_pdbs_allow_drains(production_objects: Objects) -> None:
    for role in ENGINE_ROLES:
        pdb = one(production_objects, "PodDisruptionBudget", f"{FULL}-{role}")
        assert pdb["spec"]["maxUnavailable"] == 1
        deployment = one(production_objects, "Deployment", f"{FULL}-{role}")
        assert (
            pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        )


def test_long_release_names_fit_kubernetes_limits(tools: Tools) -> None:
    name = "a-very-long-release-name-for-a-team-that-likes-names"
    out = tools.run(
        "helm", "template", name, str(CHART), "--namespace", NAMESPACE, "--set",
        "metrics.serviceMonitor.enabled=true",
    ).stdout  # fmt: skip
    for obj in parse_manifests(out):
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
        if obj["kind"] == "Service":
            assert len(obj["metadata"]["name"]) <= 63


# -- the environment the chart sets is what spar reads -----------------------------------

#: Read by spar_cli.commands.flags.default_target (the CLI's --target defaults).
CLI_TARGETS = {"SPAR_ACTOR_TARGET", "SPAR_REFINER_TARGET", "SPAR_TRAINER_TARGET"}


def _setting(settings: Any, var: str) -> Any:
    node = settings
    for part in var.removeprefix("SPAR_").lower().split("__"):
        if not hasattr(node, part):
            raise AttributeError(var)
        node = getattr(node, part)
    return node


def _same(actual: Any, text: str) -> bool:
    if isinstance(actual, bool):
        return actual == (text.lower() in {"1", "true", "yes"})
    if isinstance(actual, int | float):
        return float(actual) == float(text)
    return str(actual) == text


def test_every_spar_variable_the_chart_sets_is_a_setting(
    production_objects: Objects, cpu_objects: Objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spar.config import Settings

    unread = []
    for objects in (production_objects, cpu_objects):
        for obj in find(objects, "Deployment") + find(objects, "Pod"):
            for c in containers(obj) + containers(obj, init=True):
                env = {k: v for k, v in env_of(c).items() if k.startswith("SPAR_")}
                for key in [k for k in os.environ if k.startswith("SPAR_")]:
                    monkeypatch.delenv(key)
                for key, value in env.items():
                    monkeypatch.setenv(key, value)
                settings = Settings()
                for key, value in env.items():
                    if key in CLI_TARGETS:
                        continue
                    try:
                        actual = _setting(settings, key)
                    except AttributeError:
                        unread.append(f"{obj['metadata']['name']}/{c['name']}: {key}")
                        continue
                    assert _same(actual, value), (key, value, actual)
    assert not unread, "the chart sets variables no setting reads:\n" + "\n".join(unread)
