"""The engine and adapter host of one actor or refiner replica, and how they start.

A replica's gRPC server starts first (health NOT_SERVING) so probes get answers while
the engine loads; handlers ask :class:`EngineRuntime` for the engine and get UNAVAILABLE
until it is warm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from spar.adapter_host import AdapterHost
from spar.config import Settings
from spar.engine.protocol import Engine, GenerationRequest, Message
from spar.errors import SparError, Unavailable
from spar.metrics import Metrics
from spar.security import client_security

log = logging.getLogger(__name__)


class EngineRuntime:
    """The engine and adapter host of one replica, once they have started. Handlers read them
    through :attr:`engine` and :attr:`host`, which raise UNAVAILABLE until :meth:`attach`
    (the engine loads after the server starts answering)."""

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

    def shutdown(self) -> None:
        """Stops the engine and gives the adapter folder back (its copies stay for the
        next start)."""
        if self._engine is not None:
            self._engine.shutdown()
        if self._host is not None:
            self._host.close()


def start_engine(settings: Settings, model_path: Path | None = None) -> Engine:
    """Starts the engine that ``settings.engine.kind`` names (blocking).

    Each engine module is imported only when chosen: the hf engine runs where vLLM is
    not installed.
    """
    if settings.engine.kind == "hf":
        from spar.engine.hf_engine import HfEngine

        return HfEngine.start(settings, model_path)
    from spar.engine.vllm_engine import VllmEngine

    return VllmEngine.start(settings, model_path)


async def start_engine_runtime(
    runtime: EngineRuntime, settings: Settings, metrics: Metrics
) -> None:
    """Starts the engine in a worker thread (the event loop keeps serving), warms it,
    reconciles its adapters with the coordinator and attaches it."""
    t0 = time.perf_counter()
    engine = await asyncio.to_thread(start_engine, settings)
    await warm_up(engine)
    host = AdapterHost(
        engine,
        role=runtime.role,
        cache_dir=settings.adapters_dir() / runtime.role,
        metrics=metrics,
        security=client_security(settings),
    )
    try:
        await reconcile_with_coordinator(host, settings)
    except BaseException:
        host.close()
        raise
    # Copies of an earlier run that reconciliation did not want: the folder keeps only
    # what is loaded, as it did before the restart.
    host.drop_unclaimed()
    runtime.attach(engine, host)
    metrics.engine_ready.labels(metrics.service).set(1)
    log.info(
        "%s %s engine ready in %.1f s (%s on %s)",
        runtime.role,
        settings.engine.kind,
        time.perf_counter() - t0,
        engine.info.model,
        engine.info.device,
    )


async def reconcile_with_coordinator(host: AdapterHost, settings: Settings) -> None:
    """Loads and activates the coordinator's desired version before the replica serves.

    A replica that (re)starts must not serve another version than its peers; one that
    still holds a verified copy of that version loads it without a fetch. It retries
    while the coordinator is unreachable and gives up (the start fails, so the
    orchestrator restarts it) after ``reconcile_timeout_s``.
    """
    if not settings.coordinator_target:
        return
    from spar.client import AsyncCoordinatorClient

    deadline = time.monotonic() + settings.reconcile_timeout_s
    async with AsyncCoordinatorClient(
        settings.coordinator_target, timeout=30, **client_security(settings)
    ) as coordinator:
        while True:
            try:
                state = await coordinator.get_state()
                desired = getattr(state, host.role)
                if desired.name:
                    await host.stage_from_store(
                        desired.name,
                        state.store_target,
                        digest=desired.digest,
                        role=host.role,
                        iteration=desired.iteration,
                    )
                    host.activate(desired.name)
                log.info("reconciled to %s", desired.name or "the base model")
                return
            except SparError as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"could not reconcile with the coordinator at "
                        f"{settings.coordinator_target} within {settings.reconcile_timeout_s:.0f}"
                        f" s: {exc.message}"
                    ) from exc
                log.warning("reconciliation failed (%s); retrying", exc.message)
                await asyncio.sleep(2)


async def warm_up(engine: Engine) -> None:
    """One tiny generation, so the first client request does not pay for lazy set-up."""
    await engine.generate(
        GenerationRequest(messages=[Message("user", "Hi")], max_tokens=1, temperature=0.0)
    )
