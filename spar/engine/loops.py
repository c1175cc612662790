"""Loop detection over generated tokens: the rule of vLLM's ``repetition_detection``.

The hf engines end a sample with it the way vLLM's scheduler does, so a
:class:`~spar.engine.protocol.LoopStop` means the same on every engine. Pure logic.
"""

from __future__ import annotations

from collections.abc import Sequence

from spar.engine.protocol import LoopStop


def ends_in_loop(tokens: Sequence[int], stop: LoopStop) -> bool:
    """Whether the last ``p * repeats`` tokens are one run of ``p`` tokens repeated
    ``repeats`` times in a row, for some ``p`` in ``min_pattern..max_pattern``."""
    n = len(tokens)
    for p in range(stop.min_pattern, stop.max_pattern + 1):
        if p * stop.repeats > n:
            return False
        if tokens[n - 1] != tokens[n - 1 - p]:  # the cheap test first: most steps end here
            continue
        tail = tokens[n - p :]
        if all(tokens[n - p * k : n - p * (k - 1)] == tail for k in range(2, stop.repeats + 1)):
            return True
    return False
