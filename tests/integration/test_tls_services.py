"""TLS, mutual TLS and bearer tokens on real spar servers (trainer, coordinator) over
127.0.0.1, with certificates made here: a CA, a server/peer certificate for
127.0.0.1/localhost, a client certificate, and a second CA nobody trusts."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.coordinator.server import CoordinatorServer
from services.trainer.server import TrainerServer
from spar.adapter_fetch import fetch_adapter
from spar.client import AsyncCoordinatorClient, AsyncTrainerClient
from spar.config import (
    AuthSettings,
    CoordinatorSettings,
    DiscoverySettings,
    Settings,
    TlsSettings,
    TrainerSettings,
)
from spar.errors import FailedPrecondition, NotFound, Unauthenticated, Unavailable
from spar.security import (
    INVALID_TOKEN,
    MISSING_TOKEN,
    NO_CERTIFICATE,
    ClientSecurity,
    client_security_of,
)

TOKEN = "tok-3f9a1c7e5b2d4068"
OTHER_TOKEN = "tok-other-77c1d2e3"
MISSING_NAME = "actor-1-0123456789ab"

# -- certificates ------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    ca: str
    cert: str  # the peer certificate every spar process presents (like the chart's)
    key: str
    client_cert: str
    client_key: str
    rogue_ca: str
    rogue_cert: str  # same names, signed by the untrusted CA
    rogue_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    files: dict[str, str] = {}

    def save(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        files[name] = str(root / name)

    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("spar.test"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for prefix in ("", "rogue_"):
        ca_key = _key()
        ca = _cert(f"{prefix}spar test CA", ca_key, None, ca=True)
        key = _key()
        save(f"{prefix}ca", ca.public_bytes(serialization.Encoding.PEM))
        save(f"{prefix}key", _pem_key(key))
        save(f"{prefix}cert", _cert("spar", key, (ca, ca_key), sans=sans).public_bytes(
            serialization.Encoding.PEM
        ))  # fmt: skip
        if not prefix:
            client_key = _key()
            client = _cert("spar client", client_key, (ca, ca_key))
            save("client_key", _pem_key(client_key))
            save("client_cert", client.public_bytes(serialization.Encoding.PEM))
    return Pki(**files)


def mtls(pki: Pki) -> TlsSettings:
    return TlsSettings(cert_file=pki.cert, key_file=pki.key, ca_file=pki.ca)


def security(tls: TlsSettings, token: str | None = None) -> ClientSecurity:
    out = client_security_of(tls, AuthSettings())
    if token is not None:
        out["token"] = token
    return out


# -- servers -----------------------------------------------------------------------------


def own_settings(root: Path, tls: TlsSettings, auth: AuthSettings | None = None) -> Settings:
    return Settings(
        cache_dir=root,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        grace_period_s=1.0,
        trainer=TrainerSettings(
            store_dir=str(root / "store"), state_dir=str(root / "state"), threads=1
        ),
        tls=tls,
        auth=auth or AuthSettings(),
    )


@pytest.fixture
async def start_trainer(tmp_path: Path) -> AsyncIterator[object]:
    started: list[TrainerServer] = []

    async def start(tls: TlsSettings, auth: AuthSettings | None = None) -> TrainerServer:
        server = TrainerServer(own_settings(tmp_path / f"t{len(started)}", tls, auth))
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def health(target: str, sec: ClientSecurity) -> str:
    async with AsyncTrainerClient(target, timeout=5, **sec) as client:
        return await client.health(timeout=5)


# -- TLS ---------------------------------------------------------------------------------


async def test_tls_server_and_client(pki: Pki, start_trainer: object) -> None:
    server = await start_trainer(TlsSettings(cert_file=pki.cert, key_file=pki.key))  # type: ignore[operator]
    target = f"127.0.0.1:{server.port}"
    sec = security(TlsSettings(ca_file=pki.ca))
    assert await health(target, sec) == "SERVING"
    async with AsyncTrainerClient(target, timeout=5, **sec) as client:
        assert list((await client.list_adapters()).adapters) == []
    # Server TLS without a CA needs no client certificate; plaintext is refused.
    with pytest.raises(Unavailable):
        await health(target, security(TlsSettings(plaintext=True)))


async def test_tls_client_to_a_plaintext_server_says_what_to_set(
    pki: Pki, start_trainer: object
) -> None:
    server = await start_trainer(TlsSettings(plaintext=True))  # type: ignore[operator]
    with pytest.raises(Unavailable, match=r"the server speaks plaintext.*SPAR_TLS__PLAINTEXT"):
        await health(f"127.0.0.1:{server.port}", security(TlsSettings(ca_file=pki.ca)))


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    pki: Pki, start_trainer: object
) -> None:
    server = await start_trainer(mtls(pki))  # type: ignore[operator]
    target = f"127.0.0.1:{server.port}"
    assert await health(target, security(mtls(pki))) == "SERVING"
    client_cert = TlsSettings(cert_file=pki.client_cert, key_file=pki.client_key, ca_file=pki.ca)
    assert await health(target, security(client_cert)) == "SERVING"
    for refused in (
        TlsSettings(ca_file=pki.ca),  # no client certificate
        TlsSettings(cert_file=pki.rogue_cert, key_file=pki.rogue_key, ca_file=pki.ca),
        TlsSettings(plaintext=True),
    ):
        with pytest.raises(Unavailable):
            await health(target, security(refused))


async def test_clients_verify_the_server_certificate(pki: Pki, start_trainer: object) -> None:
    rogue = TlsSettings(cert_file=pki.rogue_cert, key_file=pki.rogue_key)
    server = await start_trainer(rogue)  # type: ignore[operator]
    with pytest.raises(Unavailable):
        await health(f"127.0.0.1:{server.port}", security(TlsSettings(ca_file=pki.ca)))
    # The server-name override: the name checked instead of the target's host.
    good = await start_trainer(mtls(pki))  # type: ignore[operator]
    target = f"127.0.0.1:{good.port}"
    named = mtls(pki).model_copy(update={"server_name": "spar.test"})
    assert await health(target, security(named)) == "SERVING"
    with pytest.raises(Unavailable):
        await health(target, security(named.model_copy(update={"server_name": "other.test"})))


def test_servers_refuse_to_start_without_a_certificate(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        TrainerServer(own_settings(tmp_path, TlsSettings()))
    assert refused.value.message == NO_CERTIFICATE
    mismatched = TlsSettings(cert_file=pki.cert, key_file=pki.rogue_key)
    with pytest.raises(FailedPrecondition, match="not a PEM certificate and its private key"):
        TrainerServer(own_settings(tmp_path, mismatched))


async def test_serve_without_certificate_is_a_clean_cli_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAR_TLS__", "SPAR_AUTH__"))}
    env["SPAR_CACHE_DIR"] = str(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spar_cli", "trainer", "serve", "--port", "0",
        "--metrics-port", "-1", "--store", str(tmp_path / "store"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 1
    assert err.decode().strip().endswith(f"spar: {NO_CERTIFICATE}")
    assert "Traceback" not in err.decode()


# -- bearer tokens -----------------------------------------------------------------------


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN}\n")
    return path


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def test_tokens_are_required_counted_and_never_shown(
    pki: Pki,
    start_trainer: object,
    tokens_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = AuthSettings(tokens_file=str(tokens_file))
    server = await start_trainer(mtls(pki), auth)  # type: ignore[operator]
    target = f"127.0.0.1:{server.port}"

    async def list_adapters(token: str | None) -> None:
        async with AsyncTrainerClient(target, timeout=5, **security(mtls(pki), token)) as c:
            await c.list_adapters()

    with pytest.raises(Unauthenticated) as missing:
        await list_adapters(None)
    assert missing.value.message == f"UNAUTHENTICATED: {MISSING_TOKEN}"
    with pytest.raises(Unauthenticated) as wrong:
        await list_adapters(OTHER_TOKEN)
    assert wrong.value.message == f"UNAUTHENTICATED: {INVALID_TOKEN}"
    await list_adapters(TOKEN)
    assert await health(target, security(mtls(pki))) == "SERVING"  # probes need no token

    # Streams too (the replicas' adapter fetch): a token is needed, the right one works.
    sec = security(mtls(pki))
    with pytest.raises(Unauthenticated):
        await fetch_adapter(target, MISSING_NAME, Path(tokens_file.parent / "f"), **sec)
    with pytest.raises(NotFound):
        sec["token"] = TOKEN
        await fetch_adapter(target, MISSING_NAME, Path(tokens_file.parent / "f"), **sec)

    text = metrics_text(server.metrics_port)
    unauthenticated = [
        line for line in text.splitlines()
        if line.startswith("spar_requests_total") and 'code="UNAUTHENTICATED"' in line
    ]  # fmt: skip
    assert any(
        'method="ListAdapters"' in line and line.endswith(" 2.0") for line in unauthenticated
    )
    assert any('method="FetchAdapter"' in line for line in unauthenticated)
    for secret in (TOKEN, OTHER_TOKEN):
        assert secret not in text
        assert secret not in caplog.text


async def test_token_file_rotation_is_picked_up(
    pki: Pki, start_trainer: object, tokens_file: Path
) -> None:
    server = await start_trainer(mtls(pki), AuthSettings(tokens_file=str(tokens_file)))  # type: ignore[operator]
    target = f"127.0.0.1:{server.port}"
    client_token = tokens_file.parent / "client-token"
    client_token.write_text(f"{TOKEN}\n")
    sec = client_security_of(mtls(pki), AuthSettings(token_file=str(client_token)))
    async with AsyncTrainerClient(target, timeout=5, **sec) as client:
        await client.list_adapters()
        # The server accepts a new token (the old one is revoked) ...
        tokens_file.write_text(f"{OTHER_TOKEN}-rotated\n")
        os.utime(tokens_file, ns=(2_000_000_000, 2_000_000_000))
        with pytest.raises(Unauthenticated, match=INVALID_TOKEN):
            await client.list_adapters()
        # ... and the client's token file follows, on the same channel.
        client_token.write_text(f"{OTHER_TOKEN}-rotated\n")
        os.utime(client_token, ns=(2_000_000_000, 2_000_000_000))
        await client.list_adapters()


# -- one service calling another ---------------------------------------------------------


@pytest.fixture
async def secured_pair(
    pki: Pki, tmp_path: Path, tokens_file: Path
) -> AsyncIterator[tuple[TrainerServer, CoordinatorServer]]:
    client_token = tmp_path / "client-token"
    client_token.write_text(f"{TOKEN}\n")
    auth = AuthSettings(tokens_file=str(tokens_file), token_file=str(client_token))
    trainer = TrainerServer(own_settings(tmp_path / "trainer", mtls(pki), auth))
    await trainer.start()
    settings = own_settings(tmp_path / "coordinator", mtls(pki), auth)
    settings.coordinator = CoordinatorSettings(
        state_dir=str(tmp_path / "coordinator" / "state"),
        trainer_target=f"127.0.0.1:{trainer.port}",
        actor=DiscoverySettings(targets=[]),
        refiner=DiscoverySettings(targets=[]),
        reconcile_interval_s=0,
    )
    coordinator = CoordinatorServer(settings)
    await coordinator.start()
    yield trainer, coordinator
    await coordinator.stop()
    await trainer.stop()


async def test_coordinator_calls_the_trainer_over_mutual_tls_with_its_token(
    pki: Pki, secured_pair: tuple[TrainerServer, CoordinatorServer]
) -> None:
    trainer, coordinator = secured_pair
    target = f"127.0.0.1:{coordinator.port}"
    async with AsyncCoordinatorClient(target, timeout=10, **security(mtls(pki), TOKEN)) as client:
        # Rollback to a named version asks the trainer's store for its manifest: NOT_FOUND
        # from the trainer (not UNAUTHENTICATED or UNAVAILABLE) shows the call got through.
        with pytest.raises(NotFound, match=MISSING_NAME):
            await client.rollback("actor", MISSING_NAME)
    text = metrics_text(trainer.metrics_port)
    assert any(
        'method="GetManifest"' in line and 'code="NOT_FOUND"' in line
        for line in text.splitlines()
        if line.startswith("spar_requests_total")
    )


async def test_spar_health_and_cli_calls_over_mutual_tls(
    pki: Pki, secured_pair: tuple[TrainerServer, CoordinatorServer], tmp_path: Path
) -> None:
    trainer, _ = secured_pair
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAR_TLS__", "SPAR_AUTH__"))}
    env.update(
        SPAR_TLS__CERT_FILE=pki.cert,
        SPAR_TLS__KEY_FILE=pki.key,
        SPAR_TLS__CA_FILE=pki.ca,
        SPAR_TLS__SERVER_NAME="spar.test",
        SPAR_AUTH__TOKEN_FILE=str(tmp_path / "client-token"),
    )
    target = f"localhost:{trainer.port}"

    async def spar(*args: str, **extra: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spar_cli", *args, "--target", target,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**env, **extra},
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    # Independent calls, so the four CLI processes start side by side: each spends about
    # a second importing before it says a word to the server.
    health, listed, listed_with_tokens, plaintext = await asyncio.gather(
        spar("health"),
        spar("adapters", "list", "--json"),
        spar("adapters", "list", SPAR_AUTH__TOKEN_FILE=str(tmp_path / "tokens")),
        spar("health", "--plaintext", SPAR_TLS__CA_FILE="", SPAR_TLS__CERT_FILE="",
             SPAR_TLS__KEY_FILE=""),
    )  # fmt: skip
    code, out = health
    assert (code, out.strip()) == (0, "SERVING")
    code, out = listed
    assert code == 0, out
    code, out = listed_with_tokens
    assert code == 0, out  # the tokens file holds the accepted token on its first line
    code, out = plaintext
    assert code == 1 and "UNAVAILABLE" in out and "Traceback" not in out
