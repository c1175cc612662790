"""Fetching adapter versions from an ArtifactStore over real gRPC on 127.0.0.1.

A store that tampers with what it sends (a flipped byte, a dropped chunk, a lying
manifest) is a real grpc.aio server here; the fetch must reject every such transfer,
retry a bounded number of times, and never leave files behind. The last test sends a
tampered transfer to the session's real actor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from services.trainer.service import ArtifactStoreService
from services.trainer.store import ArtifactStore
from spar.adapter_fetch import fetch_adapter
from spar.adapter_files import folder_digest
from spar.client import AsyncActorClient
from spar.errors import DataLoss, FailedPrecondition, NotFound
from spar.metrics import Metrics
from spar.server import ServiceInterceptor
from spar.v1 import trainer_pb2 as pb
from spar.v1 import trainer_pb2_grpc

Tamper = Callable[[int, pb.AdapterChunk], pb.AdapterChunk | None]


class TamperingStore(ArtifactStoreService):
    """Serves the real store, passing every message of attempt N through tamper(N, msg)."""

    def __init__(self, store: ArtifactStore) -> None:
        super().__init__(store, chunk_bytes=64 * 1024)
        self.tamper: Tamper | None = None
        self.bad_attempts = 0
        self.calls = 0

    async def FetchAdapter(
        self, request: pb.FetchAdapterRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AdapterChunk]:
        self.calls += 1
        attempt = self.calls
        async for message in super().FetchAdapter(request, context):
            if self.tamper is not None and attempt <= self.bad_attempts:
                changed = self.tamper(attempt, message)
                if changed is None:
                    continue
                message = changed
            yield message


def flip_byte(_: int, message: pb.AdapterChunk) -> pb.AdapterChunk:
    if message.WhichOneof("part") == "chunk" and message.chunk.offset == 0:
        data = bytearray(message.chunk.data)
        data[len(data) // 2] ^= 0x01
        out = pb.AdapterChunk()
        out.CopyFrom(message)
        out.chunk.data = bytes(data)
        return out
    return message


_SIZES: dict[str, int] = {}


def drop_last_chunk_of_weights(_: int, message: pb.AdapterChunk) -> pb.AdapterChunk | None:
    """Truncates the weights file: its last chunk never arrives."""
    if message.WhichOneof("part") == "manifest":
        _SIZES.update({f.path: f.size for f in message.manifest.files})
        return message
    c = message.chunk
    last = c.offset + len(c.data) == _SIZES.get(c.path, -1)
    return None if last and c.path.endswith(".safetensors") and c.offset > 0 else message


def lying_manifest(_: int, message: pb.AdapterChunk) -> pb.AdapterChunk:
    if message.WhichOneof("part") == "manifest":
        out = pb.AdapterChunk()
        out.CopyFrom(message)
        out.manifest.files[0].sha256 = "0" * 64
        return out
    return message


def escaping_path(_: int, message: pb.AdapterChunk) -> pb.AdapterChunk:
    if message.WhichOneof("part") == "manifest":
        out = pb.AdapterChunk()
        out.CopyFrom(message)
        out.manifest.files[0].path = "../../escaped.json"
        return out
    return message


@pytest.fixture(scope="module")
def adapter_dir(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (random-init) LoRA adapter of the default model, ~1 MB of weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, config)
    out = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
async def store_server(
    adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, TamperingStore, str]]:
    store = ArtifactStore(tmp_path_factory.mktemp("store"))
    name = store.publish(adapter_dir, role="actor", iteration=7, base_model="m")["version"]["name"]
    servicer = TamperingStore(store)
    # The services' own interceptor, so errors reach the client as their status codes.
    server = grpc.aio.server(interceptors=[ServiceInterceptor(Metrics("store-test"))])
    trainer_pb2_grpc.add_ArtifactStoreServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer, name
    await server.stop(0)


@pytest.fixture
def tampering(
    store_server: tuple[str, TamperingStore, str],
) -> tuple[str, TamperingStore, str]:
    target, servicer, name = store_server
    servicer.calls, servicer.bad_attempts, servicer.tamper = 0, 0, None
    return target, servicer, name


async def test_clean_fetch_is_byte_identical(
    tampering: tuple[str, TamperingStore, str], adapter_dir: Path, tmp_path: Path
) -> None:
    target, servicer, name = tampering
    fetched = await fetch_adapter(target, name, tmp_path)
    assert folder_digest(fetched.path) == folder_digest(adapter_dir) == fetched.digest
    assert (fetched.role, fetched.iteration) == ("actor", 7) and servicer.calls == 1


@pytest.mark.parametrize("tamper", [flip_byte, drop_last_chunk_of_weights, lying_manifest])
async def test_corrupted_transfers_are_rejected_and_retried(
    tampering: tuple[str, TamperingStore, str], tamper: Tamper, tmp_path: Path
) -> None:
    target, servicer, name = tampering
    servicer.tamper, servicer.bad_attempts = tamper, 99
    with pytest.raises(DataLoss, match="every one of 3 transfers failed verification"):
        await fetch_adapter(target, name, tmp_path)
    assert servicer.calls == 3, "bounded retries"
    assert list(tmp_path.iterdir()) == [], "nothing of a bad transfer stays on disk"
    # One bad transfer, then a good one: the retry succeeds.
    servicer.calls, servicer.bad_attempts = 0, 1
    fetched = await fetch_adapter(target, name, tmp_path)
    assert servicer.calls == 2 and folder_digest(fetched.path) == fetched.digest


async def test_unsafe_paths_and_wrong_versions_are_refused(
    tampering: tuple[str, TamperingStore, str], tmp_path: Path
) -> None:
    target, servicer, name = tampering
    servicer.tamper, servicer.bad_attempts = escaping_path, 99
    with pytest.raises(DataLoss, match="unsafe file path"):
        await fetch_adapter(target, name, tmp_path / "cache")
    assert not (tmp_path / "escaped.json").exists()
    servicer.tamper = None
    servicer.calls = 0
    with pytest.raises(FailedPrecondition, match="not the expected ffffffffffff"):
        await fetch_adapter(target, name, tmp_path, expected_digest="f" * 64)
    assert servicer.calls == 1, "another content than expected is not retried"
    servicer.calls = 0
    with pytest.raises(NotFound, match="not in the store"):
        await fetch_adapter(target, "actor-7-000000000000", tmp_path)
    assert servicer.calls == 1, "a missing version is not retried"


async def test_actor_rejects_a_tampered_transfer(
    tampering: tuple[str, TamperingStore, str], actor_target: str, settings: object
) -> None:
    target, servicer, name = tampering
    servicer.tamper, servicer.bad_attempts = flip_byte, 99
    async with AsyncActorClient(actor_target, timeout=120) as actor:
        with pytest.raises(DataLoss, match="sha256 mismatch"):
            await actor.stage_adapter(name, store_target=target)
        assert name not in [a.version.name for a in (await actor.list_adapters()).adapters]
        # The same version from an honest store stages (and goes again, for other tests).
        servicer.tamper = None
        staged = await actor.stage_adapter(name, store_target=target)
        assert staged.loaded and staged.version.iteration == 7
        assert (await actor.retire_adapter(name)).retired
    cache = Path(settings.adapters_dir()) / "actor"  # type: ignore[attr-defined]
    assert not list(cache.glob(".fetch-*")), "no partial fetch left in the replica's cache"


def test_adapter_config_is_a_lora(adapter_dir: Path) -> None:
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 4
