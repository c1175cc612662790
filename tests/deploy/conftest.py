"""Fixtures of the deploy tests: the offline tools and the chart rendered once per values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from deploy_tools import VALUES_CPU, VALUES_PRODUCTION, Tools, install_tools, parse_manifests

from spar.config import CoordinatorSettings, DiscoverySettings, Settings


@pytest.fixture(scope="session")
def tools() -> Tools:
    """helm, kubectl, prometheus and promtool (installed on first use, then reused)."""
    return Tools(install_tools())


@pytest.fixture(scope="session")
def values_files() -> dict[str, list[Path]]:
    """The values combinations every validation runs over."""
    return {"defaults": [], "production": [VALUES_PRODUCTION], "cpu": [VALUES_CPU]}


@pytest.fixture(scope="session")
def rendered(tools: Tools, values_files: dict[str, list[Path]]) -> dict[str, str]:
    """``helm template`` of each values combination (by its name in values_files), once
    per session: the parsed objects and the schema validation read the same text."""
    return {which: tools.template(*files).stdout for which, files in values_files.items()}


@pytest.fixture(scope="session")
def default_objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return parse_manifests(rendered["defaults"])


@pytest.fixture(scope="session")
def production_objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return parse_manifests(rendered["production"])


@pytest.fixture(scope="session")
def cpu_objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return parse_manifests(rendered["cpu"])


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
