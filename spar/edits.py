"""How far a refined answer moved from the original: a normalised word-level edit distance.

SPaR's pairs are useful because the refined answer differs from the original only where
the instruction was violated. A repair changes a few words; a rewrite changes most of
them. The distance is Levenshtein over words, compared without case and surrounding
punctuation (so lowercasing a text or removing its commas is a repair of distance 0,
not a rewrite), divided by the longer answer's word count: 0.0 = the same words,
1.0 = nothing in common. Pure logic.

The distance is exact at any length. A refiner can be handed a megabyte-long answer, so
the words a repair leaves alone at either end are set aside first (they cost nothing),
and the rest is computed bit-parallel (Myers/Hyyrö): one pass over the longer text whose
steps are integer operations on a bit per word of the shorter one, i.e. O(n·m/64) machine
words instead of the O(n·m) Python steps of the textbook table.
"""

from __future__ import annotations

import string

_PUNCTUATION = string.punctuation + "“”‘’«»…"


def words(text: str) -> list[str]:
    """The text's words, lowercased, without surrounding punctuation."""
    out = []
    for token in text.split():
        word = token.strip(_PUNCTUATION).lower()
        if word:
            out.append(word)
    return out


def word_edit_distance(a: str, b: str) -> int:
    """Insertions, deletions and substitutions of whole words that turn a into b."""
    return _levenshtein(words(a), words(b))


def normalized_edit_distance(original: str, refined: str) -> float:
    """Word edit distance ÷ the longer text's word count; 0.0 for two empty texts."""
    x, y = words(original), words(refined)
    longest = max(len(x), len(y))
    if longest == 0:
        return 0.0
    return _levenshtein(x, y) / longest


def _levenshtein(x: list[str], y: list[str]) -> int:
    """Levenshtein distance between two word lists."""
    start = 0
    while start < len(x) and start < len(y) and x[start] == y[start]:
        start += 1
    end_x, end_y = len(x), len(y)
    while end_x > start and end_y > start and x[end_x - 1] == y[end_y - 1]:
        end_x -= 1
        end_y -= 1
    x, y = x[start:end_x], y[start:end_y]
    if len(x) < len(y):
        x, y = y, x
    if not y:
        return len(x)
    # Bit j of a column's vectors is the step from row j to row j + 1 of the table
    # (rows: y's words): +1 (positive) or -1 (negative), else 0.
    where: dict[str, int] = {}
    for j, word in enumerate(y):
        where[word] = where.get(word, 0) | 1 << j
    mask = (1 << len(y)) - 1
    last = 1 << (len(y) - 1)
    positive, negative = mask, 0
    distance = len(y)
    for word in x:
        equal = where.get(word, 0)
        xv = equal | negative
        xh = (((equal & positive) + positive) ^ positive) | equal
        horizontal_positive = negative | (~(xh | positive) & mask)
        horizontal_negative = positive & xh
        if horizontal_positive & last:
            distance += 1
        elif horizontal_negative & last:
            distance -= 1
        horizontal_positive = (horizontal_positive << 1 | 1) & mask
        horizontal_negative = (horizontal_negative << 1) & mask
        positive = horizontal_negative | (~(xv | horizontal_positive) & mask)
        negative = horizontal_positive & xv
    return distance
