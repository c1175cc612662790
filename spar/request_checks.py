"""Checks of free-form request fields that are not model text: paths, ids, keys. Pure logic.

Every failure is an InvalidArgument naming the field and the limit, so a bad request gets
a clear status instead of an OSError deep in the file system.
"""

from __future__ import annotations

from pathlib import Path

from spar.errors import InvalidArgument


def check_path_text(value: str, field: str, max_chars: int) -> str:
    """A path a request names: bounded, no NUL, no component the file system refuses."""
    if len(value) > max_chars:
        raise InvalidArgument(
            f"{field} is {len(value)} characters; the server limit is {max_chars} "
            "(SPAR_LIMITS__MAX_PATH_CHARS)"
        )
    if "\0" in value:
        raise InvalidArgument(f"{field} contains a NUL character")
    if any(len(part.encode()) > 255 for part in value.split("/")):
        raise InvalidArgument(f"{field} has a path component longer than 255 bytes")
    return value


def expand_path(value: str, field: str) -> Path:
    """``~`` expanded and made absolute; InvalidArgument for an unknown ``~user``."""
    try:
        return Path(value).expanduser().resolve()
    except (RuntimeError, OSError, ValueError) as exc:
        raise InvalidArgument(f"{field} {value[:200]!r} is not a usable path: {exc}") from None


def check_token(value: str, field: str, max_chars: int) -> str:
    """An id or key chosen by the client: printable ASCII without spaces, bounded."""
    if len(value) > max_chars:
        raise InvalidArgument(f"{field} is {len(value)} characters; the limit is {max_chars}")
    if not all("!" <= c <= "~" for c in value):
        raise InvalidArgument(
            f"{field} {value[:80]!r} may hold only printable ASCII characters without spaces"
        )
    return value
