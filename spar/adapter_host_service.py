"""gRPC adapter for :class:`spar.adapter_host.AdapterHost` (``spar.v1.AdapterHost``)."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from spar.adapter_files import BASE, check_name
from spar.adapter_registry import HostedVersion
from spar.config import Settings
from spar.errors import InvalidArgument
from spar.request_checks import check_path_text
from spar.runtime import EngineRuntime
from spar.server import GrpcServer
from spar.v1 import adapter_host_pb2 as pb
from spar.v1 import adapter_host_pb2_grpc as pb_grpc
from spar.v1 import common_pb2


def version_message(v: HostedVersion) -> common_pb2.AdapterVersion:
    return common_pb2.AdapterVersion(
        name=v.name, digest=v.digest, role=v.role, iteration=v.iteration
    )


class AdapterHostService(pb_grpc.AdapterHostServicer):
    """gRPC handlers of ``spar.v1.AdapterHost`` on an actor or refiner replica: checks each
    request and calls the replica's :class:`spar.adapter_host.AdapterHost`."""

    def __init__(self, runtime: EngineRuntime, base_model: str, max_path_chars: int = 4096) -> None:
        self.runtime = runtime
        self.base_model = base_model
        self.max_path_chars = max_path_chars

    async def StageAdapter(
        self, request: pb.StageAdapterRequest, context: grpc.aio.ServicerContext
    ) -> pb.StageAdapterResponse:
        v = request.version
        if not v.name:
            raise InvalidArgument("version.name is required (e.g. actor-1-0123456789ab)")
        which = request.source.WhichOneof("source")
        if which == "local_path":
            if not request.source.local_path:
                raise InvalidArgument("source.local_path is empty")
            check_path_text(request.source.local_path, "source.local_path", self.max_path_chars)
            version, loaded = await self.runtime.host.stage_local(
                v.name,
                Path(request.source.local_path),
                digest=v.digest,
                role=v.role,
                iteration=v.iteration,
            )
        elif which == "store_target":
            if not request.source.store_target:
                raise InvalidArgument("source.store_target is empty (the store's HOST:PORT)")
            version, loaded = await self.runtime.host.stage_from_store(
                v.name,
                request.source.store_target,
                digest=v.digest,
                role=v.role,
                iteration=v.iteration,
            )
        else:
            raise InvalidArgument(
                "source is required: set source.local_path or source.store_target"
            )
        return pb.StageAdapterResponse(version=version_message(version), loaded=loaded)

    async def ActivateAdapter(
        self, request: pb.ActivateAdapterRequest, context: grpc.aio.ServicerContext
    ) -> pb.ActivateAdapterResponse:
        if not request.name:
            raise InvalidArgument("name is required: a staged version, or 'base'")
        if request.name != BASE:
            check_name(request.name)
        previous, active = self.runtime.host.activate(request.name)
        return pb.ActivateAdapterResponse(previous=previous or "", active=active or "")

    async def RetireAdapter(
        self, request: pb.RetireAdapterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetireAdapterResponse:
        if not request.name:
            raise InvalidArgument("name is required")
        check_name(request.name)
        return pb.RetireAdapterResponse(retired=await self.runtime.host.retire(request.name))

    async def ListAdapters(
        self, request: pb.ListHostedAdaptersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListHostedAdaptersResponse:
        active = self.runtime.host.registry.active
        out = pb.ListHostedAdaptersResponse(
            active=active or "", role=self.runtime.host.role, base_model=self.base_model
        )
        for v in self.runtime.host.registry.versions():
            if v.retiring:
                continue
            staged_at = Timestamp()
            staged_at.FromNanoseconds(int(v.staged_at * 1e9))
            out.adapters.append(
                pb.HostedAdapter(
                    version=version_message(v),
                    state=pb.HOSTED_ADAPTER_STATE_ACTIVE
                    if v.name == active
                    else pb.HOSTED_ADAPTER_STATE_STAGED,
                    in_flight=v.in_flight,
                    staged_at=staged_at,
                )
            )
        return out


def add_adapter_host(grpc: GrpcServer, runtime: EngineRuntime, settings: Settings) -> None:
    """Hosts ``spar.v1.AdapterHost`` for a replica's engine on its gRPC server."""
    service = AdapterHostService(
        runtime, str(settings.model_path()), settings.limits.max_path_chars
    )
    pb_grpc.add_AdapterHostServicer_to_server(service, grpc.server)  # type: ignore[no-untyped-call]
    grpc.add_services([pb.DESCRIPTOR.services_by_name["AdapterHost"].full_name])
