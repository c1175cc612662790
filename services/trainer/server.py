"""Runs the trainer: job records recovered, gRPC server (Trainer + ArtifactStore), job queue."""

from __future__ import annotations

import logging

from services.trainer.jobs import JobManager
from services.trainer.metrics import TrainerMetrics
from services.trainer.service import ArtifactStoreService, TrainerService
from services.trainer.state import TrainerState
from services.trainer.store import ArtifactStore
from spar.config import Settings
from spar.metrics import Metrics
from spar.server import GrpcServer, serve_plain
from spar.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name,
    trainer_pb2.DESCRIPTOR.services_by_name["ArtifactStore"].full_name,
]


class TrainerServer:
    """One trainer: build, start, stop. Tests and ``spar trainer serve`` share it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics("trainer")
        self.trainer_metrics = TrainerMetrics(self.metrics)
        self.store = ArtifactStore(settings.store_dir())
        self.state = TrainerState(settings.trainer_state_dir())
        self.jobs = JobManager(settings, self.store, self.state, self.trainer_metrics)
        self.grpc = GrpcServer.for_service(self.metrics, settings)
        trainer_pb2_grpc.add_TrainerServicer_to_server(
            TrainerService(settings, self.state, self.jobs), self.grpc.server
        )
        trainer_pb2_grpc.add_ArtifactStoreServicer_to_server(
            ArtifactStoreService(self.store, settings.trainer.fetch_chunk_bytes), self.grpc.server
        )
        self.grpc.add_services(SERVICE_NAMES)
        self.port = 0
        self.metrics_port = -1

    async def start(self) -> None:
        self.jobs.recover()
        host, self.port, self.metrics_port = await self.grpc.listen(self.settings, "trainer")
        self.jobs.start()
        await self.grpc.set_serving(True)
        log.info(
            "trainer listening on %s:%d (metrics :%d), store %s",
            host, self.port, self.metrics_port, self.store.root,
        )  # fmt: skip

    async def stop(self) -> None:
        # Jobs first, so watchers get the job's final state before the server closes.
        await self.jobs.stop()
        await self.grpc.stop(self.settings.grace_period_s)


async def serve(settings: Settings) -> None:
    await serve_plain(TrainerServer(settings), "trainer", settings.grace_period_s)
