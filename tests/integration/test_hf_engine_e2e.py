"""The actor and refiner on the hf engine, in a process where vLLM cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import make_lora

SCRIPT = Path(__file__).with_name("hf_actor_script.py")
ROOT = SCRIPT.parents[2]


@pytest.mark.slow
def test_actor_on_hf_engine_without_vllm(model_path: Path, tmp_path: Path) -> None:
    lora = make_lora(model_path, tmp_path / "lora", seed=5)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(model_path), str(lora), str(tmp_path / "cache")],
        cwd=ROOT,
        env={**os.environ, "SPAR_TLS__PLAINTEXT": "true"},  # local test servers, no certificate
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["vllm_imported"] is False
    assert seen["engine"] == "hf" and seen["device"] == "cpu"
    assert seen["base"].strip() and seen["tuned"].strip()
    assert seen["tuned"] != seen["base"], "the adapter must change the greedy output"
    assert seen["tuned_adapter"] == "actor-1-0123456789ab"
    assert 0 < seen["tuned_tokens"] <= 8
    assert seen["streamed"] == seen["tuned"]
    assert seen["refiner_ready"] is True
