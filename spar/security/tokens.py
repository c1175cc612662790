"""Bearer tokens, from :class:`spar.config.AuthSettings`: the tokens a server accepts
(:class:`BearerAuth`) and the one a client sends (:class:`ClientToken`).

Token files are re-read when they change (mounted Secrets rotate). Tokens never go into
logs, errors or metrics.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Sequence

from spar.errors import FailedPrecondition, Unauthenticated
from spar.security.tls import read_file

log = logging.getLogger(__name__)

MISSING_TOKEN = "missing bearer token: send gRPC metadata 'authorization: Bearer <token>'"
INVALID_TOKEN = "invalid bearer token"


class WatchedFile:
    """A small text file re-read whenever it changes (inode, size or mtime), e.g. a
    mounted Secret that Kubernetes swaps atomically. A file that becomes unreadable keeps
    its last content (and logs a warning). Never logs the content."""

    def __init__(self, path: str, setting: str) -> None:
        self.path = os.path.expanduser(path)
        self.setting = setting
        self._stamp: tuple[int, ...] | None = None
        self._text = ""
        self._failed = False
        if not self._refresh():
            self._text = read_file(path, setting).decode("utf-8", errors="replace")

    def _refresh(self) -> bool:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if stamp != self._stamp:
                with open(self.path, "rb") as f:
                    self._text = f.read().decode("utf-8", errors="replace")
                self._stamp = stamp
                if self._failed:
                    log.info("%s %s is readable again", self.setting, self.path)
            self._failed = False
            return True
        except OSError as exc:
            if not self._failed:
                log.warning(
                    "cannot read %s %s (%s); keeping its last content",
                    self.setting, self.path, exc.strerror,
                )  # fmt: skip
            self._failed = True
            return False

    def text(self) -> str:
        self._refresh()
        return self._text


def parse_tokens(text: str) -> list[str]:
    """Tokens of a tokens file: one a line, surrounding whitespace and blank lines ignored."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the request's ``authorization: Bearer <token>`` metadata, if any."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def token_accepted(token: str, accepted: Sequence[str]) -> bool:
    """Whether token is one of accepted, in time independent of which one matches."""
    given = token.encode()
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(given, candidate.encode())
    return matched


class BearerAuth:
    """The tokens a server accepts (``SPAR_AUTH__TOKENS_FILE``, re-read when it changes)."""

    def __init__(self, tokens_file: str) -> None:
        self.file = WatchedFile(tokens_file, "SPAR_AUTH__TOKENS_FILE")
        if not parse_tokens(self.file.text()):
            raise FailedPrecondition(
                f"SPAR_AUTH__TOKENS_FILE {tokens_file!r} has no tokens: put one token a line"
            )

    def check(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> None:
        """Raises Unauthenticated unless the metadata carries an accepted bearer token."""
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated(MISSING_TOKEN)
        if not token_accepted(token, parse_tokens(self.file.text())):
            raise Unauthenticated(INVALID_TOKEN)


class ClientToken:
    """The token a client sends: the first line of ``SPAR_AUTH__TOKEN_FILE``, re-read when
    the file changes."""

    def __init__(self, token_file: str) -> None:
        self.file = WatchedFile(token_file, "SPAR_AUTH__TOKEN_FILE")
        if not self():
            raise FailedPrecondition(
                f"SPAR_AUTH__TOKEN_FILE {token_file!r} is empty: it must hold the bearer token"
            )

    def __call__(self) -> str:
        tokens = parse_tokens(self.file.text())
        return tokens[0] if tokens else ""

    def __repr__(self) -> str:  # never shows the token
        return f"ClientToken({self.file.path!r})"
