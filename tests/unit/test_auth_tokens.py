"""Bearer-token logic of spar.security: parsing, comparison, token files that rotate, and
the settings checks that need no server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spar.config import TlsSettings
from spar.errors import FailedPrecondition, Unauthenticated
from spar.security import (
    INVALID_TOKEN,
    MISSING_TOKEN,
    NO_CERTIFICATE,
    BearerAuth,
    ClientToken,
    bearer_token,
    channel_credentials,
    parse_tokens,
    server_credentials,
    token_accepted,
)


def test_bearer_token_reads_the_authorization_metadata() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("x", "y"), ("authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token([]) is None
    assert bearer_token(None) is None


def test_parse_tokens_and_comparison() -> None:
    tokens = parse_tokens("  one \n\n two\r\n")
    assert tokens == ["one", "two"]
    assert token_accepted("two", tokens)
    assert not token_accepted("tw", tokens)
    assert not token_accepted("two ", tokens)
    assert not token_accepted("anything", [])


def _write(path: Path, text: str, stamp: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(stamp, stamp))  # a distinct mtime even within one clock tick


def test_bearer_auth_messages_and_rotation(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    _write(tokens, "first-token\n", 1_000_000_000)
    auth = BearerAuth(str(tokens))
    auth.check([("authorization", "Bearer first-token")])
    with pytest.raises(Unauthenticated) as missing:
        auth.check([])
    assert missing.value.message == MISSING_TOKEN
    with pytest.raises(Unauthenticated) as wrong:
        auth.check([("authorization", "Bearer second-token")])
    assert wrong.value.message == INVALID_TOKEN
    assert "second-token" not in str(wrong.value)

    _write(tokens, "second-token\n", 2_000_000_000)
    auth.check([("authorization", "Bearer second-token")])
    with pytest.raises(Unauthenticated):
        auth.check([("authorization", "Bearer first-token")])

    # A file that disappears keeps its last tokens (a rotating Secret is swapped, not removed).
    tokens.unlink()
    auth.check([("authorization", "Bearer second-token")])


def test_token_files_must_exist_and_hold_a_token(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="cannot read SPAR_AUTH__TOKENS_FILE"):
        BearerAuth(str(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.write_text("\n \n")
    with pytest.raises(FailedPrecondition, match="has no tokens"):
        BearerAuth(str(empty))
    with pytest.raises(FailedPrecondition, match=r"SPAR_AUTH__TOKEN_FILE .* is empty"):
        ClientToken(str(empty))


def test_client_token_follows_its_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    _write(path, "secret-a\n", 1_000_000_000)
    token = ClientToken(str(path))
    assert token() == "secret-a"
    assert "secret" not in repr(token)
    _write(path, "secret-bb\n", 2_000_000_000)
    assert token() == "secret-bb"


def test_plaintext_must_be_explicit() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        server_credentials(TlsSettings())
    assert refused.value.message == NO_CERTIFICATE
    assert "SPAR_TLS__CERT_FILE" in NO_CERTIFICATE and "SPAR_TLS__PLAINTEXT" in NO_CERTIFICATE
    assert server_credentials(TlsSettings(plaintext=True)) is None
    assert channel_credentials(TlsSettings(plaintext=True)) is None
    # A client without files and without plaintext uses TLS against the system roots.
    assert channel_credentials(TlsSettings()) is not None


def test_tls_settings_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="go together"):
        server_credentials(TlsSettings(cert_file=str(tmp_path / "c")))
    with pytest.raises(FailedPrecondition, match="SPAR_TLS__CA_FILE is set but"):
        server_credentials(TlsSettings(ca_file=str(tmp_path / "ca")))
    with pytest.raises(FailedPrecondition, match="cannot read SPAR_TLS__CERT_FILE"):
        server_credentials(TlsSettings(cert_file=str(tmp_path / "c"), key_file=str(tmp_path / "k")))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(FailedPrecondition, match="are not a PEM certificate and its private key"):
        server_credentials(TlsSettings(cert_file=str(junk), key_file=str(junk)))
    with pytest.raises(FailedPrecondition, match=r"SPAR_TLS__CA_FILE .* is not a PEM CA"):
        channel_credentials(TlsSettings(ca_file=str(junk)))
