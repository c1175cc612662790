"""The loop stop's rule (spar.engine.loops), on scripted token sequences."""

from __future__ import annotations

import random

import pytest

from spar.engine.loops import ends_in_loop
from spar.engine.protocol import LoopStop

STOP = LoopStop(min_pattern=6, max_pattern=64, repeats=3)
UNIT = [11, 12, 13, 14, 15, 16, 17]  # a 7-token sentence


def test_a_run_repeated_three_times_at_the_end_is_a_loop() -> None:
    assert ends_in_loop([1, 2, 3, *UNIT * 3], STOP)
    assert not ends_in_loop([1, 2, 3, *UNIT * 2], STOP)


def test_a_loop_that_the_text_has_left_is_not_one() -> None:
    assert not ends_in_loop([*UNIT * 3, 99], STOP)


def test_a_short_run_counts_once_its_repeats_add_up_to_a_long_one() -> None:
    short = [5, 6]  # "| --- |": too short alone, a loop once 18 tokens repeat it
    assert not ends_in_loop(short * 5, STOP)
    assert ends_in_loop(short * 9, STOP)


def test_runs_longer_than_max_pattern_are_not_looked_for() -> None:
    long_unit = list(range(100, 170))  # 70 tokens
    assert not ends_in_loop(long_unit * 3, STOP)
    assert ends_in_loop(long_unit * 3, LoopStop(6, 80, 3))


def test_repeats_sets_how_many_in_a_row() -> None:
    assert not ends_in_loop(UNIT * 3, LoopStop(6, 64, 4))
    assert ends_in_loop(UNIT * 4, LoopStop(6, 64, 4))
    assert ends_in_loop(UNIT * 2, LoopStop(6, 64, 2))


def test_empty_and_short_sequences() -> None:
    assert not ends_in_loop([], STOP)
    assert not ends_in_loop([7] * 17, STOP)
    assert ends_in_loop([7] * 18, STOP)


@pytest.mark.parametrize("bad", [(0, 4, 3), (8, 6, 3), (6, 64, 1)])
def test_impossible_settings_are_refused(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="LoopStop"):
        LoopStop(*bad)


@pytest.mark.needs_engine
def test_the_rule_is_vllms() -> None:
    """The hf engines and vLLM stop on the same tokens (vLLM's own check, random input)."""
    from vllm.sampling_params import RepetitionDetectionParams
    from vllm.v1.core.sched.utils import check_sequence_repetition

    rng = random.Random(0)
    stops = [LoopStop(1, 8, 2), LoopStop(2, 6, 3), LoopStop(6, 64, 3), LoopStop(3, 3, 4)]
    for stop in stops:
        params = RepetitionDetectionParams(stop.max_pattern, stop.min_pattern, stop.repeats)
        for _ in range(3000):
            unit = [rng.randrange(3) for _ in range(rng.randrange(1, 10))]
            tokens = [rng.randrange(3) for _ in range(rng.randrange(0, 8))]
            tokens += unit * rng.randrange(0, 5) + [rng.randrange(3)] * rng.randrange(0, 2)
            assert ends_in_loop(tokens, stop) == check_sequence_repetition(tokens, params), (
                stop,
                tokens,
            )
