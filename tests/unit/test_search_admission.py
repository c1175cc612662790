"""Admission of searches: N at once, a bounded queue, the rest refused at once."""

from __future__ import annotations

import asyncio

import pytest

from services.refiner.admission import Admission
from spar.errors import InvalidArgument, ResourceExhausted


async def test_slots_queue_and_refusal() -> None:
    changes: list[tuple[int, int]] = []
    admission = Admission(1, 1, lambda running, waiting: changes.append((running, waiting)))
    release = asyncio.Event()
    order: list[str] = []

    async def search(name: str) -> None:
        async with admission.slot():
            order.append(name)
            await release.wait()

    first = asyncio.create_task(search("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(search("second"))  # waits in the queue
    await asyncio.sleep(0)
    assert (admission.running, admission.waiting) == (1, 1)
    with pytest.raises(ResourceExhausted, match="1 searches running and 1 waiting"):
        await search("third")
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert (admission.running, admission.waiting) == (0, 0)
    assert changes[-1] == (0, 0) and (1, 1) in changes


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    admission = Admission(1, 1)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0
    late = asyncio.create_task(hold())  # the queue has room again
    await asyncio.sleep(0)
    assert admission.waiting == 1
    release.set()
    await asyncio.gather(holder, late)
    assert admission.running == 0


def test_limits_are_validated() -> None:
    with pytest.raises(InvalidArgument):
        Admission(0, 1)
