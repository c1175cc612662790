"""Client of the coordinator: iterations, state, rollback, audit, approval."""

from __future__ import annotations

from spar.client.base import AsyncClient, Call, Client, server_stream, unary
from spar.v1 import coordinator_pb2 as pb
from spar.v1 import coordinator_pb2_grpc

Stub = coordinator_pb2_grpc.CoordinatorStub


class CoordinatorMethods:
    """The coordinator's RPCs, written once for the blocking and the asyncio client."""

    @unary
    def start_iteration(self, prompts_path: str = "", num_prompts: int = 0) -> Call[pb.Iteration]:
        """Starts the next iteration (or resumes an unfinished one)."""
        request = pb.StartIterationRequest(prompts_path=prompts_path, num_prompts=num_prompts)
        return Call(Stub, "StartIteration", request, pb.Iteration)

    @server_stream
    def watch_iteration(self, number: int = 0) -> Call[pb.IterationEvent]:
        """An iteration's progress (0: the current one) until it ends."""
        request = pb.WatchIterationRequest(number=number)
        return Call(Stub, "WatchIteration", request, pb.IterationEvent, deadline=False)

    @unary
    def get_state(self) -> Call[pb.CoordinatorState]:
        """Current and previous versions, per-iteration counts, metrics and costs."""
        return Call(Stub, "GetState", pb.GetStateRequest(), pb.CoordinatorState)

    @unary
    def rollback(
        self, role: str, name: str = "", *, operator: str = "", reason: str = ""
    ) -> Call[pb.RollbackResponse]:
        """Returns every replica of a role to a previous version ("": the last one)."""
        request = pb.RollbackRequest(role=role, name=name, operator=operator, reason=reason)
        return Call(Stub, "Rollback", request, pb.RollbackResponse)

    @unary
    def list_audit(
        self, iteration: int = 0, role: str = "", limit: int = 0
    ) -> Call[pb.ListAuditResponse]:
        """Audit records of rollouts, rollbacks and promotion decisions, oldest first."""
        request = pb.ListAuditRequest(iteration=iteration, role=role, limit=limit)
        return Call(Stub, "ListAudit", request, pb.ListAuditResponse)

    @unary
    def promote(
        self, iteration: int, *, operator: str = "", reason: str = ""
    ) -> Call[pb.Iteration]:
        """Approves the candidate of an iteration that awaits approval: it rolls out."""
        request = pb.PromoteRequest(iteration=iteration, operator=operator, reason=reason)
        return Call(Stub, "Promote", request, pb.Iteration)

    @unary
    def reject(self, iteration: int, *, operator: str = "", reason: str = "") -> Call[pb.Iteration]:
        """Refuses the candidate of an iteration that awaits approval: it is dropped."""
        request = pb.RejectRequest(iteration=iteration, operator=operator, reason=reason)
        return Call(Stub, "Reject", request, pb.Iteration)


class CoordinatorClient(CoordinatorMethods, Client):
    """Blocking client of the coordinator.

    with CoordinatorClient("127.0.0.1:50054") as coordinator:
        it = coordinator.start_iteration()
        for event in coordinator.watch_iteration(it.number):
            print(event.message)
    """


class AsyncCoordinatorClient(CoordinatorMethods, AsyncClient):
    """asyncio client of the coordinator; same methods as :class:`CoordinatorClient`."""
