"""Runs the actor: gRPC server first (NOT_SERVING), then the engine, then SERVING."""

from __future__ import annotations

import asyncio
import logging

from services.actor.service import ActorService
from spar.adapter_host_service import add_adapter_host
from spar.config import Settings
from spar.metrics import Metrics
from spar.runtime import EngineRuntime, start_engine_runtime
from spar.server import GrpcServer, serve_replica, start_engine_task
from spar.v1 import actor_pb2, actor_pb2_grpc

log = logging.getLogger(__name__)


class ActorServer:
    """An actor replica: build, start, stop. Tests and ``spar actor serve`` share it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics("actor")
        self.runtime = EngineRuntime("actor")
        self.grpc = GrpcServer.for_service(self.metrics, settings)
        actor_pb2_grpc.add_ActorServicer_to_server(
            ActorService(self.runtime, settings, self.metrics), self.grpc.server
        )
        self.grpc.add_services([actor_pb2.DESCRIPTOR.services_by_name["Actor"].full_name])
        add_adapter_host(self.grpc, self.runtime, settings)
        self.port = 0
        self.metrics_port = -1

    async def start(self, *, wait_ready: bool = True) -> asyncio.Task[None] | None:
        """Binds the port and starts the engine; returns the engine task if not awaited."""
        host, self.port, self.metrics_port = await self.grpc.listen(self.settings, "actor")
        log.info("actor listening on %s:%d (metrics :%d)", host, self.port, self.metrics_port)
        return await start_engine_task(self._start_engine(), wait_ready=wait_ready)

    async def _start_engine(self) -> None:
        await start_engine_runtime(self.runtime, self.settings, self.metrics)
        await self.grpc.set_serving(True)

    async def abort(self) -> None:
        await self.grpc.stop(0)

    async def stop(self) -> None:
        await self.grpc.stop(self.settings.grace_period_s)
        self.runtime.shutdown()


async def serve(settings: Settings) -> None:
    await serve_replica(ActorServer(settings), "actor", settings.grace_period_s)
