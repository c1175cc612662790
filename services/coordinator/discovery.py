"""Where the replicas of a role are: a static list, or Kubernetes EndpointSlices.

In Kubernetes each role has a headless Service; its EndpointSlices (label
``kubernetes.io/service-name=<service>``) list one endpoint per pod. Endpoints that are
not ready are left out: those pods are starting, and a starting replica reconciles to the
desired version by itself before it reports ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from spar.errors import InvalidArgument, Unavailable


class ReplicaSource(Protocol):
    """Where a role's replicas are: a fixed list or a Kubernetes service's endpoints."""

    async def targets(self) -> list[str]:
        """HOST:PORT of every ready replica, sorted."""
        ...


class StaticReplicas:
    """A fixed list of HOST:PORT replicas (from settings)."""

    def __init__(self, targets: Sequence[str]) -> None:
        for t in targets:
            host, _, port = t.rpartition(":")
            if not host or not port.isdigit():
                raise InvalidArgument(f"replica {t!r} must be HOST:PORT")
        self._targets = sorted(set(targets))

    async def targets(self) -> list[str]:
        return list(self._targets)


def targets_from_slices(slices: Sequence[Mapping[str, Any]], port: int | str) -> list[str]:
    """Ready endpoints of EndpointSlice objects (API JSON shape) as HOST:PORT.

    ``port`` is the container port number, or the name of the Service port to look up
    in each slice's ``ports``.
    """
    out: set[str] = set()
    for s in slices:
        number = _port_of(s, port)
        if number is None:
            continue
        for ep in s.get("endpoints") or []:
            conditions = ep.get("conditions") or {}
            # The API says an unset `ready` means ready.
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            for address in ep.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                out.add(f"{host}:{number}")
    return sorted(out)


def _port_of(slice_: Mapping[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for p in slice_.get("ports") or []:
        if p.get("name") == port and p.get("port"):
            return int(p["port"])
    return None


class EndpointSliceReplicas:
    """Replicas from the Kubernetes API (in-cluster config unless a client is given)."""

    def __init__(
        self, namespace: str, service: str, port: int | str, api_client: Any = None
    ) -> None:
        self.namespace = namespace
        self.service = service
        self.port = port
        self._api_client = api_client

    def _list(self) -> list[dict[str, Any]]:
        from kubernetes import client, config

        api_client = self._api_client
        if api_client is None:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
        api = client.DiscoveryV1Api(api_client)
        result = api.list_namespaced_endpoint_slice(
            self.namespace,
            label_selector=f"kubernetes.io/service-name={self.service}",
            _preload_content=False,
        )
        import json

        doc = json.loads(result.data)  # type: ignore[attr-defined]
        items: list[dict[str, Any]] = doc.get("items") or []
        return items

    async def targets(self) -> list[str]:
        try:
            slices = await asyncio.to_thread(self._list)
        except Exception as exc:
            raise Unavailable(
                f"listing EndpointSlices of {self.namespace}/{self.service} failed: {exc}"
            ) from exc
        return targets_from_slices(slices, self.port)
