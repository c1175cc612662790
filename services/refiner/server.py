"""Runs a refiner replica: gRPC server first (NOT_SERVING), then the engine, then SERVING.

The replica hosts ``spar.v1.Refiner`` and ``spar.v1.AdapterHost`` on its own engine
(the refiner's adapter versions), and calls the actor service for ``Answer``.
"""

from __future__ import annotations

import asyncio
import logging

from services.refiner.metrics import RefinerMetrics
from services.refiner.openai_backend import ServicerBackend
from services.refiner.openai_http import OpenAIEndpoint
from services.refiner.service import RefinerService
from spar import ifeval
from spar.adapter_host_service import add_adapter_host
from spar.config import Settings
from spar.metrics import Metrics
from spar.runtime import EngineRuntime, start_engine_runtime
from spar.server import GrpcServer, serve_replica, start_engine_task
from spar.v1 import refiner_pb2, refiner_pb2_grpc

log = logging.getLogger(__name__)


class RefinerServer:
    """A refiner replica: build, start, stop. Tests and ``spar refiner serve`` share it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics("refiner")
        self.refiner_metrics = RefinerMetrics(self.metrics)
        self.runtime = EngineRuntime("refiner")
        self.grpc = GrpcServer.for_service(self.metrics, settings)
        self.service = RefinerService(self.runtime, settings, self.refiner_metrics)
        refiner_pb2_grpc.add_RefinerServicer_to_server(self.service, self.grpc.server)  # type: ignore[no-untyped-call]
        self.grpc.add_services([refiner_pb2.DESCRIPTOR.services_by_name["Refiner"].full_name])
        add_adapter_host(self.grpc, self.runtime, settings)
        # The OpenAI-compatible HTTP endpoint (SPAR_OPENAI__ENABLED); built here so bad TLS
        # or token settings stop the start before anything listens, as for gRPC.
        self.openai = (
            OpenAIEndpoint(ServicerBackend(self.service, self.runtime), settings, self.metrics)
            if settings.openai.enabled
            else None
        )
        self.port = 0
        self.metrics_port = -1
        self.openai_port = -1

    async def start(self, *, wait_ready: bool = True) -> asyncio.Task[None] | None:
        """Binds the port and starts the engine; returns the engine task if not awaited."""
        host, self.port, self.metrics_port = await self.grpc.listen(self.settings, "refiner")
        if self.openai is not None:
            self.openai_port = await self.openai.start(host, self.settings.openai.port)
        log.info(
            "refiner listening on %s:%d (metrics :%d), actor at %s",
            host, self.port, self.metrics_port, self.settings.refiner.actor_target,
        )  # fmt: skip
        return await start_engine_task(self._start_engine(), wait_ready=wait_ready)

    async def _start_engine(self) -> None:
        # The IFEval checkers import lm-eval (seconds): do it off the event loop, before
        # the replica reports SERVING, so no request pays for it.
        await asyncio.to_thread(ifeval.load)
        await start_engine_runtime(self.runtime, self.settings, self.metrics)
        await self.grpc.set_serving(True)

    async def abort(self) -> None:
        await self.grpc.stop(0)
        if self.openai is not None:
            await self.openai.stop()

    async def stop(self) -> None:
        grace = self.settings.grace_period_s
        await asyncio.gather(
            self.grpc.stop(grace), self.openai.stop() if self.openai else asyncio.sleep(0)
        )
        await self.service.close()
        self.runtime.shutdown()


async def serve(settings: Settings) -> None:
    await serve_replica(RefinerServer(settings), "refiner", settings.grace_period_s)
