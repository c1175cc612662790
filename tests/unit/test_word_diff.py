"""The word diff the demo prints under a refined answer."""

from __future__ import annotations

from spar.word_diff import Span, changed_words, render, word_diff


def test_a_removed_comma_is_shown_as_the_comma_alone() -> None:
    spans = word_diff("The sea is vast, deep and blue.", "The sea is vast deep and blue.")
    assert render(spans) == "The sea is vast[-,-] deep and blue."
    assert changed_words(spans) == 1


def test_replaced_and_added_words_are_marked_and_the_rest_kept_verbatim() -> None:
    original = "Waves crash, gulls cry,\nand the tide returns."
    refined = "Waves crash and gulls cry\nas the tide returns."
    spans = word_diff(original, refined)
    assert (
        render(spans) == "Waves crash[-,-]{+ and+} gulls cry[-,-]\n[-and-]{+as+} the tide returns."
    )
    # Reading only one side of the diff gives back that text exactly.
    assert "".join(s.text for s in spans if s.kind != "added") == original
    assert "".join(s.text for s in spans if s.kind != "removed") == refined


def test_a_similar_word_is_diffed_by_character() -> None:
    assert render(word_diff("Blue sky", "blue sky")) == "[-B-]{+b+}lue sky"


def test_identical_and_empty_texts() -> None:
    assert word_diff("same text", "same text") == [Span("same", "same text")]
    assert changed_words(word_diff("same text", "same text")) == 0
    assert render(word_diff("", "New text.")) == "{+New text.+}"


def test_colour_marks_removed_and_added_for_a_terminal() -> None:
    coloured = render(word_diff("a, b", "a b"), colour=True)
    assert coloured == "a\x1b[31m\x1b[9m,\x1b[0m b"
    assert render(word_diff("a b", "a b c"), colour=True) == "a b\x1b[32m c\x1b[0m"
