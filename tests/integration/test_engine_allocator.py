"""The real engine's processes run on tcmalloc (scripts/bootstrap.sh installs the system
package, the engine preloads it; without it the refiner's engine worker grows without bound
under load, bench/RESULTS.md)."""

from __future__ import annotations

import os
from pathlib import Path

from services.trainer.distributed import descendants
from spar import tcmalloc


def test_bootstrap_installed_a_tcmalloc() -> None:
    assert tcmalloc.find() is not None, (
        "no tcmalloc on this machine: run `python -m spar.tcmalloc install`"
    )


def test_the_engine_worker_preloads_tcmalloc(actor_server: object) -> None:
    engine_processes = []
    for pid in descendants(os.getpid()):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        if comm.startswith("VLLM::"):
            engine_processes.append((comm, "libtcmalloc" in maps))
    assert any(comm == "VLLM::Worker" for comm, _ in engine_processes), engine_processes
    assert all(preloaded for _, preloaded in engine_processes), engine_processes
