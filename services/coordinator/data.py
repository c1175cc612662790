"""Training data of an iteration, from its judgments and searches (pure logic).

- Actor DPO pairs: chosen = the refined response of a search that passed its end gate,
  rejected = the search's root (the actor's own failing sample). They differ only where
  the instruction was violated, which is what makes SPaR pairs clean.
- Refiner RFT records (chat ``messages``): every refinement step on the path to the best
  node that raised the value (judge conversation + refine turn → the reflection and the
  refined output), and every judgment whose vote was split but decided (the judge
  conversation → the majority-side critique).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from services.refiner.prompts import Prompts
from spar.edits import normalized_edit_distance

Record = dict[str, Any]


def pick_negative(judged: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The sample that goes to search: a majority-FAIL one (lowest value first); ties
    and undecided votes are dropped, as in the paper."""
    failing = [j for j in judged if j["verdict"] == "fail"]
    if not failing:
        return None
    return min(failing, key=lambda j: (j["value"], j["index"]))


def dpo_pairs(
    searches: Iterable[Mapping[str, Any]], max_edit_distance: float = 1.0
) -> tuple[list[Record], int]:
    """Pairs from searches whose refinement passed; and how many were dropped as rewrites.

    A pair whose chosen answer is farther than ``max_edit_distance`` (normalised word edit
    distance, spar.edits) from the rejected one is a rewrite, not a repair: it would teach
    the actor to paraphrase rather than to fix the violation, so it is dropped.
    """
    pairs = []
    rewrites = 0
    for s in searches:
        if s["outcome"] != "refined":
            continue
        chosen, rejected = s["best_response"], s["root"]
        if not chosen.strip() or chosen.strip() == rejected.strip():
            continue
        if normalized_edit_distance(rejected, chosen) > max_edit_distance:
            rewrites += 1
            continue
        pairs.append({"prompt": s["prompt"], "chosen": chosen, "rejected": rejected})
    return pairs, rewrites


def _messages(prompts: Prompts, turns: list[Any], completion: str) -> Record:
    return {
        "messages": [
            *({"role": m.role, "content": m.content} for m in turns),
            {"role": "assistant", "content": completion},
        ]
    }


def refinement_records(searches: Iterable[Mapping[str, Any]], prompts: Prompts) -> list[Record]:
    out = []
    for s in searches:
        trace = s.get("trace") or []
        for parent, child in itertools.pairwise(trace):
            if child["value"] <= parent["value"] or not parent.get("critique"):
                continue
            turns = prompts.refine_messages(s["prompt"], parent["response"], parent["critique"])
            out.append(
                _messages(
                    prompts,
                    turns,
                    prompts.refine_completion(child["reflection"], child["response"]),
                )
            )
    return out


def judgment_records(judgments: Iterable[Mapping[str, Any]], prompts: Prompts) -> list[Record]:
    out = []
    for j in judgments:
        yes, no = j["yes_votes"], j["no_votes"]
        if yes == 0 or no == 0 or yes == no or not j.get("critique"):
            continue
        turns = prompts.judge_messages(j["prompt"], j["response"])
        out.append(_messages(prompts, turns, j["critique"]))
    return out
