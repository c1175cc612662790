"""Client of the AdapterHost service that actors and refiners both serve.

The coordinator rolls adapter versions out to either role's replicas through
:class:`AsyncAdapterHostClient`; :class:`spar.client.actor.ActorClient` and
:class:`spar.client.refiner.RefinerClient` carry the same methods.
"""

from __future__ import annotations

from spar.client.base import AsyncClient, Call, Client, unary
from spar.v1 import adapter_host_pb2 as pb
from spar.v1 import adapter_host_pb2_grpc, common_pb2

Stub = adapter_host_pb2_grpc.AdapterHostStub


def stage_request(
    name: str, local_path: str = "", *, store_target: str = "", digest: str = ""
) -> pb.StageAdapterRequest:
    """Stage ``name`` from a local folder, or from the artifact store at store_target."""
    source = (
        pb.AdapterSource(store_target=store_target)
        if store_target
        else pb.AdapterSource(local_path=local_path)
    )
    return pb.StageAdapterRequest(
        version=common_pb2.AdapterVersion(name=name, digest=digest), source=source
    )


class AdapterHostMethods:
    """The AdapterHost RPCs, written once for the blocking and the asyncio client."""

    @unary
    def stage_adapter(
        self, name: str, local_path: str = "", *, store_target: str = "", digest: str = ""
    ) -> Call[pb.StageAdapterResponse]:
        """Fetches (or reads), verifies and loads a version without serving it."""
        request = stage_request(name, local_path, store_target=store_target, digest=digest)
        return Call(Stub, "StageAdapter", request, pb.StageAdapterResponse)

    @unary
    def activate_adapter(self, name: str) -> Call[pb.ActivateAdapterResponse]:
        """Makes a staged version the default of requests that name no adapter."""
        request = pb.ActivateAdapterRequest(name=name)
        return Call(Stub, "ActivateAdapter", request, pb.ActivateAdapterResponse)

    @unary
    def retire_adapter(self, name: str) -> Call[pb.RetireAdapterResponse]:
        """Unloads a version that is neither active nor in use."""
        request = pb.RetireAdapterRequest(name=name)
        return Call(Stub, "RetireAdapter", request, pb.RetireAdapterResponse)

    @unary
    def list_adapters(self) -> Call[pb.ListHostedAdaptersResponse]:
        """The versions loaded on the replica, and which one is active."""
        request = pb.ListHostedAdaptersRequest()
        return Call(Stub, "ListAdapters", request, pb.ListHostedAdaptersResponse)


class AdapterHostClient(AdapterHostMethods, Client):
    """Blocking client of an AdapterHost (an actor's or a refiner's) + health."""


class AsyncAdapterHostClient(AdapterHostMethods, AsyncClient):
    """asyncio client of an AdapterHost; same methods as :class:`AdapterHostClient`."""
