"""TLS of servers and clients, from :class:`spar.config.TlsSettings`.

:func:`server_credentials` gives mutual TLS, server TLS, or plaintext only when
``plaintext`` is set; :func:`channel_credentials` the client side; :func:`ssl_options` the
same for the refiner's HTTP port (uvicorn). Files are checked when
read, so a wrong path or a key that does not match its certificate is a clear error at
start-up, not a failed handshake later.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

import grpc

from spar.config import TlsSettings
from spar.errors import FailedPrecondition

NO_CERTIFICATE = (
    "no TLS certificate: set SPAR_TLS__CERT_FILE and SPAR_TLS__KEY_FILE (and "
    "SPAR_TLS__CA_FILE for mutual TLS), or SPAR_TLS__PLAINTEXT=true (--plaintext) for local use"
)


@dataclass(frozen=True)
class TlsFiles:
    """The PEM bytes of the configured TLS files (None where a file is not configured)."""

    cert: bytes | None
    key: bytes | None
    ca: bytes | None


def read_file(path: str, setting: str) -> bytes:
    """The bytes of a configured file, or FailedPrecondition naming its setting."""
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
    cert = read_file(tls.cert_file, "SPAR_TLS__CERT_FILE") if tls.cert_file else None
    key = read_file(tls.key_file, "SPAR_TLS__KEY_FILE") if tls.key_file else None
    ca = read_file(tls.ca_file, "SPAR_TLS__CA_FILE") if tls.ca_file else None
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


def ssl_options(tls: TlsSettings) -> dict[str, Any]:
    """uvicorn's TLS arguments from the gRPC port's settings. The same checks run first
    (``server_credentials``), so the HTTP port refuses to start exactly when gRPC would:
    no certificate without plaintext allowed, unreadable files, a key that does not
    match its certificate."""
    server_credentials(tls)
    if not tls.cert_file:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": os.path.expanduser(tls.cert_file),
        "ssl_keyfile": os.path.expanduser(tls.key_file),
    }
    if tls.ca_file:
        options["ssl_ca_certs"] = os.path.expanduser(tls.ca_file)
        options["ssl_cert_reqs"] = (
            ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        )
    return options
