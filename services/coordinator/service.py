"""gRPC handlers of ``spar.v1.Coordinator``: thin translation over :class:`Coordinator`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from google.protobuf import json_format

from services.coordinator.audit import operator
from services.coordinator.controller import Coordinator
from services.coordinator.iteration_messages import iteration_message, version_message
from spar.errors import InvalidArgument
from spar.server import Context
from spar.v1 import common_pb2
from spar.v1 import coordinator_pb2 as pb
from spar.v1 import coordinator_pb2_grpc as pb_grpc


class CoordinatorService(pb_grpc.CoordinatorServicer):
    """gRPC handlers of ``spar.v1.Coordinator``: check the request and translate to and from
    the :class:`Coordinator`."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def StartIteration(
        self, request: pb.StartIterationRequest, context: Context
    ) -> pb.Iteration:
        if len(request.prompts_path) > 4096:
            raise InvalidArgument("prompts_path is longer than 4096 characters")
        if request.num_prompts > 1_000_000:
            raise InvalidArgument("num_prompts must be at most 1000000")
        return iteration_message(self.coordinator.start(request.prompts_path, request.num_prompts))

    async def WatchIteration(
        self, request: pb.WatchIterationRequest, context: Context
    ) -> AsyncIterator[pb.IterationEvent]:
        async for it, message in self.coordinator.watch(request.number):
            yield pb.IterationEvent(iteration=iteration_message(it), message=message)

    async def GetState(self, request: pb.GetStateRequest, context: Context) -> pb.CoordinatorState:
        return await self.coordinator.state()

    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.RollbackResponse:
        version, replicas = await self.coordinator.rollback(
            request.role, request.name, _who(request.operator, context), request.reason
        )
        return pb.RollbackResponse(active=version_message(version), replicas=replicas)

    async def ListAudit(
        self, request: pb.ListAuditRequest, context: Context
    ) -> pb.ListAuditResponse:
        records, intact, error = self.coordinator.audit_records(
            request.iteration, request.role, request.limit
        )
        return pb.ListAuditResponse(
            records=[audit_message(r) for r in records], chain_intact=intact, chain_error=error
        )

    async def Promote(self, request: pb.PromoteRequest, context: Context) -> pb.Iteration:
        return iteration_message(
            self.coordinator.decide(
                request.iteration, "promote", _who(request.operator, context), request.reason
            )
        )

    async def Reject(self, request: pb.RejectRequest, context: Context) -> pb.Iteration:
        return iteration_message(
            self.coordinator.decide(
                request.iteration, "reject", _who(request.operator, context), request.reason
            )
        )


def _who(name: str, context: Context) -> str:
    """``operator:<name> (<peer>)`` of the audit log; the name is what the caller says."""
    if len(name) > 200 or not name.isprintable():
        raise InvalidArgument("operator must be at most 200 printable characters")
    return operator(name, str(context.peer() or ""))


def audit_message(record: Mapping[str, Any]) -> pb.AuditRecord:
    """An audit log record (audit.py's JSON) as ``spar.v1.AuditRecord``."""
    msg = pb.AuditRecord(
        sequence=int(record.get("sequence", 0)),
        action=str(record.get("action", "")),
        iteration=int(record.get("iteration", 0)),
        role=str(record.get("role", "")),
        decision=str(record.get("decision", "")),
        reason=str(record.get("reason", "")),
        decided_by=str(record.get("decided_by", "")),
        replicas=[str(r) for r in record.get("replicas", [])],
        result=str(record.get("result", "")),
        error=str(record.get("error", "")),
        previous_hash=str(record.get("previous_hash", "")),
    )
    if record.get("time"):
        msg.time.FromJsonString(str(record["time"]).replace("+00:00", "Z"))
    for field in ("version", "previous"):
        v = record.get(field)
        if v:
            getattr(msg, field).CopyFrom(
                json_format.ParseDict(
                    dict(v), common_pb2.AdapterVersion(), ignore_unknown_fields=True
                )
            )
    evidence = record.get("evidence") or {}
    for key, field in (("baseline", "baseline_eval"), ("candidate", "candidate_eval")):
        if key in evidence:
            getattr(msg, field).CopyFrom(
                json_format.ParseDict(evidence[key], pb.EvalMetrics(), ignore_unknown_fields=True)
            )
    return msg
