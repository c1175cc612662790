"""One RPC definition serves the blocking and the asyncio client (spar.client.base), against
a real gRPC server (the standard health service; no engine)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from spar.client.base import AsyncClient, Call, Client, server_stream, unary
from spar.errors import NotFound, Unavailable

Reply = health_pb2.HealthCheckResponse


class HealthMethods:
    @unary
    def check(self, service: str = "", timeout: float | None = None) -> Call[Reply]:
        """The service's status."""
        request = health_pb2.HealthCheckRequest(service=service)
        return Call(health_pb2_grpc.HealthStub, "Check", request, Reply, timeout)

    @server_stream
    def watch(self, service: str = "") -> Call[Reply]:
        request = health_pb2.HealthCheckRequest(service=service)
        return Call(health_pb2_grpc.HealthStub, "Watch", request, Reply, deadline=False)


class HealthClient(HealthMethods, Client):
    pass


class AsyncHealthClient(HealthMethods, AsyncClient):
    pass


@pytest.fixture
def target() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("spar.v1.Actor", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_the_blocking_client_returns_replies_and_maps_errors(target: str) -> None:
    with HealthClient(target, timeout=5) as client:
        assert client.check("spar.v1.Actor").status == Reply.SERVING
        assert client.health("spar.v1.Actor") == "SERVING"
        with pytest.raises(NotFound, match=r"^NOT_FOUND"):
            client.check("spar.v1.Nothing")
        first = next(iter(client.watch("spar.v1.Actor")))
        assert first.status == Reply.SERVING
        bound = client.check
    assert HealthMethods.check.__doc__ == "The service's status."
    assert (bound.__name__, bound.__doc__) == ("check", "The service's status.")
    assert list(inspect.signature(bound).parameters) == ["service", "timeout"]


async def test_the_asyncio_client_awaits_the_same_definitions(target: str) -> None:
    async with AsyncHealthClient(target, timeout=5) as client:
        assert (await client.check("spar.v1.Actor")).status == Reply.SERVING
        assert await client.health("spar.v1.Actor") == "SERVING"
        with pytest.raises(NotFound, match=r"^NOT_FOUND"):
            await client.check("spar.v1.Nothing")
        async for reply in client.watch("spar.v1.Actor"):
            assert reply.status == Reply.SERVING
            break


async def test_a_server_that_is_not_there_is_unavailable() -> None:
    async with AsyncHealthClient("127.0.0.1:1", timeout=2) as client:
        with pytest.raises(Unavailable):
            await client.check()
    with HealthClient("127.0.0.1:1", timeout=2) as blocking, pytest.raises(Unavailable):
        blocking.check()
