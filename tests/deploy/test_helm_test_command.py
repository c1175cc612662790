"""The `helm test` pod's command, run as rendered against a real refiner (the session's)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_tools import containers, one

pytestmark = pytest.mark.slow


async def test_helm_test_command_gets_a_refined_answer(
    default_objects: list[dict[str, Any]], refiner_server: Any
) -> None:
    pod = one(default_objects, "Pod", "spar-test-refined-answer")
    (container,) = containers(pod)
    argv = container["command"] + container["args"]
    assert argv[0] == "spar"
    # The in-cluster Service name, swapped for the session refiner's loopback address.
    argv[argv.index("--target") + 1] = f"127.0.0.1:{refiner_server.port}"
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("spar")),
        *argv[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=900)
    assert proc.returncode == 0, err.decode()
    reply = json.loads(out)
    assert reply["answer"].strip() and reply["original"].strip()
    assert reply["outcome"].startswith("SEARCH_OUTCOME_")
    assert reply["outcome"] != "SEARCH_OUTCOME_UNSPECIFIED"
