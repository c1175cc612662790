"""Exact programmatic repairs of failing answers (warm-up examples for the refiner),
checked with IFEval's own checkers."""

from __future__ import annotations

from services.coordinator.repairs import repair
from spar import ifeval
from spar.ifeval import Constraint

INSTRUCTION = "Write a short note to a neighbour who looked after your cat."
ANSWER = (
    "Dear Sam, thank you so much for looking after Milo while I was away. He came home "
    "happy and well fed, and the house was spotless. I owe you a dinner soon."
)


def test_letter_case_commas_and_an_end_phrase_are_repaired_together() -> None:
    cons = [
        Constraint("change_case:english_lowercase", {}),
        Constraint("punctuation:no_comma", {}),
        Constraint("startend:end_checker", {"end_phrase": "Any other questions?"}),
    ]
    r = repair(INSTRUCTION, ANSWER, cons, ifeval.check)
    assert r is not None
    assert all(c.strict for c in ifeval.check(INSTRUCTION, r.response, cons))
    assert set(r.fixed) == {c.instruction_id for c in cons}
    assert r.response.startswith("dear sam thank you") and "," not in r.response
    assert r.response.endswith("any other questions?")
    assert "comma" in r.critique, "the critique is the verifier's complaint list"


def test_quotation_postscript_and_title_repairs() -> None:
    quote = [Constraint("startend:quotation", {})]
    r = repair(INSTRUCTION, ANSWER, quote, ifeval.check)
    assert r is not None and r.response == f'"{ANSWER}"'
    ps = [Constraint("detectable_content:postscript", {"postscript_marker": "P.P.S"})]
    r = repair(INSTRUCTION, ANSWER, ps, ifeval.check)
    assert r is not None and r.response.startswith(ANSWER) and "\n\nP.P.S. " in r.response
    task = "Write a thank-you note to a neighbour who looked after your cat."
    title = [Constraint("detectable_format:title", {})]
    r = repair(task, ANSWER, title, ifeval.check)
    assert r is not None and r.response.startswith("<<Cat and Kindness>>\n\nDear Sam")


def test_no_repair_when_a_failed_constraint_is_beyond_a_program_or_nothing_failed() -> None:
    words = Constraint(
        "length_constraints:number_words", {"num_words": 10, "relation": "less than"}
    )
    comma = Constraint("punctuation:no_comma", {})
    assert repair(INSTRUCTION, ANSWER, [comma, words], ifeval.check) is None
    assert repair(INSTRUCTION, ANSWER.replace(",", ""), [comma], ifeval.check) is None


def test_no_repair_of_an_answer_that_breaks_a_guardrail() -> None:
    loop = "\n".join(["Thank you for looking after my cat."] * 4)
    assert repair(INSTRUCTION, loop, [Constraint("startend:quotation", {})], ifeval.check) is None
