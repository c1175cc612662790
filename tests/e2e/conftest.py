"""Fixtures of the end-to-end tests: a second actor replica, a trainer, a coordinator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from spar.config import Settings


@pytest.fixture(scope="session")
async def second_actor(settings: Settings) -> AsyncIterator[object]:
    """Another actor replica (its own engine) so rollouts span more than one replica."""
    from services.actor.server import ActorServer

    server = ActorServer(settings.model_copy(update={"cache_dir": settings.cache_dir / "actor2"}))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def e2e_trainer(settings: Settings) -> AsyncIterator[object]:
    from services.trainer.server import TrainerServer

    server = TrainerServer(settings)
    await server.start()
    yield server
    await server.stop()
