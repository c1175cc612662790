"""A bounded soak of the session refiner (2 search slots, 1 waiting) with more clients
than it holds: only OK and RESOURCE_EXHAUSTED come back, some answers do, and the refiner
is SERVING after. Latency percentiles are printed, never asserted."""

from __future__ import annotations

import pytest

from spar.soak import answer_request, drive, percentile, report, serving, slope_per_minute
from spar.v1 import refiner_pb2

CLIENTS = 6
SECONDS = 20.0


def test_percentile_and_slope() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([1.0] * 99 + [9.0], 99) == 1.0
    assert percentile([1.0] * 98 + [9.0, 9.0], 99) == 9.0
    assert slope_per_minute([(0.0, 10.0), (30.0, 11.0), (60.0, 12.0)]) == pytest.approx(2.0)
    assert slope_per_minute([(0.0, 5.0)]) == 0.0


@pytest.mark.slow
async def test_soak_answer_beyond_capacity(refiner_target: str) -> None:
    def make(i: int) -> refiner_pb2.AnswerRequest:
        # The root judge (3 samples x 64 tokens) fits the budget, a refinement does not:
        # every answer is judged once and then ends (EXHAUSTED or ALREADY_PASSING).
        return answer_request(i, max_tokens=8, budget_tokens=200, max_nodes=2, wall_s=20.0)

    stats = await drive(
        refiner_target, clients=CLIENTS, seconds=SECONDS, make_request=make, timeout=60
    )
    print("\n" + report(stats, []))
    assert set(stats.codes) <= {"OK", "RESOURCE_EXHAUSTED"}, stats.errors
    assert stats.ok > 0
    assert stats.resource_exhausted > 0  # 6 clients against 2 slots + 1 queue place
    assert await serving(refiner_target)
