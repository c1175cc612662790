"""Fixtures of the fuzz tests: a trainer and a coordinator without engines, and the
session summary of how many fuzz cases were tried."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support import free_port, started_trainer

from spar.config import CoordinatorSettings, DiscoverySettings, Settings
from tests.fuzz.fuzz_support import CASES, CODES


@pytest.fixture(scope="session")
async def fuzz_trainer(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[object]:
    root = tmp_path_factory.mktemp("fuzz-trainer")
    async with started_trainer(
        settings, root, device="auto", gradient_checkpointing=True, max_queued_jobs=2
    ) as server:
        yield server


@pytest.fixture(scope="session")
async def fuzz_coordinator(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[object]:
    """A coordinator whose actor, refiner and trainer are not there, with no replicas."""
    from services.coordinator.server import CoordinatorServer

    # Nobody listens there: connections are refused at once.
    nowhere = f"127.0.0.1:{free_port()}"
    own = settings.model_copy(deep=True)
    own.coordinator = CoordinatorSettings(
        state_dir=str(tmp_path_factory.mktemp("fuzz-coordinator")),
        actor_target=nowhere,
        refiner_target=nowhere,
        trainer_target=nowhere,
        actor=DiscoverySettings(targets=[]),
        refiner=DiscoverySettings(targets=[]),
        reconcile_interval_s=0,
    )
    server = CoordinatorServer(own)
    await server.start()
    yield server
    await server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASES:
        return
    total = sum(CASES.values())
    by_service = ", ".join(f"{k}={v}" for k, v in sorted(CASES.items()))
    terminalreporter.write_line(f"FUZZ cases={total} ({by_service})")
    if CODES:
        codes = ", ".join(f"{s}:{c}={n}" for (s, c), n in sorted(CODES.items()))
        terminalreporter.write_line(f"FUZZ codes {codes}")
