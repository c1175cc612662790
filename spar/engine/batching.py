"""Pure logic of the hf engine's batching: which requests share a batch, stop strings.

No torch and no threads here, so every rule is unit-tested with scripted inputs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol, TypeVar

from spar.engine.protocol import GenerationRequest


def batch_key(request: GenerationRequest, serial: int) -> Hashable:
    """What requests of one batch must share: one ``model.generate`` call samples all rows
    with one temperature and top_p. Adapters need not match (mixed-adapter batches).

    A seeded request gets a batch of its own (``serial`` is unique per request), so its
    samples do not depend on which other requests ran next to it.
    """
    if request.seed is not None:
        return ("seeded", serial)
    if request.temperature == 0.0:
        return ("greedy",)
    return ("sample", request.temperature, request.top_p)


class Batchable(Protocol):
    """A queued request as the batcher sees it: requests of one ``key`` (the same
    sampling) may share a batch, and ``rows`` is how many sequences it adds to it."""

    @property
    def key(self) -> Hashable: ...

    @property
    def rows(self) -> int: ...


B = TypeVar("B", bound=Batchable)


def take_batch(queue: list[B], max_rows: int) -> list[B]:
    """Removes and returns the next batch: the oldest request and the later ones with its
    key, in arrival order, while their rows fit in ``max_rows``. A request with more rows
    than ``max_rows`` runs alone; the oldest request always runs, so none starves."""
    if not queue:
        return []
    first = queue[0]
    batch = [first]
    rows = first.rows
    rest: list[B] = []
    for item in queue[1:]:
        if item.key == first.key and rows + item.rows <= max_rows:
            batch.append(item)
            rows += item.rows
        else:
            rest.append(item)
    queue[:] = rest
    return batch


def queued_rows(queue: Sequence[Batchable]) -> int:
    return sum(item.rows for item in queue)


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the first stop string in text (the earliest start), or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def streamable_length(text: str, stops: Sequence[str]) -> int:
    """How much of an unfinished sample's text a stream may send now.

    Holds back an incomplete UTF-8 character at the end (decoded as U+FFFD) and the
    longest end of the text that could still become a stop string, so the streamed text
    always equals the final (stop-truncated) text.
    """
    end = len(text)
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, end), hold, -1):
            if text.endswith(stop[:k], 0, end):
                hold = k
                break
    return end - hold
