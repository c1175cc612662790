"""Transport security and bearer tokens, from :class:`spar.config.TlsSettings` and
:class:`spar.config.AuthSettings`, in three modules:

- :mod:`spar.security.tls`: server credentials (mutual TLS, server TLS, or plaintext only
  when ``plaintext`` is set) and client channel credentials; files checked when read.
- :mod:`spar.security.tokens`: :class:`BearerAuth` (the tokens a server accepts) and
  :class:`ClientToken` (the one a client sends), re-read when their files change.
- :mod:`spar.security.channels`: :func:`client_security` and the channels every client in
  :mod:`spar.client` opens with it.

The names the rest of spar uses are importable from here.
"""

from spar.security.channels import (
    ClientSecurity,
    channel_options,
    client_security,
    client_security_of,
    open_aio_channel,
    open_channel,
)
from spar.security.tls import (
    NO_CERTIFICATE,
    TlsFiles,
    channel_credentials,
    read_tls_files,
    server_credentials,
    ssl_options,
    tls_mode,
)
from spar.security.tokens import (
    INVALID_TOKEN,
    MISSING_TOKEN,
    BearerAuth,
    ClientToken,
    WatchedFile,
    bearer_token,
    parse_tokens,
    token_accepted,
)

__all__ = [
    "INVALID_TOKEN",
    "MISSING_TOKEN",
    "NO_CERTIFICATE",
    "BearerAuth",
    "ClientSecurity",
    "ClientToken",
    "TlsFiles",
    "WatchedFile",
    "bearer_token",
    "channel_credentials",
    "channel_options",
    "client_security",
    "client_security_of",
    "open_aio_channel",
    "open_channel",
    "parse_tokens",
    "read_tls_files",
    "server_credentials",
    "ssl_options",
    "tls_mode",
    "token_accepted",
]
