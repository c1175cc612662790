"""The Dockerfiles, checked without a Docker engine: the official Dockerfile parser,
hadolint, and agreement with the Python packaging and with the chart."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from deploy_tools import CHART, ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

DOCKER = ROOT / "deploy" / "docker"
IMAGES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(path: Path) -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(path)))


def final_stage(path: Path) -> list[dockerfile.Command]:
    cmds = instructions(path)
    last_from = max(i for i, c in enumerate(cmds) if c.cmd == "FROM")
    return cmds[last_from:]


def args_of(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in instructions(path):
        if c.cmd == "ARG" and "=" in c.value[0]:
            key, _, value = c.value[0].partition("=")
            out[key] = value.strip('"')
    return out


def env_of(cmds: list[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for c in cmds:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2], strict=True))
    return env


def run_lines(path: Path) -> list[str]:
    """RUN commands with the ARG defaults substituted."""
    args = args_of(path)
    lines = []
    for c in instructions(path):
        if c.cmd == "RUN":
            text = c.value[0]
            for key, value in args.items():
                text = text.replace(f"${{{key}}}", value).replace(f"${key}", value)
            lines.append(text)
    return lines


def pinned(requirements: list[str]) -> dict[str, str]:
    out = {}
    for line in requirements:
        req = Requirement(line)
        (spec,) = req.specifier
        out[req.name.lower()] = spec.version
    return out


@pytest.mark.parametrize("variant", sorted(IMAGES))
def test_dockerfile_parses_and_passes_hadolint(variant: str) -> None:
    assert instructions(IMAGES[variant])
    exe = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(exe), "--config", str(DOCKER / ".hadolint.yaml"), str(IMAGES[variant])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_problems() -> None:
    """The linter runs for real: a bad Dockerfile fails it."""
    exe = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(exe), "-"], input="FROM python\nRUN cd /tmp && pip install x\n",
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "DL3006" in result.stdout


@pytest.mark.parametrize("variant", sorted(IMAGES))
def test_image_runs_spar_as_non_root_with_the_cache_as_a_volume(variant: str) -> None:
    stage = final_stage(IMAGES[variant])
    by_cmd: dict[str, list[Any]] = {}
    for c in stage:
        by_cmd.setdefault(c.cmd, []).append(c)
    (entrypoint,) = by_cmd["ENTRYPOINT"]
    assert entrypoint.json and list(entrypoint.value) == ["spar"]
    (user,) = by_cmd["USER"]
    uid, _, gid = user.value[0].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (runAsNonRoot needs it)"
    env = env_of(stage)
    cache = env["SPAR_CACHE_DIR"]
    volumes = {v for c in by_cmd["VOLUME"] for v in c.value}
    assert cache in volumes
    assert env["HF_HUB_OFFLINE"] == "1"
    # The chart runs pods as this user and mounts its cache volume at this path.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)
    pod_tpl = (CHART / "templates" / "_pod.tpl").read_text()
    assert f"{{name: cache, mountPath: {cache}}}" in pod_tpl
    assert f"{{name: SPAR_CACHE_DIR, value: {cache}}}" in pod_tpl


def test_image_variants_match_the_chart_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["image"]["properties"]["variant"]["enum"]) == set(IMAGES)


@pytest.mark.parametrize(("variant", "extra"), [("cpu", "cpu"), ("cuda", "cuda")])
def test_pip_installs_match_pyproject_pins(variant: str, extra: str) -> None:
    pins = pinned(PYPROJECT["project"]["optional-dependencies"][extra])
    runs = " ".join(run_lines(IMAGES[variant]))
    installed = {}
    for m in re.finditer(r'"?([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9_.+-]*)"?', runs):
        installed[m.group(1).lower()] = m.group(2)
    assert installed, "no pinned pip install found"
    for name, version in installed.items():
        assert name in pins, f"{variant}: {name} is installed but not in pyproject's [{extra}]"
        assert pins[name] == version, f"{variant}: {name}=={version}, pyproject has {pins[name]}"
    # The project itself goes in with the same extra, so every other pin applies too.
    assert f'pip install "/src[{extra}]"' in runs


def test_cpu_image_cleans_up_like_bootstrap() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    m = re.search(r"uninstall (?:--quiet )?-y ([a-z ]+?)(?: >|$)", bootstrap, re.MULTILINE)
    assert m, "bootstrap.sh uninstalls the CUDA torch add-ons"
    wanted = set(m.group(1).split())
    runs = " ".join(run_lines(IMAGES["cpu"]))
    m2 = re.search(r"pip uninstall -y ([a-z ]+)", runs)
    assert m2 and set(m2.group(1).split()) == wanted


@pytest.mark.parametrize("variant", sorted(IMAGES))
def test_python_modules_the_image_runs_exist(variant: str) -> None:
    for line in run_lines(IMAGES[variant]):
        for m in re.finditer(r"python -m ([\w.]+)", line):
            module = m.group(1)
            if module in {"venv", "pip"}:
                continue
            assert importlib.util.find_spec(module) is not None, f"{variant}: no module {module}"


@pytest.mark.parametrize("variant", sorted(IMAGES))
def test_base_python_satisfies_requires_python(variant: str) -> None:
    version = args_of(IMAGES[variant])["PYTHON_VERSION"]
    assert f"{version}.0" in SpecifierSet(PYPROJECT["project"]["requires-python"])
    for c in instructions(IMAGES[variant]):
        if c.cmd == "FROM":
            assert c.value[0].startswith("python:${PYTHON_VERSION}-slim")


def _ignore_patterns(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_build_context_has_what_pip_install_needs() -> None:
    cpu = DOCKER / "Dockerfile.cpu.dockerignore"
    cuda = DOCKER / "Dockerfile.cuda.dockerignore"
    assert _ignore_patterns(cpu) == _ignore_patterns(cuda)
    patterns = _ignore_patterns(cpu)
    assert patterns[0] == "*", "an allowlist: the context is only what is re-included"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]}
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    needed |= {p.rstrip("*") for p in packages}
    assert needed <= included, needed - included
    for c in instructions(IMAGES["cpu"]) + instructions(IMAGES["cuda"]):
        if c.cmd == "COPY" and not c.flags:
            assert c.value[0] == ".", "copies the (allowlisted) context as a whole"


@pytest.mark.parametrize("variant", sorted(IMAGES))
def test_spar_commands_the_image_runs_exist(variant: str) -> None:
    from spar_cli.main import build_parser

    stage = final_stage(IMAGES[variant])
    cmd = next(c for c in stage if c.cmd == "CMD")
    argv = list(cmd.value)
    assert argv == ["--help"]
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 0
    for line in run_lines(IMAGES[variant]):
        for m in re.finditer(r"(?:^|&&\s*)spar ([^&|;]*)", line):
            words = shlex.split(m.group(1).split(">")[0])
            with pytest.raises(SystemExit) as exc:
                build_parser().parse_args(words)
            assert exc.value.code == 0, words
