"""The engine and adapter host of one actor or refiner replica, and how they start.

A replica's gRPC server starts first (health NOT_SERVING) so probes get answers while
the engine loads; handlers ask :class:`EngineRuntime` for the engine and get UNAVAILABLE
until it is warm.
"""

from __future__ import annotations

import asyncio
import logging
import time

from spar.adapter_host import AdapterHost
from spar.config import Settings
from spar.engine.protocol import Engine, GenerationRequest, Message
from spar.errors import Unavailable
from spar.metrics import Metrics

log = logging.getLogger(__name__)


class EngineRuntime:
    def __init__(self, role: str) -> None:
        self.role = role
        self._engine: Engine | None = None
        self._host: AdapterHost | None = None

    def attach(self, engine: Engine, host: AdapterHost) -> None:
        self._engine, self._host = engine, host

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise Unavailable(f"the {self.role} engine is still starting; retry shortly")
        return self._engine

    @property
    def host(self) -> AdapterHost:
        if self._host is None:
            raise Unavailable(f"the {self.role} engine is still starting; retry shortly")
        return self._host


async def start_vllm_runtime(runtime: EngineRuntime, settings: Settings, metrics: Metrics) -> None:
    """Starts vLLM in a worker thread (the event loop keeps serving), warms it, attaches it."""
    from spar.engine.vllm_engine import VllmEngine

    t0 = time.perf_counter()
    engine = await asyncio.to_thread(VllmEngine.start, settings)
    await warm_up(engine)
    host = AdapterHost(
        engine,
        role=runtime.role,
        cache_dir=settings.adapters_dir() / runtime.role,
        metrics=metrics,
    )
    runtime.attach(engine, host)
    metrics.engine_ready.labels(metrics.service).set(1)
    log.info(
        "%s engine ready in %.1f s (%s)", runtime.role, time.perf_counter() - t0, engine.info.model
    )


async def warm_up(engine: Engine) -> None:
    """One tiny generation, so the first client request does not pay for lazy set-up."""
    await engine.generate(
        GenerationRequest(messages=[Message("user", "Hi")], max_tokens=1, temperature=0.0)
    )
