"""The loop's build-data stage over scripted journals: what it writes and what it counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.coordinator.journal import Journal, read_json
from services.coordinator.loop import Iteration, Ports
from services.coordinator.state import StateStore
from spar.config import CoordinatorSettings, Settings

PROMPT = "Write about the sea. In your entire response, refrain from the use of any commas."
ROOT, REPAIR = "The sea is wide, deep and blue.", "The sea is wide deep and blue."


def node(response: str, met: int, critique: str = "", value: float = 0.0) -> dict[str, Any]:
    return {
        "response": response, "reflection": "", "critique": critique, "value": value,
        "constraints_met": met, "constraints_checked": 1, "hard_fail": met == 0,
        "guardrails": [], "edit_distance": 0.0,
    }  # fmt: skip


async def test_build_data_counts_every_kind_of_record(tmp_path: Path) -> None:
    settings = Settings(
        cache_dir=tmp_path, coordinator=CoordinatorSettings(state_dir=str(tmp_path / "s"))
    )
    store = StateStore(tmp_path / "s")
    ports = Ports(None, None, None, None, None, None, None)  # type: ignore[arg-type]
    it = Iteration(1, settings, store, ports, lambda *_: None)
    d = store.iteration_dir(1)
    Journal(d / "prompts.jsonl").append(
        [
            {"key": k, "prompt": PROMPT, "instruction_id_list": ["punctuation:no_comma"],
             "kwargs": [{}]}
            for k in ("1", "2")
        ]
    )  # fmt: skip
    Journal(d / "judgments.jsonl").append(
        [
            {"key": "1#0", "prompt_key": "1", "index": 0, "prompt": PROMPT, "response": ROOT,
             "verdict": "fail", "value": 0.0, "yes_votes": 4, "no_votes": 1, "critique": "ok"},
            {"key": "2#0", "prompt_key": "2", "index": 0, "prompt": PROMPT, "response": REPAIR,
             "verdict": "pass", "value": 1.0, "yes_votes": 0, "no_votes": 0, "critique": ""},
        ]
    )  # fmt: skip
    Journal(d / "searches.jsonl").append(
        [
            {"key": "1", "prompt": PROMPT, "root": ROOT, "best_response": REPAIR,
             "outcome": "refined",
             "trace": [node(ROOT, 0, "- 1 comma; none allowed"), node(REPAIR, 1)]},
            {"key": "2", "prompt": PROMPT, "root": ROOT, "best_response": ROOT,
             "outcome": "exhausted",
             "trace": [node(ROOT, 0, "- 1 comma; none allowed"),
                       node("The sea, oh, the sea.", 0, value=0.9)]},
        ]
    )  # fmt: skip
    await it.build_data()
    c = it.record.counts
    assert (c.dpo_pairs, c.dpo_pairs_dropped_no_gain, c.dpo_pairs_dropped_rewrite) == (1, 0, 0)
    assert (c.refine_records, c.refine_steps_failed_search, c.refine_steps_dropped) == (1, 1, 0)
    assert (c.judge_relabelled, c.judge_verifier_only, c.judge_agreed) == (1, 1, 0)
    assert c.judge_records == 2 and c.sft_records == 3
    assert read_json(d / "dpo.json") == [{"prompt": PROMPT, "chosen": REPAIR, "rejected": ROOT}]
    sft = read_json(d / "sft.json")
    assert sft[0]["messages"][-1]["content"] == REPAIR
    assert sft[1]["messages"][-1]["content"].endswith("Final Judgement: No")
