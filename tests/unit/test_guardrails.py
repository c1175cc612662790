"""Answer guardrails, the verifier's complaints and the edit distance (pure logic)."""

from __future__ import annotations

import pytest

from spar import guardrails
from spar.complaints import complaint
from spar.edits import normalized_edit_distance
from spar.ifeval import Constraint, ConstraintCheck, check


def rules(instruction: str, response: str, reference: str | None = None) -> list[str]:
    return [i.rule for i in guardrails.check(instruction, response, reference)]


SEA = "Describe the sea in two short sentences."


def test_a_plain_answer_is_sane() -> None:
    assert rules(SEA, "The sea is vast and restless. Its waves shine under the sun.") == []
    # Lists and repeated short markers are not loops.
    listing = "* The sea\n* The waves\n* The shore\n* The tide"
    assert rules("List four things about the sea.", listing) == []


@pytest.mark.parametrize(
    "response",
    [
        "The sea is blue.\nThe sea is blue.\nThe sea is blue.",
        "Waves roll in. Waves roll in. Waves roll in. Waves roll in.",
        "and the sea goes on and the sea goes on and the sea goes on and the sea goes on "
        "and the sea goes on",
    ],
)
def test_repetition_loops(response: str) -> None:
    assert rules(SEA, response) == ["repetition"]


@pytest.mark.parametrize(
    "response",
    [
        "This response meets the requirement of two short sentences.",  # the demo's answer
        "Here is the revised response: the sea is calm.",
        "The revised response contains no commas and describes the sea.",
        "I have followed all the instructions about the sea and its waves.",
        "Final Refined Output: [[start]] The sea is calm. [[end]]",
        "The word count of the sea description is fine.",
        "Section 1\nThe sea is calm.\n\nFix the problems.\n\nSection 2\nWaves roll in.",
        "Problems to fix: none. The sea is calm and grey.",
    ],
)
def test_talk_about_the_task(response: str) -> None:
    assert "meta" in rules(SEA, response)


def test_meta_words_the_instruction_itself_uses_are_allowed() -> None:
    instruction = "Explain what 'the revised response' means in peer review, in two sentences."
    assert rules(instruction, "In peer review the revised response answers reviewers.") == []


def test_off_topic() -> None:
    original = "The sea is vast and restless, and its waves shine under the sun all day."
    off = "Bananas grow in tropical climates and farmers harvest them green for export."
    assert rules(SEA, off, reference=original) == ["off_topic"]
    # A first answer (no reference) is never judged for drift: a good haiku about autumn
    # may never say "autumn".
    assert rules(SEA, off) == []
    # An answer with the subject's words, or close to the original it refines, is on topic.
    on = "Oceans and the sea cover the planet with deep water everywhere."
    assert rules(SEA, on, reference=original) == []
    near = "Bananas grow in tropical climates and farmers pick them green."
    assert rules(SEA, off, reference=near) == []
    # Too little to tell: short answers and instructions without a subject are not judged.
    assert rules(SEA, "Bananas are yellow.", reference=original) == []
    assert rules("Write two sentences.", off, reference=original) == []


def test_empty() -> None:
    assert rules(SEA, "  ...  ") == ["empty"]


def test_complaints_measure_the_failure() -> None:
    text = "Rain falls, softly, on the roof, all night."
    no_comma = Constraint("punctuation:no_comma")
    [c] = check("Describe rain without commas.", text, [no_comma])
    assert not c.strict
    assert complaint(text, no_comma, c) == "3 commas; none allowed"
    words = Constraint("length_constraints:number_words", {"relation": "less than", "num_words": 5})
    [c] = check("Describe rain in under 5 words.", text, [words])
    assert complaint(text, words, c) == "8 words; fewer than 5 allowed"
    quote = Constraint("startend:quotation")
    [c] = check("Wrap it in quotes.", text, [quote])
    assert "wrapped in double quotation marks" in complaint(text, quote, c)
    odd = ConstraintCheck("x:unknown", False, False, "Do the thing.")
    assert complaint(text, Constraint("x:unknown"), odd) == "not met: Do the thing."


def test_edit_distance_separates_repairs_from_rewrites() -> None:
    root = "The sea is wide, deep, and blue."
    assert normalized_edit_distance(root, root) == 0.0
    assert normalized_edit_distance(root, "the sea is wide deep and blue") == 0.0
    assert normalized_edit_distance(root, "The sea is wide and blue.") == pytest.approx(1 / 7)
    assert normalized_edit_distance(root, "Mountains rise above clouds.") == 1.0
    assert normalized_edit_distance("", "") == 0.0
