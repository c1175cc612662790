"""What every client shares: channel, auth, default deadline, error mapping, health.

Each service's RPCs are written once, as methods of a ``*Methods`` mixin that only
builds the call (a :class:`Call`: stub, method, request, deadline). The :func:`unary`
and :func:`server_stream` decorators turn such a method into a blocking one on a
:class:`Client` and an awaitable (or async-iterable) one on an :class:`AsyncClient`;
the two bases differ only in how they send a call. This keeps one typed signature and
one body per RPC without code generation: a descriptor, ``@overload``-typed on the
client it is read from, is the smallest thing mypy can check for both flavours.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, Unpack, overload

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spar.errors import SparError, from_status
from spar.security import ClientSecurity, open_aio_channel, open_channel

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]

#: What a TLS client sees from a plaintext server (OpenSSL's "wrong version number").
_PLAINTEXT_SERVER = "WRONG_VERSION_NUMBER"

R = TypeVar("R")
P = ParamSpec("P")


def rpc_error(exc: grpc.RpcError) -> SparError:
    """The :class:`SparError` of a failed call, by its status code."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and _PLAINTEXT_SERVER in (details or ""):
        details = (
            f"{details} (the server speaks plaintext, e.g. spar up: connect with "
            "SPAR_TLS__PLAINTEXT=true or --plaintext, or give the server a certificate)"
        )
    return from_status(code, details or "")


M = TypeVar("M", bound=Message)


def with_given(message: M, **fields: object) -> M:
    """The message with those fields set that are not None (an unset optional field
    takes the server's default, which differs from any value the client could send)."""
    for name, value in fields.items():
        if value is not None:
            setattr(message, name, value)
    return message


@dataclass(frozen=True)
class Call(Generic[R]):
    """One RPC, ready to send."""

    stub: type
    """The generated stub class, e.g. ``actor_pb2_grpc.ActorStub``."""
    method: str
    """The RPC's name on the stub, e.g. ``"Generate"``."""
    request: Any
    """The request message (an iterator of them for a client stream)."""
    response: type[R]
    """The reply's message type (one reply, or each item of a server stream)."""
    timeout: float | None = None
    """Deadline in seconds; None: the client's default."""
    deadline: bool = True
    """False for a watch, which lasts as long as what it watches: no default deadline."""


class _Channel:
    """A channel to one server and the stubs made on it."""

    def __init__(self, target: str, timeout: float | None, channel: Any) -> None:
        self.target = target
        self.timeout = timeout
        """Default deadline of a call in seconds; None: none."""
        self.channel = channel
        self._stubs: dict[type, Any] = {}

    def _method(self, call: Call[Any]) -> Any:
        if call.stub not in self._stubs:
            self._stubs[call.stub] = call.stub(self.channel)
        return getattr(self._stubs[call.stub], call.method)

    def _timeout(self, call: Call[Any]) -> float | None:
        if not call.deadline:
            return None
        return call.timeout if call.timeout is not None else self.timeout


class Client(_Channel):
    """Blocking client: a channel, a default deadline, errors as :class:`SparError`."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout, open_channel(target, CHANNEL_OPTIONS, **security))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def send(self, call: Call[R]) -> R:
        """Makes a unary (or client-stream) call and returns its reply."""
        try:
            reply: R = self._method(call)(call.request, timeout=self._timeout(call))
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None
        return reply

    def open_stream(self, call: Call[R]) -> Generator[R]:
        """Makes a server-stream call and yields its replies; leaving early cancels it."""
        try:
            stream = self._method(call)(call.request, timeout=self._timeout(call))
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None
        finally:
            stream.cancel()

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """SERVING, NOT_SERVING, ... of the server (or one of its services)."""
        reply = self.send(_health_check(service, timeout))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


class AsyncClient(_Channel):
    """asyncio client: a channel, a default deadline, errors as :class:`SparError`."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout, open_aio_channel(target, CHANNEL_OPTIONS, **security))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def send(self, call: Call[R]) -> R:
        """Makes a unary (or client-stream) call and returns its reply."""
        request = call.request
        if isinstance(request, Iterator):
            # grpc.aio reads a request iterator in a task of its own, where a record
            # that fails validation would only cancel the call; read it here instead.
            request = iter(list(request))
        try:
            reply: R = await self._method(call)(request, timeout=self._timeout(call))
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None
        return reply

    async def open_stream(self, call: Call[R]) -> AsyncGenerator[R]:
        """Makes a server-stream call and yields its replies; leaving early cancels it."""
        stream = self._method(call)(call.request, timeout=self._timeout(call))
        try:
            async for item in stream:
                yield item
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None
        finally:
            stream.cancel()

    async def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """SERVING, NOT_SERVING, ... of the server (or one of its services)."""
        reply = await self.send(_health_check(service, timeout))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _health_check(service: str, timeout: float | None) -> Call[health_pb2.HealthCheckResponse]:
    request = health_pb2.HealthCheckRequest(service=service)
    return Call(
        health_pb2_grpc.HealthStub, "Check", request, health_pb2.HealthCheckResponse, timeout
    )


class _Rpc(Generic[P, R]):
    """What :class:`unary` and :class:`server_stream` share: the method that builds the
    call, bound to a client as a function with the method's own name, doc and signature
    (less ``self``), so ``help()`` and editors show the real parameters."""

    def __init__(self, build: Callable[Concatenate[Any, P], Call[R]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__
        self.name = build.__name__
        signature = inspect.signature(build)
        self.signature = signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,  # the Call, not what the client returns
        )

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def _bind(self, client: Client | AsyncClient, send: Callable[[Call[R]], Any]) -> Any:
        def method(*args: Any, **kwargs: Any) -> Any:
            return send(self.build(client, *args, **kwargs))

        method.__name__ = method.__qualname__ = self.name
        method.__doc__ = self.__doc__
        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method


class unary(_Rpc[P, R]):
    """A unary RPC written once: blocking on a :class:`Client`, awaitable on an
    :class:`AsyncClient`. Decorates a method that returns the :class:`Call`."""

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: Client, owner: type) -> Callable[P, R]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, client: Client | AsyncClient | None, owner: type) -> Any:
        return self if client is None else self._bind(client, client.send)


class server_stream(_Rpc[P, R]):
    """A server-stream RPC written once: an iterator on a :class:`Client`, an async
    iterator on an :class:`AsyncClient`. Decorates a method that returns the
    :class:`Call`; the stream is cancelled when the caller stops reading it."""

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: Client, owner: type) -> Callable[P, Generator[R]]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type) -> Callable[P, AsyncGenerator[R]]: ...
    def __get__(self, client: Client | AsyncClient | None, owner: type) -> Any:
        return self if client is None else self._bind(client, client.open_stream)


def streamed(rpc: unary[P, Any], method: str, response: type[R]) -> server_stream[P, R]:
    """The server-stream twin of a unary RPC that takes the same request and parameters
    (``GenerateStream`` of ``Generate``)."""

    def build(client: Any, /, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        call = rpc.build(client, *args, **kwargs)
        return Call(call.stub, method, call.request, response, call.timeout, call.deadline)

    build.__doc__ = f"As :meth:`{rpc.name}`, the reply streamed as it is made."
    stream = server_stream(build)
    stream.signature = rpc.signature
    return stream
