"""How far a refined answer moved from the original: a normalised word-level edit distance.

SPaR's pairs are useful because the refined answer differs from the original only where
the instruction was violated. A repair changes a few words; a rewrite changes most of
them. The distance is Levenshtein over words, compared without case and surrounding
punctuation (so lowercasing a text or removing its commas is a repair of distance 0,
not a rewrite), divided by the longer answer's word count: 0.0 = the same words,
1.0 = nothing in common. Pure logic.
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
    x, y = words(a), words(b)
    if len(x) < len(y):
        x, y = y, x
    previous = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        current = [i]
        for j, wy in enumerate(y, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wx != wy)))
        previous = current
    return previous[-1]


def normalized_edit_distance(original: str, refined: str) -> float:
    """Word edit distance ÷ the longer text's word count; 0.0 for two empty texts."""
    longest = max(len(words(original)), len(words(refined)))
    if longest == 0:
        return 0.0
    return word_edit_distance(original, refined) / longest
