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


@pytest.mark.parametrize(
    ("instruction", "response"),
    [
        # The demo's search once returned this as its refined answer (no comma, so the
        # constraint passed).
        (SEA, "The sea in two sentences."),
        (SEA, "The sea in two short sentences."),
        ("Write a haiku about autumn.", "A haiku about autumn."),
        ("What is the capital of France?", "What is the capital of France?"),
        # IFEval's bullet-point example, unquoted in its prompt, copied as the answer.
        (
            "Why is the sky blue? Your answer must contain exactly 2 bullet points. Use the "
            "markdown bullet points such as:\n* This is point 1.\n* This is point 2",
            "* This is point 1.\n* This is point 2.",
        ),
    ],
)
def test_the_instruction_said_back(instruction: str, response: str) -> None:
    assert rules(instruction, response) == ["echo"]
    assert "repeats the instruction" in guardrails.complaint(
        guardrails.check(instruction, response)[0]
    )


@pytest.mark.parametrize(
    ("instruction", "response"),
    [
        (SEA, "The sea is blue."),  # one word of its own is an answer, if a poor one
        ("What is the capital of France?", "The capital of France is Paris."),
        ("Write a riddle whose answer is a clock.", "The answer to your riddle is 12."),
        ("Name a colour. Answer in lowercase.", "blue"),  # under three words
        # Words in any script are words of the answer's own.
        ("Describe the sea in Russian, no other language.", "Море большое и синее."),
        # Words the instruction quotes are for the answer to use.
        (
            "Is water wet? Answer with one of the following options: ('My answer is yes.', "
            "'My answer is no.', 'My answer is maybe.')",
            "My answer is yes.",
        ),
        ('Is water wet? Answer "My answer is yes." or "My answer is no."', "My answer is no."),
        # Repeating the request, as IFEval's repeat_prompt asks, and then answering.
        (
            "First repeat the request word for word, then answer. Request: Why is grass green?",
            "Why is grass green? Grass is green because of chlorophyll.",
        ),
    ],
)
def test_answers_that_use_the_instructions_words_are_not_echoes(
    instruction: str, response: str
) -> None:
    assert rules(instruction, response) == []


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
