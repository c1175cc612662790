"""gRPC handlers of ``spar.v1.Coordinator``: thin translation over :class:`Coordinator`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.coordinator.controller import Coordinator
from services.coordinator.state import version_message
from spar.errors import InvalidArgument
from spar.server import Context
from spar.v1 import coordinator_pb2 as pb
from spar.v1 import coordinator_pb2_grpc as pb_grpc


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def StartIteration(
        self, request: pb.StartIterationRequest, context: Context
    ) -> pb.Iteration:
        if len(request.prompts_path) > 4096:
            raise InvalidArgument("prompts_path is longer than 4096 characters")
        if request.num_prompts > 1_000_000:
            raise InvalidArgument("num_prompts must be at most 1000000")
        return self.coordinator.start(request.prompts_path, request.num_prompts)

    async def WatchIteration(
        self, request: pb.WatchIterationRequest, context: Context
    ) -> AsyncIterator[pb.IterationEvent]:
        async for it, message in self.coordinator.watch(request.number):
            yield pb.IterationEvent(iteration=it, message=message)

    async def GetState(self, request: pb.GetStateRequest, context: Context) -> pb.CoordinatorState:
        return await self.coordinator.state()

    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.RollbackResponse:
        version, replicas = await self.coordinator.rollback(request.role, request.name)
        return pb.RollbackResponse(active=version_message(version), replicas=replicas)
