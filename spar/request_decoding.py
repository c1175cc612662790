"""Request bytes that are not a message of the method's type get INVALID_ARGUMENT.

gRPC's own deserialization failure surfaces as UNKNOWN with no useful message. The
server interceptor (:mod:`spar.server`) decodes leniently instead: a decode error becomes
a :class:`Malformed` placeholder, and :func:`checked` raises InvalidArgument for it
before (unary) or while (client streaming) the handler reads the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from spar.errors import InvalidArgument


class Malformed:
    """Stands for request bytes that did not decode."""

    def __init__(self, error: str) -> None:
        self.error = error


def lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or invalid UTF-8 in a string field
            return Malformed(f"{type(exc).__name__}: {exc}")

    return decode


def _refuse(request: Malformed) -> InvalidArgument:
    return InvalidArgument(
        f"the request is not a valid protobuf message of this method ({request.error}); "
        "send the message type the .proto file names"
    )


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Malformed):
            raise _refuse(request)
        yield request


def checked(request: Any) -> Any:
    """The request, or InvalidArgument when it (or, streaming, any part of it) is malformed."""
    if isinstance(request, Malformed):
        raise _refuse(request)
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return request
