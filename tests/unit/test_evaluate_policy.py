"""Promotion decisions: candidate vs baseline under a metric and a margin."""

from __future__ import annotations

import pytest

from services.coordinator.promotion import PromotionPolicy, decide
from spar.errors import InvalidArgument
from spar.evaluation import METRICS, Metrics
from spar.v1 import coordinator_pb2


def m(strict: float, loose: float = 0.5, prompts: int = 20) -> Metrics:
    return Metrics(strict, loose, 0.5, 0.5, prompts=prompts, instructions=30)


def test_default_policy_is_prompt_level_strict_with_no_margin() -> None:
    assert PromotionPolicy() == PromotionPolicy("prompt_level_strict", 0.0)
    assert decide(m(0.50), m(0.55)).promote
    assert not decide(m(0.50), m(0.45)).promote


def test_equal_scores_promote() -> None:
    d = decide(m(0.35), m(0.35))
    assert d.promote and d.delta == 0.0
    assert d.reason == "candidate keeps prompt_level_strict at 0.3500; promote"


def test_improvement_promotes() -> None:
    d = decide(m(0.40), m(0.55))
    assert d.promote
    assert d.reason.startswith("candidate improves prompt_level_strict from 0.4000 to 0.5500")


def test_drop_within_margin_promotes_and_says_so() -> None:
    d = decide(m(0.50), m(0.47), PromotionPolicy(margin=0.05))
    assert d.promote and d.delta == pytest.approx(-0.03)
    assert "lowers prompt_level_strict from 0.5000 to 0.4700" in d.reason
    assert "within margin 0.05" in d.reason


def test_drop_beyond_margin_keeps_the_baseline() -> None:
    d = decide(m(0.50), m(0.40), PromotionPolicy(margin=0.05))
    assert not d.promote
    assert d.reason.endswith("keep the baseline: the drop exceeds margin 0.05")


def test_a_drop_of_exactly_the_margin_promotes_despite_float_rounding() -> None:
    # In floats 0.15 - 0.2 < -0.05 and 0.3 - 0.4 < -0.1: the edge must not flip.
    assert 0.15 - 0.2 < -0.05 and 0.3 - 0.4 < -0.1
    for base, cand, margin in ((0.2, 0.15, 0.05), (0.4, 0.3, 0.1), (0.275, 0.075, 0.2)):
        assert decide(m(base), m(cand), PromotionPolicy(margin=margin)).promote
    assert not decide(m(0.3), m(0.19), PromotionPolicy(margin=0.1)).promote


def test_the_chosen_metric_decides() -> None:
    base, cand = m(strict=0.40, loose=0.60), m(strict=0.50, loose=0.55)
    assert decide(base, cand, PromotionPolicy("prompt_level_strict")).promote
    loose = decide(base, cand, PromotionPolicy("prompt_level_loose"))
    assert not loose.promote and loose.metric == "prompt_level_loose"
    assert (loose.baseline, loose.candidate) == (0.60, 0.55)


def test_works_on_the_coordinator_messages() -> None:
    base = coordinator_pb2.EvalMetrics(instruction_level_loose=0.75, prompts=8)
    cand = coordinator_pb2.EvalMetrics(instruction_level_loose=0.625, prompts=8)
    d = decide(base, cand, PromotionPolicy("instruction_level_loose", margin=0.125))
    assert d.promote and d.delta == -0.125


def test_bad_policies_and_mismatched_evaluations_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="metric 'accuracy' is unknown; use one of"):
        PromotionPolicy("accuracy")
    with pytest.raises(InvalidArgument, match=r"margin=-0.1 must be within \[0, 1\]"):
        PromotionPolicy(margin=-0.1)
    with pytest.raises(InvalidArgument, match="evaluate both on the same prompts"):
        decide(m(0.5, prompts=20), m(0.5, prompts=19))
    assert set(METRICS) == {
        "prompt_level_strict",
        "prompt_level_loose",
        "instruction_level_strict",
        "instruction_level_loose",
    }
