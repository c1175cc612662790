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
from spar.adapter_host_service import AdapterHostService
from spar.config import Settings
from spar.metrics import Metrics
from spar.runtime import EngineRuntime, start_engine_runtime
from spar.server import GrpcServer
from spar.v1 import adapter_host_pb2, adapter_host_pb2_grpc, refiner_pb2, refiner_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    refiner_pb2.DESCRIPTOR.services_by_name["Refiner"].full_name,
    adapter_host_pb2.DESCRIPTOR.services_by_name["AdapterHost"].full_name,
]


class RefinerServer:
    """A refiner replica: build, start, stop. Tests and ``spar refiner serve`` share it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics("refiner")
        self.refiner_metrics = RefinerMetrics(self.metrics)
        self.runtime = EngineRuntime("refiner")
        self.grpc = GrpcServer(
            self.metrics,
            max_message_bytes=settings.limits.max_message_bytes,
            tls=settings.tls,
            auth=settings.auth,
        )
        self.service = RefinerService(self.runtime, settings, self.refiner_metrics)
        refiner_pb2_grpc.add_RefinerServicer_to_server(self.service, self.grpc.server)  # type: ignore[no-untyped-call]
        adapter_host_pb2_grpc.add_AdapterHostServicer_to_server(  # type: ignore[no-untyped-call]
            AdapterHostService(
                self.runtime, str(settings.model_path()), settings.limits.max_path_chars
            ),
            self.grpc.server,
        )
        self.grpc.add_services(SERVICE_NAMES)
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
        host, port, metrics_port = self.settings.address("refiner")
        self.port = await self.grpc.start(host, port)
        self.metrics_port = self.metrics.serve(host, metrics_port)
        if self.openai is not None:
            self.openai_port = await self.openai.start(host, self.settings.openai.port)
        log.info(
            "refiner listening on %s:%d (metrics :%d), actor at %s",
            host, self.port, self.metrics_port, self.settings.refiner.actor_target,
        )  # fmt: skip
        task = asyncio.create_task(self._start_engine())
        if wait_ready:
            await task
            return None
        return task

    async def _start_engine(self) -> None:
        # The IFEval checkers import lm-eval (seconds): do it off the event loop, before
        # the replica reports SERVING, so no request pays for it.
        await asyncio.to_thread(ifeval.load)
        await start_engine_runtime(self.runtime, self.settings, self.metrics)
        await self.grpc.set_serving(True)

    async def stop(self) -> None:
        grace = self.settings.grace_period_s
        await asyncio.gather(
            self.grpc.stop(grace), self.openai.stop() if self.openai else asyncio.sleep(0)
        )
        await self.service.close()
        self.runtime.shutdown()


async def serve(settings: Settings) -> None:
    server = RefinerServer(settings)
    server.grpc.install_signal_handlers()
    engine_task = await server.start(wait_ready=False)
    stop = asyncio.create_task(server.grpc.wait_for_stop_signal())
    assert engine_task is not None
    done, _ = await asyncio.wait({engine_task, stop}, return_when=asyncio.FIRST_COMPLETED)
    if engine_task in done and engine_task.exception() is not None:
        await server.grpc.stop(0)
        if server.openai is not None:
            await server.openai.stop()
        raise engine_task.exception()  # type: ignore[misc]
    await stop
    log.info(
        "refiner stopping: draining in-flight requests (grace %.0f s)", settings.grace_period_s
    )
    engine_task.cancel()
    await server.stop()
