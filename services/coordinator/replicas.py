"""Replicas of a role as rollout targets: discovery + the AdapterHost calls over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Unpack

from services.coordinator.discovery import EndpointSliceReplicas, ReplicaSource, StaticReplicas
from services.coordinator.rollout import Hosted, Version
from spar.client import AsyncAdapterHostClient
from spar.config import DiscoverySettings
from spar.security import ClientSecurity

RPC_TIMEOUT_S = 300.0
"""Staging fetches and loads weights; generous, but bounded."""


class GrpcReplica:
    """:class:`services.coordinator.rollout.ReplicaOps` over a replica's AdapterHost (an
    actor's or a refiner's: both serve it)."""

    def __init__(self, target: str, **security: Unpack[ClientSecurity]) -> None:
        self.target = target
        self.client = AsyncAdapterHostClient(target, timeout=RPC_TIMEOUT_S, **security)

    async def stage(self, version: Version, store_target: str) -> bool:
        reply = await self.client.stage_adapter(
            version.name, store_target=store_target, digest=version.digest
        )
        return bool(reply.loaded)

    async def activate(self, name: str) -> None:
        await self.client.activate_adapter(name)

    async def retire(self, name: str) -> None:
        await self.client.retire_adapter(name)

    async def hosted(self) -> Hosted:
        reply = await self.client.list_adapters()
        return Hosted(frozenset(a.version.name for a in reply.adapters), reply.active)

    async def close(self) -> None:
        await self.client.close()


def replica_source(settings: DiscoverySettings, namespace: str = "") -> ReplicaSource:
    if settings.service:
        port: int | str = int(settings.port) if settings.port.isdigit() else settings.port
        return EndpointSliceReplicas(settings.namespace or namespace, settings.service, port)
    return StaticReplicas(settings.targets)


def pod_namespace() -> str:
    """The namespace of the pod this runs in (Kubernetes mounts it), or 'default'."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "default"


@asynccontextmanager
async def connected(
    targets: Sequence[str], **security: Unpack[ClientSecurity]
) -> AsyncIterator[list[GrpcReplica]]:
    replicas = [GrpcReplica(t, **security) for t in targets]
    try:
        yield replicas
    finally:
        for r in replicas:
            await r.close()
