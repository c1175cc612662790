"""Runs the coordinator: gRPC server, resumption of an unfinished iteration, and the
periodic reconciliation of every replica to the desired versions."""

from __future__ import annotations

import asyncio
import logging

from services.coordinator.controller import Coordinator
from services.coordinator.metrics import CoordinatorMetrics
from services.coordinator.service import CoordinatorService
from spar.config import Settings
from spar.metrics import Metrics
from spar.server import GrpcServer, serve_plain
from spar.v1 import coordinator_pb2, coordinator_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = [coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name]


class CoordinatorServer:
    """The coordinator process: its :class:`Coordinator`, the gRPC server and the metrics
    endpoint."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics("coordinator")
        self.coordinator = Coordinator(settings, CoordinatorMetrics(self.metrics))
        self.grpc = GrpcServer.for_service(self.metrics, settings)
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(
            CoordinatorService(self.coordinator), self.grpc.server
        )
        self.grpc.add_services(SERVICE_NAMES)
        self.port = 0
        self.metrics_port = -1
        self._reconciler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        host, self.port, self.metrics_port = await self.grpc.listen(self.settings, "coordinator")
        self.coordinator.resume_unfinished()
        self._reconciler = asyncio.create_task(self.coordinator.reconcile_forever())
        await self.grpc.set_serving(True)
        log.info("coordinator listening on %s:%d (metrics :%d)", host, self.port, self.metrics_port)

    async def stop(self) -> None:
        await self.grpc.stop(self.settings.grace_period_s)
        if self._reconciler is not None:
            self._reconciler.cancel()
        await self.coordinator.close()


async def serve(settings: Settings) -> None:
    await serve_plain(CoordinatorServer(settings), "coordinator", settings.grace_period_s)
