"""`spar up` stopped and started again on the same state and cache folders (issue 14).

The first run rolls published adapters out to the actor and the refiner; every service
is then stopped. A restarted run must bring every replica to SERVING on the rolled-out
versions: from the verified copies the replicas kept (no fetch), or, when a copy was
corrupted meanwhile, from a fresh fetch that replaces it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import make_lora

from services.trainer.store import ArtifactStore
from spar.adapter_cache import copy_of
from spar.adapter_files import folder_digest
from spar.client import ActorClient, CoordinatorClient

pytestmark = pytest.mark.slow
ROLES = ("actor", "refiner")


def free_base_port() -> int:
    """P such that P..P+3 and P+10..P+13 (spar up's ports) are free."""
    for base in range(21000, 29000, 100):
        try:
            for port in [*range(base, base + 4), *range(base + 10, base + 14)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free ports for spar up")


@dataclass
class Up:
    """A running `spar up`: its process, endpoints and log."""

    process: subprocess.Popen[bytes]
    endpoints: dict[str, dict[str, str]]
    log: Path
    runs: Path
    earlier_runs: set[Path]

    def grpc(self, role: str) -> str:
        return self.endpoints[role]["grpc"]

    def logs(self) -> str:
        """spar up's output and the logs its services wrote into this run's folder."""
        folders = set(self.runs.iterdir()) - self.earlier_runs if self.runs.is_dir() else set()
        files = [self.log, *(f for d in sorted(folders) for f in sorted(d.glob("*.log")))]
        return "\n".join(f.read_text(errors="replace") for f in files)

    def stop(self) -> None:
        terminate(self.process)
        assert self.process.returncode == 0, self.logs()[-4000:]


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: spar up stops every service (each in its own process group) and exits."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def spar_up(root: Path, model_path: Path, name: str) -> Up:
    """`spar up` on the folders under root; returns once every service is SERVING."""
    log = root / f"{name}.log"
    runs = root / "cache" / "runs"  # where spar up puts its services' logs
    earlier = set(runs.iterdir()) if runs.is_dir() else set()
    env = {
        **os.environ,
        "SPAR_CACHE_DIR": str(root / "cache"),
        "SPAR_MODEL": str(model_path),
        "SPAR_ENGINE__KV_CACHE_GIB": "1",
        "SPAR_ENGINE__MAX_LORA_RANK": "16",
        "SPAR_ENGINE__MAX_NUM_SEQS": "8",
        "SPAR_GRACE_PERIOD_S": "2",
        "SPAR_TLS__PLAINTEXT": "true",
    }
    cmd = [sys.executable, "-m", "spar_cli", "up", "--json", "--base-port", str(free_base_port())]
    # Files, not pipes: the services inherit spar up's output and must never block on it.
    out = root / f"{name}.out"
    with log.open("wb") as err, out.open("wb") as stdout:
        process = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=err, start_new_session=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("{") and '"coordinator"' in line:  # printed once all serve
                return Up(process, json.loads(line), log, runs, earlier)
        if process.poll() is not None:
            break
        time.sleep(1)
    terminate(process)
    raise AssertionError(f"spar up did not start:\n{log.read_text()[-6000:]}")


def hosted(up: Up) -> dict[str, tuple[str, str, set[str]]]:
    """role → (health, active version, loaded versions) of every replica."""
    out = {}
    for role in ROLES:
        with ActorClient(up.grpc(role), timeout=30) as replica:
            listed = replica.list_adapters()
            out[role] = (
                replica.health(),
                listed.active,
                {a.version.name for a in listed.adapters},
            )
    return out


def copies(root: Path, role: str, name: str) -> list[Path]:
    """The copies of version name in the role's adapter folder."""
    folder = root / "cache" / "adapters" / role
    return sorted(p for p in folder.iterdir() if p.is_dir() and copy_of(p.name) == name)


@pytest.fixture(scope="module")
def rolled_out(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str]]]:
    """A first `spar up` that rolled an actor and a refiner adapter out, then stopped:
    (the folders' root, role → version)."""
    root = tmp_path_factory.mktemp("restart")
    loras = tmp_path_factory.mktemp("restart-loras")
    store = ArtifactStore(root / "cache" / "store")  # the folder the trainer serves
    versions = {
        role: store.publish(
            make_lora(model_path, loras / role, seed=60 + i),
            role=role, iteration=1, base_model="SmolLM2-135M-Instruct",
        )["version"]["name"]
        for i, role in enumerate(ROLES)
    }  # fmt: skip
    up = spar_up(root, model_path, "first")
    try:
        with CoordinatorClient(up.grpc("coordinator"), timeout=600) as coordinator:
            for role in ROLES:
                assert coordinator.rollback(role, versions[role]).replicas == 1
        assert hosted(up) == {role: ("SERVING", versions[role], {versions[role]}) for role in ROLES}
    finally:
        up.stop()
    yield root, versions


def test_a_restart_serves_the_rolled_out_versions_from_the_kept_copies(
    rolled_out: tuple[Path, dict[str, str]], model_path: Path
) -> None:
    root, versions = rolled_out
    before = {role: copies(root, role, versions[role]) for role in ROLES}
    assert all(len(c) == 1 for c in before.values()), before
    # What a killed transfer and a killed copy leave behind, to be cleaned at start.
    leftovers = [
        root / "cache" / "adapters" / "actor" / f".fetch-{versions['actor']}-0badf00d",
        root / "cache" / "adapters" / "refiner" / f"{versions['refiner']}.0badf00d.partial",
    ]
    for folder in leftovers:
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"half")

    up = spar_up(root, model_path, "second")
    try:
        assert hosted(up) == {role: ("SERVING", versions[role], {versions[role]}) for role in ROLES}
        with CoordinatorClient(up.grpc("coordinator")) as coordinator:
            state = coordinator.get_state()
        assert {(r.role, r.active, r.reachable) for r in state.replicas} == {
            (role, versions[role], True) for role in ROLES
        }
        with ActorClient(up.grpc("actor"), timeout=120) as actor:
            assert actor.generate("Say hi.", max_tokens=4).adapter == versions["actor"]
    finally:
        up.stop()
    # The very folders of the first run were loaded: nothing was fetched again.
    assert {role: copies(root, role, versions[role]) for role in ROLES} == before
    assert not any(folder.exists() for folder in leftovers)
    log = up.logs()
    for role in ROLES:
        assert f"{versions[role]}: using the verified copy" in log


def test_a_corrupted_copy_is_fetched_again_at_restart(
    rolled_out: tuple[Path, dict[str, str]], model_path: Path
) -> None:
    root, versions = rolled_out
    name = versions["actor"]
    (corrupted,) = copies(root, "actor", name)
    weights = corrupted / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    digest = ArtifactStore(root / "cache" / "store").get(name)["version"]["digest"]

    up = spar_up(root, model_path, "third")
    try:
        assert hosted(up) == {role: ("SERVING", versions[role], {versions[role]}) for role in ROLES}
    finally:
        up.stop()
    (fetched,) = copies(root, "actor", name)
    assert fetched != corrupted and not corrupted.exists()
    assert folder_digest(fetched) == digest, "the new copy holds the store's bytes"
    log = up.logs()
    assert f"{name}: using the verified copy" not in log
    assert "deleting it" in log
