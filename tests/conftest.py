"""Shared fixtures: settings for tests, the prepared default model, one actor per session.

Every server binds 127.0.0.1 on a free port (port 0), so test runs never collide.
The engine is the real vLLM engine with the real default model; starting one costs
~40 s on CPU, so each kind of server exists once per test session.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import started_trainer

from spar.config import EngineSettings, OpenAISettings, Settings, TlsSettings
from spar.model import prepare_default_model

if TYPE_CHECKING:
    from services.trainer.server import TrainerServer

# Servers under test (and the spar subprocesses tests start, which inherit the
# environment) serve plaintext on 127.0.0.1; the TLS tests configure certificates.
os.environ.setdefault("SPAR_TLS__PLAINTEXT", "true")


# Collection imports torch, transformers and the services (some 600,000 objects, nearly
# all alive until the session ends); each full garbage collection walks all of them
# again, about 0.1 s apiece, twenty times a run. The collector is off while the test
# modules import and those objects are frozen (never walked again) once they have: the
# tests' own objects are collected as usual. They are unfrozen at the end, so that the
# interpreter's shutdown frees them (nanobind's triton bindings report leaks otherwise).
gc.disable()


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.freeze()
    gc.enable()


def pytest_unconfigure(config: pytest.Config) -> None:
    gc.unfreeze()


#: Fixtures a test needs an outside tool for (helm, kubectl, promtool, prometheus, chromium).
TOOL_FIXTURES = frozenset({"tools", "chromium"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks each test by what it needs (the README's "Tests by what they need"): a test
    that uses the default model (``model_path``, which every server fixture depends on)
    needs_engine, one that uses an outside tool needs_tools. ``gpu`` tests are skipped
    where torch sees no CUDA device. needs_root is marked in the test files themselves."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "model_path" in names:
            item.add_marker(pytest.mark.needs_engine)
        if names & TOOL_FIXTURES:
            item.add_marker(pytest.mark.needs_tools)
        if item.get_closest_marker("gpu") and not _has_cuda():
            item.add_marker(no_gpu)


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


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


# Module scope: each training test module gets its own trainer (and its own store), which
# stops when the module is done.
@pytest.fixture(scope="module")
async def trainer_server(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TrainerServer]:
    """A real trainer (store and state in a temp dir, CPU, one torch thread)."""
    async with started_trainer(settings, tmp_path_factory.mktemp("trainer")) as server:
        yield server


@pytest.fixture(scope="session")
async def second_actor(settings: Settings) -> AsyncIterator[object]:
    """Another actor replica (its own engine) so rollouts span more than one replica."""
    from services.actor.server import ActorServer

    server = ActorServer(settings.model_copy(update={"cache_dir": settings.cache_dir / "actor2"}))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def e2e_trainer(settings: Settings) -> AsyncIterator[object]:
    """A trainer on the session's own settings, for the end-to-end and fault tests."""
    from services.trainer.server import TrainerServer

    server = TrainerServer(settings)
    await server.start()
    yield server
    await server.stop()
