"""Fixtures of the deploy tests: the offline tools and the chart rendered once per values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from deploy_tools import VALUES_CPU, VALUES_PRODUCTION, Tools, install_tools

from spar.config import Settings, TrainerSettings


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


@pytest.fixture(scope="session")
async def trainer_server(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[object]:
    """A real trainer for the dashboard's training panels (store and state in a temp dir,
    one torch thread). Drop it once tests/conftest.py has a session trainer."""
    from services.trainer.server import TrainerServer

    root = tmp_path_factory.mktemp("dashboard-trainer")
    own = settings.model_copy(deep=True)
    own.trainer = TrainerSettings(
        store_dir=str(root / "store"), state_dir=str(root / "state"), threads=1
    )
    server = TrainerServer(own)
    await server.start()
    yield server
    await server.stop()
