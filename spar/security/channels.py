"""Client channels: TLS credentials, the server-name override and the bearer token on
every call (:func:`client_security`, :func:`open_channel`, :func:`open_aio_channel`), used
by every client in :mod:`spar.client`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypedDict

import grpc

from spar.config import AuthSettings, Settings, TlsSettings
from spar.security.tls import channel_credentials
from spar.security.tokens import ClientToken


class ClientSecurity(TypedDict, total=False):
    """Keyword arguments of every client in :mod:`spar.client` (see client_security)."""

    credentials: grpc.ChannelCredentials | None
    """TLS channel credentials; None: plaintext."""
    token: str | ClientToken | None
    """Bearer token sent as ``authorization`` metadata on every call; None: none."""
    server_name: str
    """Name the server certificate is checked against instead of the target's host."""


def client_security(settings: Settings) -> ClientSecurity:
    """The credentials, token and server name spar's own clients use (from settings)."""
    return client_security_of(settings.tls, settings.auth)


def client_security_of(tls: TlsSettings, auth: AuthSettings) -> ClientSecurity:
    credentials = channel_credentials(tls)
    return ClientSecurity(
        credentials=credentials,
        token=ClientToken(auth.token_file) if auth.token_file else None,
        server_name=tls.server_name if credentials is not None else "",
    )


def channel_options(server_name: str) -> list[tuple[str, Any]]:
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []


def _authorization(token: str | ClientToken) -> tuple[str, str]:
    return ("authorization", f"Bearer {token() if isinstance(token, ClientToken) else token}")


class _CallDetails(
    NamedTuple(
        "_CallDetails",
        [
            ("method", str),
            ("timeout", float | None),
            ("metadata", Any),
            ("credentials", Any),
            ("wait_for_ready", bool | None),
            ("compression", Any),
        ],
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the bearer token to every call of a blocking channel."""

    def __init__(self, token: str | ClientToken) -> None:
        self.token = token

    def _details(self, d: Any) -> _CallDetails:
        metadata = [*(d.metadata or ()), _authorization(self.token)]
        return _CallDetails(
            d.method, d.timeout, metadata, d.credentials, d.wait_for_ready,
            getattr(d, "compression", None),
        )  # fmt: skip

    def intercept_unary_unary(self, continuation: Callable[..., Any], d: Any, req: Any) -> Any:
        return continuation(self._details(d), req)

    def intercept_unary_stream(self, continuation: Callable[..., Any], d: Any, req: Any) -> Any:
        return continuation(self._details(d), req)

    def intercept_stream_unary(self, continuation: Callable[..., Any], d: Any, reqs: Any) -> Any:
        return continuation(self._details(d), reqs)

    def intercept_stream_stream(self, continuation: Callable[..., Any], d: Any, reqs: Any) -> Any:
        return continuation(self._details(d), reqs)


def _aio_details(d: Any, token: str | ClientToken) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(d.metadata or ()), _authorization(token))
    return grpc.aio.ClientCallDetails(
        d.method, d.timeout, metadata, d.credentials, d.wait_for_ready
    )


class _AioBearer:
    def __init__(self, token: str | ClientToken) -> None:
        self.token = token


class _AioUnaryUnary(_AioBearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], d: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(d, self.token), request)


class _AioUnaryStream(_AioBearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], d: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(d, self.token), request)


class _AioStreamUnary(_AioBearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], d: Any, requests: Any
    ) -> Any:
        return await continuation(_aio_details(d, self.token), requests)


class _AioStreamStream(_AioBearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], d: Any, requests: Any
    ) -> Any:
        return await continuation(_aio_details(d, self.token), requests)


def open_channel(
    target: str,
    options: Sequence[tuple[str, Any]],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | ClientToken | None = None,
    server_name: str = "",
) -> grpc.Channel:
    """A blocking channel: TLS when credentials are given, the token on every call."""
    opts = [*options, *channel_options(server_name)]
    if credentials is None:
        channel = grpc.insecure_channel(target, options=opts)
    else:
        channel = grpc.secure_channel(target, credentials, options=opts)
    if token is None:
        return channel
    return grpc.intercept_channel(channel, _BearerInterceptor(token))


def open_aio_channel(
    target: str,
    options: Sequence[tuple[str, Any]],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | ClientToken | None = None,
    server_name: str = "",
) -> grpc.aio.Channel:
    """An asyncio channel: TLS when credentials are given, the token on every call."""
    opts = [*options, *channel_options(server_name)]
    interceptors = (
        None
        if token is None
        else [
            _AioUnaryUnary(token), _AioUnaryStream(token),
            _AioStreamUnary(token), _AioStreamStream(token),
        ]
    )  # fmt: skip
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=opts, interceptors=interceptors)
