"""Fixtures of the deploy tests: the offline tools and the chart rendered once per values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from deploy_tools import VALUES_CPU, VALUES_PRODUCTION, Tools, install_tools

from spar.config import CoordinatorSettings, DiscoverySettings, Settings


@pytest.fixture(scope="session")
def tools() -> Tools:
    """helm, kubectl, prometheus and promtool (installed on first use, then reused)."""
    return Tools(install_tools())


@pytest.fixture(scope="session")
def default_objects(tools: Tools) -> list[dict[str, Any]]:
    return tools.render()


@pytest.fixture(scope="session")
def production_objects(tools: Tools) -> list[dict[str, Any]]:
    return tools.render(VALUES_PRODUCTION)


@pytest.fixture(scope="session")
def cpu_objects(tools: Tools) -> list[dict[str, Any]]:
    return tools.render(VALUES_CPU)


@pytest.fixture(scope="session")
def values_files() -> dict[str, list[Path]]:
    """The values combinations every validation runs over."""
    return {"defaults": [], "production": [VALUES_PRODUCTION], "cpu": [VALUES_CPU]}


# Module scope: it serves test_dashboard_data.py (with the shared trainer_server of
# tests/conftest.py) and stops when it is done, so the rest of the session does not carry it.
@pytest.fixture(scope="module")
async def coordinator_server(
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    actor_server: Any,
    refiner_server: Any,
    trainer_server: Any,
) -> AsyncIterator[object]:
    """A real coordinator over the session's actor, refiner and trainer (static replica
    lists, no periodic reconcile), for the dashboard's rollout panels. Drop it once
    tests/conftest.py has a session coordinator."""
    from services.coordinator.server import CoordinatorServer

    actor, refiner = f"127.0.0.1:{actor_server.port}", f"127.0.0.1:{refiner_server.port}"
    own = settings.model_copy(deep=True)
    own.coordinator = CoordinatorSettings(
        state_dir=str(tmp_path_factory.mktemp("dashboard-coordinator")),
        actor_target=actor,
        refiner_target=refiner,
        trainer_target=f"127.0.0.1:{trainer_server.port}",
        actor=DiscoverySettings(targets=[actor]),
        refiner=DiscoverySettings(targets=[refiner]),
        reconcile_interval_s=0,
    )
    server = CoordinatorServer(own)
    await server.start()
    yield server
    await server.stop()
