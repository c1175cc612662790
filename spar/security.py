"""Transport security and bearer tokens, from :class:`spar.config.TlsSettings` and
:class:`spar.config.AuthSettings`.

- Servers: :func:`server_credentials` (mutual TLS, server TLS, or plaintext only when
  ``plaintext`` is set) and :class:`BearerAuth` (the tokens a server accepts).
- Clients: :func:`client_security` (channel credentials, server-name override, and the
  token spar's own clients send), used by every client in :mod:`spar.client`.

Files are checked when read, so a wrong path or a key that does not match its certificate
is a clear error at start-up, not a failed handshake later. Token files are re-read when
they change (mounted Secrets rotate). Tokens never go into logs, errors or metrics.
"""

from __future__ import annotations

import hmac
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

import grpc

from spar.config import AuthSettings, Settings, TlsSettings
from spar.errors import FailedPrecondition, Unauthenticated

log = logging.getLogger(__name__)

NO_CERTIFICATE = (
    "no TLS certificate: set SPAR_TLS__CERT_FILE and SPAR_TLS__KEY_FILE (and "
    "SPAR_TLS__CA_FILE for mutual TLS), or SPAR_TLS__PLAINTEXT=true (--plaintext) for local use"
)
MISSING_TOKEN = "missing bearer token: send gRPC metadata 'authorization: Bearer <token>'"
INVALID_TOKEN = "invalid bearer token"

# -- TLS files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """The PEM bytes of the configured TLS files (None where a file is not configured)."""

    cert: bytes | None
    key: bytes | None
    ca: bytes | None


def _read(path: str, setting: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            return f.read()
    except OSError as exc:
        raise FailedPrecondition(f"cannot read {setting} {path!r}: {exc.strerror}") from None


def read_tls_files(tls: TlsSettings) -> TlsFiles:
    """Reads and checks the configured files: the key must match the certificate, the CA
    file must hold PEM certificates. Raises FailedPrecondition naming the setting."""
    if bool(tls.cert_file) != bool(tls.key_file):
        raise FailedPrecondition(
            "SPAR_TLS__CERT_FILE and SPAR_TLS__KEY_FILE go together: set both or neither"
        )
    cert = _read(tls.cert_file, "SPAR_TLS__CERT_FILE") if tls.cert_file else None
    key = _read(tls.key_file, "SPAR_TLS__KEY_FILE") if tls.key_file else None
    ca = _read(tls.ca_file, "SPAR_TLS__CA_FILE") if tls.ca_file else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.cert_file:
        try:
            context.load_cert_chain(
                os.path.expanduser(tls.cert_file), os.path.expanduser(tls.key_file)
            )
        except ssl.SSLError as exc:
            raise FailedPrecondition(
                f"SPAR_TLS__CERT_FILE {tls.cert_file!r} and SPAR_TLS__KEY_FILE "
                f"{tls.key_file!r} are not a PEM certificate and its private key "
                f"({exc.reason or exc})"
            ) from None
    if ca is not None:
        try:
            context.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise FailedPrecondition(
                f"SPAR_TLS__CA_FILE {tls.ca_file!r} is not a PEM CA certificate bundle ({exc})"
            ) from None
    return TlsFiles(cert, key, ca)


def tls_mode(tls: TlsSettings) -> str:
    """How a server with these settings serves: 'mutual TLS', 'TLS' or 'plaintext'."""
    if not tls.cert_file:
        return "plaintext"
    return "mutual TLS" if tls.ca_file and tls.require_client_cert else "TLS"


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """Credentials of a server port; None means plaintext (only when it is allowed).

    cert + key + CA: mutual TLS (clients must present a certificate the CA signed, unless
    require_client_cert is false); cert + key: TLS; neither: plaintext if ``plaintext``,
    else FailedPrecondition saying what to set."""
    if not tls.cert_file and not tls.key_file:
        if tls.ca_file:
            raise FailedPrecondition(
                "SPAR_TLS__CA_FILE is set but the server has no certificate: set "
                "SPAR_TLS__CERT_FILE and SPAR_TLS__KEY_FILE too"
            )
        if tls.plaintext:
            return None
        raise FailedPrecondition(NO_CERTIFICATE)
    files = read_tls_files(tls)
    assert files.cert is not None and files.key is not None
    return grpc.ssl_server_credentials(
        [(files.key, files.cert)],
        root_certificates=files.ca,
        require_client_auth=files.ca is not None and tls.require_client_cert,
    )


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials | None:
    """Credentials of a client channel; None means plaintext.

    Any TLS file configured: TLS, verifying the server with the CA (the system roots
    without one) and presenting cert + key when set (mutual TLS). No file: plaintext if
    ``plaintext``, else TLS against the system roots."""
    if not (tls.cert_file or tls.key_file or tls.ca_file) and tls.plaintext:
        return None
    files = read_tls_files(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca, private_key=files.key, certificate_chain=files.cert
    )


# -- token files -------------------------------------------------------------------------


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
            self._text = _read(path, setting).decode("utf-8", errors="replace")

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


# -- client side -------------------------------------------------------------------------


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
