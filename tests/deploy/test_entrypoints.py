"""Every `spar` command line the chart and the images run exists in the CLI, flags and all.

Commands of services still being built are listed in PENDING: the test reports them as
expected failures by name, and fails once one exists (so the list cannot go stale).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
from deploy_tools import Tools, containers, find

#: Commands the chart calls whose implementation has not landed yet.
PENDING: dict[tuple[str, ...], str] = {}


def spar_command_lines(objects: list[dict[str, Any]]) -> list[list[str]]:
    """argv of every container, init container and exec probe that runs `spar`."""
    lines = []
    for obj in find(objects, "Deployment") + find(objects, "Pod"):
        for c in containers(obj) + containers(obj, init=True):
            argv = list(c.get("command", [])) + list(c.get("args", []))
            if argv and argv[0] == "spar":
                lines.append(argv[1:])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                command = c.get(probe, {}).get("exec", {}).get("command", [])
                if command and command[0] == "spar":
                    lines.append(command[1:])
    return lines


def parses(argv: list[str]) -> tuple[bool, str]:
    from spar_cli.main import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code == 0, err.getvalue().strip()
    return True, ""


def pending_key(argv: list[str]) -> tuple[str, ...] | None:
    return next((k for k in PENDING if tuple(argv[: len(k)]) == k), None)


def test_every_spar_command_of_the_chart_exists(
    default_objects: list[dict[str, Any]],
    production_objects: list[dict[str, Any]],
    cpu_objects: list[dict[str, Any]],
) -> None:
    lines = {
        tuple(argv)
        for objects in (default_objects, production_objects, cpu_objects)
        for argv in spar_command_lines(objects)
    }
    called = {argv[0] for argv in lines}
    assert {"actor", "refiner", "trainer", "coordinator", "model", "health", "refine"} <= called
    wrong, waiting, landed = [], set(), []
    for argv in sorted(lines):
        ok, error = parses(list(argv))
        key = pending_key(list(argv))
        if ok and key is not None:
            landed.append(" ".join(key))
        elif not ok and key is not None:
            waiting.add(f"spar {' '.join(key)}: {PENDING[key]}")
        elif not ok:
            wrong.append(f"spar {' '.join(argv)}\n    {error}")
    assert not wrong, "the chart runs commands the CLI rejects:\n" + "\n".join(wrong)
    assert not landed, f"these exist now; remove them from PENDING: {landed}"
    if waiting:
        pytest.xfail("not in the CLI yet: " + "; ".join(sorted(waiting)))


def test_command_check_rejects_unknown_flags() -> None:
    assert parses(["actor", "serve", "--host", "0.0.0.0", "--port", "1", "--metrics-port", "2"])[0]
    ok, error = parses(["actor", "serve", "--hots", "0.0.0.0"])
    assert not ok and "--hots" in error


def test_commands_are_collected_from_probes_and_init_containers(tools: Tools) -> None:
    objects = tools.render(sets=["tls.enabled=true", "tls.existingSecret=s"])
    lines = spar_command_lines(objects)
    assert ["model", "prepare"] in lines
    assert ["health", "--target", "localhost:50051"] in lines
