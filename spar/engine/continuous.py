"""Pure logic of the hf engine's continuous batching: rows, buckets, compaction, stops.

No torch and no threads here, so every rule is unit-tested with scripted inputs.

A *row* is one sample being generated; row ``i`` owns KV-cache slot ``i``. Running rows
are kept dense in ``0..count-1`` (a finished row's slot is filled by the last running
row), so one decode step reads one contiguous block of the cache. Decode steps are
CUDA graphs captured per (rows, cache length) *bucket*; a batch runs in the smallest
captured bucket that holds it, with idle padding rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MASK64 = (1 << 64) - 1
#: Row buckets below 64 in small steps (latency of small batches), then ~1.5x apart.
_ROW_STEPS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def row_buckets(max_rows: int) -> list[int]:
    """The batch sizes decode graphs are captured for, up to and including max_rows."""
    buckets = [b for b in _ROW_STEPS if b < max_rows]
    top = buckets[-1] if buckets else 0
    while top * 3 // 2 < max_rows and top >= 1024:  # beyond the table: keep ~1.5x steps
        top = top * 3 // 2
        buckets.append(top)
    return [*buckets, max_rows]


def bucket(value: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds value (buckets ascending; value <= the last)."""
    for b in buckets:
        if b >= value:
            return b
    raise ValueError(f"{value} exceeds the largest bucket {buckets[-1]}")


def length_bucket(length: int, granularity: int, max_len: int) -> int:
    """Cache positions a decode step reads: length rounded up to the granularity."""
    return min(max_len, -(-length // granularity) * granularity)


def compaction(finished: Iterable[int], count: int) -> tuple[int, list[tuple[int, int]]]:
    """After the rows in ``finished`` leave a dense block of ``count`` rows: the new
    count and the (source, destination) moves that make the block dense again. Each
    move takes a surviving row from the tail into a hole at the front; sources and
    destinations are disjoint, so all moves can run at once."""
    gone = set(finished)
    left = count - len(gone)
    holes = sorted(i for i in gone if i < left)
    movers = sorted(i for i in range(left, count) if i not in gone)
    return left, list(zip(movers, holes, strict=True))


def stop_may_end_with(piece: str, last_chars: frozenset[str]) -> bool:
    """Whether a new token whose own text is ``piece`` can complete a stop string.

    A stop string that appears only after this token must end inside it, so the token
    carries the stop's last character, or the token's text alone is not all it adds: an
    unfinished UTF-8 character, an empty piece, or a space (SentencePiece tokenizers drop
    a token's leading space when it is decoded alone). Checking this per token is what
    keeps stop strings cheap: the windowed decode runs only when it says yes."""
    if not piece or "\ufffd" in piece:
        return True
    return any(c in piece or c == " " for c in last_chars)


def sample_key(seed: int, index: int) -> int:
    """The random-stream key of sample ``index`` of a request seeded with ``seed``
    (splitmix64 of both): the same (seed, index) samples the same tokens whatever runs
    next to it."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) & ((1 << 62) - 1)
