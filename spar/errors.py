"""Errors that carry a gRPC status code and a message a user can act on.

Pure-logic modules and the engine raise these; the server interceptor turns them into
gRPC statuses, and the client SDK turns statuses back into them.
"""

from __future__ import annotations

import grpc

MAX_MESSAGE_CHARS = 2000
"""Longer messages are cut: a status message travels in gRPC trailers (8 KiB by default),
and a message that quotes a huge request field must not turn into a transport error."""


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[:MAX_MESSAGE_CHARS] + f"… ({len(message) - MAX_MESSAGE_CHARS} more characters)"


class SparError(Exception):
    """Base error; ``code`` is the gRPC status the server answers with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.message = message
        self.detail = message if detail is None else _bounded(detail)
        """The message without the status name a relayed error's message starts with."""


class InvalidArgument(SparError):
    """The request itself is wrong (a missing field, a value over a limit); resending it as is
    fails again."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SparError):
    """Something the request names does not exist (a job, a dataset, an adapter version)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SparError):
    """Something the request would create exists already, with other contents."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SparError):
    """The request is valid but the system is not in a state to do it (e.g. retiring the active
    adapter)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SparError):
    """Over a quota or a queue limit; retry later, with back-off."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SparError):
    """The service cannot answer now (starting, restarting, unreachable); retry."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SparError):
    """The request's deadline passed before it finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(SparError):
    """The request was cancelled before it finished (by the caller, say)."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(SparError):
    """No accepted bearer token came with the request."""

    code = grpc.StatusCode.UNAUTHENTICATED


class DataLoss(SparError):
    """Stored data is damaged (a file that cannot be read, a digest that does not match)."""

    code = grpc.StatusCode.DATA_LOSS


class Internal(SparError):
    """A bug or an unexpected failure on the server's side."""

    code = grpc.StatusCode.INTERNAL


#: Every status code's error class: the classes above, each the one of its code.
_BY_CODE: dict[grpc.StatusCode, type[SparError]] = {
    cls.code: cls for cls in SparError.__subclasses__()
}


def from_status(code: grpc.StatusCode, message: str) -> SparError:
    """The SparError for a gRPC status (used by the client SDK): its message starts with
    the status name; its ``detail`` is the server's message alone."""
    return _BY_CODE.get(code, SparError)(f"{code.name}: {message}", detail=message)
