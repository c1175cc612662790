"""Shared gRPC server plumbing: status mapping, metrics, deadlines, health, reflection.

Handlers raise :class:`spar.errors.SparError`; :class:`ServiceInterceptor` turns that
into a gRPC status, records request metrics, and bounds every handler by the client's
deadline (so the engine work of an expired request is aborted, not left running). With
bearer-token auth on, it refuses ``/spar.*`` calls without an accepted token
(UNAUTHENTICATED, counted like any other status); health and reflection stay open.

Every service builds its :class:`GrpcServer` from its settings (``for_service``) and
binds its role's ports with ``listen``; the actor and the refiner, whose engines start
after their ports, run through :func:`serve_replica`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from spar.config import AuthSettings, Role, Settings, TlsSettings
from spar.errors import SparError
from spar.metrics import Metrics
from spar.request_decoding import checked, lenient
from spar.security import BearerAuth, server_credentials, tls_mode

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _deadline(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0)


class _Call:
    """Bookkeeping of one RPC: metrics, and the status to abort with."""

    def __init__(self, metrics: Metrics, method: str) -> None:
        self.metrics = metrics
        self.method = method
        self.code = grpc.StatusCode.OK
        self.start = time.perf_counter()
        metrics.in_flight.labels(metrics.service, method).inc()

    async def fail(self, exc: BaseException, context: Context) -> None:
        """Aborts the RPC with the status that exc stands for (raises AbortError)."""
        if isinstance(exc, SparError):
            self.code = exc.code
            await context.abort(exc.code, exc.message)
        if isinstance(exc, TimeoutError):
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(self.code, "the request's deadline passed; work was aborted")
        log.exception("unexpected error in %s", self.method, exc_info=exc)
        self.code = grpc.StatusCode.INTERNAL
        await context.abort(self.code, f"internal error: {type(exc).__name__}: {exc}")

    def finish(self, context: Context, exc: BaseException | None) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.code = grpc.StatusCode.CANCELLED
        elif isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            self.code = code if isinstance(code, grpc.StatusCode) else self.code
        m = self.metrics
        m.in_flight.labels(m.service, self.method).dec()
        m.requests.labels(m.service, self.method, self.code.name).inc()
        m.latency.labels(m.service, self.method).observe(time.perf_counter() - self.start)


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every ``/spar.*`` handler: bearer-token check, the client's deadline, request
    metrics, and SparError to gRPC status (see the module docstring)."""

    def __init__(self, metrics: Metrics, auth: BearerAuth | None = None) -> None:
        self.metrics = metrics
        self.auth = auth

    def _authenticate(self, context: Context) -> None:
        if self.auth is not None:
            self.auth.check(context.invocation_metadata())

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/spar."):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        kwargs = {
            "request_deserializer": lenient(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, method), **kwargs
        )

    @contextlib.asynccontextmanager
    async def _guard(self, method: str, context: Context) -> AsyncIterator[None]:
        """One handler's run: the token check, the client's deadline, the metrics, and
        an error turned into its status (the body's exception ends here, as an abort)."""
        call = _Call(self.metrics, method)
        error: BaseException | None = None
        try:
            self._authenticate(context)
            async with asyncio.timeout(_deadline(context)):
                yield
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit) as exc:
            error = exc
            raise
        except Exception as exc:
            error = exc
            await call.fail(exc, context)
        finally:
            call.finish(context, error)

    def _unary(self, fn: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
        async def behaviour(request: Any, context: Context) -> Any:
            async with self._guard(method, context):
                return await fn(checked(request), context)

        return behaviour

    def _stream(self, fn: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., Any]:
        async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._guard(method, context):
                async for item in fn(checked(request), context):
                    yield item

        return behaviour


class GrpcServer:
    """A grpc.aio server with TLS, token auth, health, reflection, metrics and graceful
    shutdown. Raises FailedPrecondition (before anything starts) when the TLS or token
    settings are unusable, e.g. no certificate and plaintext not allowed."""

    def __init__(
        self, metrics: Metrics, *, max_message_bytes: int, tls: TlsSettings, auth: AuthSettings
    ) -> None:
        self.metrics = metrics
        self.credentials = server_credentials(tls)
        self.tls_mode = tls_mode(tls) if self.credentials is not None else "plaintext"
        self.auth = BearerAuth(auth.tokens_file) if auth.tokens_file else None
        self.server = grpc.aio.server(
            interceptors=[ServiceInterceptor(metrics, self.auth)],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._services: list[str] = []
        self._stopping = asyncio.Event()

    @classmethod
    def for_service(cls, metrics: Metrics, settings: Settings) -> GrpcServer:
        """The server of a spar service, with the limits, TLS and auth of its settings."""
        return cls(
            metrics,
            max_message_bytes=settings.limits.max_message_bytes,
            tls=settings.tls,
            auth=settings.auth,
        )

    def add_services(self, full_names: Sequence[str]) -> None:
        """Registers fully qualified service names for health and reflection."""
        self._services.extend(full_names)

    async def start(self, host: str, port: int) -> int:
        names = [*self._services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], self.server)
        address = f"{host}:{port}"
        if self.credentials is None:
            bound = self.server.add_insecure_port(address)
        else:
            bound = self.server.add_secure_port(address, self.credentials)
        if bound == 0:
            raise OSError(f"cannot bind {host}:{port}: the address is in use or not local")
        log.info(
            "gRPC on %s:%d: %s, %s", host, bound, self.tls_mode,
            "bearer tokens required" if self.auth else "no token auth",
        )  # fmt: skip
        await self.set_serving(False)
        await self.server.start()
        return int(bound)

    async def listen(self, settings: Settings, role: Role) -> tuple[str, int, int]:
        """Starts the role's gRPC port and its metrics endpoint at ``settings.address``
        (port 0 takes a free one): (host, gRPC port, metrics port)."""
        host, port, metrics_port = settings.address(role)
        bound = await self.start(host, port)
        return host, bound, self.metrics.serve(host, metrics_port)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._services]:
            await self.health.set(name, status)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)

    async def wait_for_stop_signal(self) -> None:
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self, grace_s: float) -> None:
        """Refuses new requests at once; in-flight ones get grace_s to finish."""
        await self.set_serving(False)
        await self.server.stop(grace_s)


class PlainServer(Protocol):
    """A server without an engine (the coordinator, the trainer)."""

    grpc: GrpcServer

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Drains in-flight requests (the settings' grace period) and shuts down."""


async def serve_plain(server: PlainServer, role: Role, grace_period_s: float) -> None:
    """Runs a server until SIGTERM or SIGINT, then stops it."""
    server.grpc.install_signal_handlers()
    await server.start()
    await server.grpc.wait_for_stop_signal()
    log.info("%s stopping (grace %.0f s)", role, grace_period_s)
    await server.stop()


class EngineReplica(Protocol):
    """A replica whose engine starts after its gRPC port (the actor's, a refiner's)."""

    grpc: GrpcServer

    async def start(self, *, wait_ready: bool = True) -> asyncio.Task[None] | None: ...

    async def abort(self) -> None:
        """Closes the listeners at once: the engine did not start."""

    async def stop(self) -> None:
        """Drains in-flight requests (the settings' grace period) and shuts down."""


async def start_engine_task(
    start: Coroutine[Any, Any, None], *, wait_ready: bool
) -> asyncio.Task[None] | None:
    """A replica's engine start (the port already serves NOT_SERVING): awaited when
    ``wait_ready``, else its task, for the caller to watch."""
    task = asyncio.create_task(start)
    if wait_ready:
        await task
        return None
    return task


async def serve_replica(replica: EngineReplica, role: Role, grace_period_s: float) -> None:
    """Runs a replica until SIGTERM or SIGINT; an engine that fails to start ends it with
    the engine's error."""
    replica.grpc.install_signal_handlers()
    engine_task = await replica.start(wait_ready=False)
    stop = asyncio.create_task(replica.grpc.wait_for_stop_signal())
    assert engine_task is not None
    done, _ = await asyncio.wait({engine_task, stop}, return_when=asyncio.FIRST_COMPLETED)
    if engine_task in done and engine_task.exception() is not None:
        await replica.abort()
        raise engine_task.exception()  # type: ignore[misc]
    await stop
    log.info("%s stopping: draining in-flight requests (grace %.0f s)", role, grace_period_s)
    engine_task.cancel()
    await replica.stop()
