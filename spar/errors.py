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

    def __init__(self, message: str) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.message = message


class InvalidArgument(SparError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SparError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SparError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SparError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SparError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SparError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SparError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(SparError):
    code = grpc.StatusCode.CANCELLED


class Unauthenticated(SparError):
    code = grpc.StatusCode.UNAUTHENTICATED


class DataLoss(SparError):
    code = grpc.StatusCode.DATA_LOSS


class Internal(SparError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[SparError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, ResourceExhausted,
        Unavailable, DeadlineExceeded, Cancelled, Unauthenticated, DataLoss, Internal,
    )
}  # fmt: skip


def from_status(code: grpc.StatusCode, message: str) -> SparError:
    """The SparError for a gRPC status (used by the client SDK)."""
    return _BY_CODE.get(code, SparError)(f"{code.name}: {message}")
