"""Fixtures of the deploy tests: the offline tools and the chart rendered once per values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deploy_tools import VALUES_CPU, VALUES_PRODUCTION, Tools, install_tools


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
