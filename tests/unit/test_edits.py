"""The word edit distance is exact: the same as the textbook table on random word lists,
and on a megabyte-long answer it takes a fraction of a second."""

from __future__ import annotations

import random
import time

import pytest

from spar.edits import normalized_edit_distance, word_edit_distance


def table_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein by the full dynamic-programming table (the reference)."""
    previous = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        current = [i]
        for j, wb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wa != wb)))
        previous = current
    return previous[-1]


@pytest.mark.parametrize("seed", range(3))
def test_the_distance_is_the_tables(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        vocabulary = rng.sample(["sea", "rain", "blue", "deep", "wide", "cold", "the", "a"], 4)
        a = [rng.choice(vocabulary) for _ in range(rng.randint(0, 40))]
        b = [rng.choice(vocabulary) for _ in range(rng.randint(0, 40))]
        if rng.random() < 0.3:  # a repair: the same text with a few words changed
            b = [w if rng.random() < 0.9 else "storm" for w in a]
        assert word_edit_distance(" ".join(a), " ".join(b)) == table_distance(a, b), (a, b)


def test_a_megabyte_answer_is_measured_exactly_and_fast() -> None:
    huge = "lorem ipsum " * 100_000  # 1.2 MB, 200,000 words
    start = time.perf_counter()
    assert word_edit_distance(huge, "original response") == 200_000
    assert normalized_edit_distance(huge, huge + " Done.") == 1 / 200_001
    assert word_edit_distance(huge, "Lorem, ipsum " + huge[12:-6] + " ipsum x") == 1
    assert time.perf_counter() - start < 5  # the table would take hours
