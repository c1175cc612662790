"""Shared fixtures: settings for tests, the prepared default model, one actor per session.

Every server binds 127.0.0.1 on a free port (port 0), so test runs never collide.
The engine is the real vLLM engine with the real default model; starting one costs
~40 s on CPU, so each kind of server exists once per test session.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spar.config import EngineSettings, OpenAISettings, Settings, TlsSettings
from spar.model import prepare_default_model

# Servers under test (and the spar subprocesses tests start, which inherit the
# environment) serve plaintext on 127.0.0.1; the TLS tests configure certificates.
os.environ.setdefault("SPAR_TLS__PLAINTEXT", "true")


def _user_cache() -> Path:
    return Settings().cache_dir


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The default model, prepared once into the user's cache (idempotent)."""
    return prepare_default_model(_user_cache()).path


@pytest.fixture(scope="session")
def settings(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for servers under test: the real model, a private cache, free ports."""
    cache = tmp_path_factory.mktemp("spar-cache")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return Settings(
        cache_dir=cache,
        model=str(model_path),
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        engine=EngineSettings(kv_cache_gib=1.0, max_lora_rank=16, max_num_seqs=32),
        grace_period_s=2.0,
        tls=TlsSettings(plaintext=True),
    )


@pytest.fixture(scope="session")
async def actor_server(settings: Settings) -> AsyncIterator[object]:
    """One real actor replica for the session (gRPC on 127.0.0.1, real vLLM engine).

    Started without waiting for the engine, so the health state before warm-up is
    recorded in ``startup_health`` for the health-transition test.
    """
    from services.actor.server import ActorServer
    from spar.client import AsyncActorClient

    server = ActorServer(settings)
    engine_task = await server.start(wait_ready=False)
    assert engine_task is not None
    async with AsyncActorClient(f"127.0.0.1:{server.port}") as client:
        server.startup_health = await client.health()  # type: ignore[attr-defined]
        try:
            await client.generate("hi", max_tokens=1)
            server.startup_generate_error = None  # type: ignore[attr-defined]
        except Exception as exc:
            server.startup_generate_error = exc  # type: ignore[attr-defined]
    await engine_task
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def actor_target(actor_server: object) -> str:
    return f"127.0.0.1:{actor_server.port}"  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def refiner_server(settings: Settings, actor_server: object) -> AsyncIterator[object]:
    """One real refiner replica for the session, calling the session's actor.

    Judge and refine generations are kept short (the CPU engine does ~15 tok/s per
    stream), and admission is tiny (2 searches, 1 waiting) so queue overflow is testable.
    It serves the OpenAI-compatible HTTP endpoint as well (``openai_port``).
    """
    from services.refiner.server import RefinerServer

    refiner = settings.refiner.model_copy(
        update={
            "actor_target": f"127.0.0.1:{actor_server.port}",  # type: ignore[attr-defined]
            "judge_samples": 3,
            "judge_max_tokens": 64,
            "refine_max_tokens": 64,
            "tie_resample_rounds": 1,
            "tie_resample_samples": 1,
            "default_max_nodes": 3,
            "max_concurrent_searches": 2,
            "max_queue": 1,
        }
    )
    # The OpenAI-compatible HTTP endpoint too, on a free port, with quick keep-alives.
    openai = OpenAISettings(enabled=True, port=0, keepalive_s=0.5)
    server = RefinerServer(settings.model_copy(update={"refiner": refiner, "openai": openai}))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def refiner_target(refiner_server: object) -> str:
    return f"127.0.0.1:{refiner_server.port}"  # type: ignore[attr-defined]
