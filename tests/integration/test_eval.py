"""`spar eval` as a user runs it, against the session's real actor."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from spar import ifeval

SPAR = [sys.executable, "-m", "spar_cli"]
SAMPLE = Path(__file__).parents[1] / "data" / "ifeval_sample.jsonl"


async def run(*args: str) -> tuple[int, str, str]:
    # Async, so the in-process actor keeps serving while the CLI talks to it.
    proc = await asyncio.create_subprocess_exec(
        *SPAR,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_eval_json_metrics_match_a_recomputation(actor_target: str) -> None:
    code, out, err = await run(
        "eval", "--data", str(SAMPLE), "--limit", "6", "--max-tokens", "64", "--json",
        "--target", actor_target,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["prompts"] == 6 and doc["served_adapters"] == [""]
    results = doc["results"]
    expected_keys = [json.loads(line)["key"] for line in SAMPLE.read_text().splitlines()[:6]]
    assert [r["key"] for r in results] == expected_keys
    assert all(r["response"].strip() for r in results)
    assert all(0 < r["completion_tokens"] <= 64 for r in results)
    # The same responses, checked and scored with the verifier directly.
    checks = [
        ifeval.check(
            r["prompt"],
            r["response"],
            [
                ifeval.Constraint(i, kw)
                for i, kw in zip(r["instruction_id_list"], r["kwargs"], strict=True)
            ],
        )
        for r in results
    ]
    s = ifeval.scores(checks)
    assert doc["metrics"] == {
        "prompt_level_strict": s.prompt_strict,
        "prompt_level_loose": s.prompt_loose,
        "instruction_level_strict": s.instruction_strict,
        "instruction_level_loose": s.instruction_loose,
    }
    assert doc["instructions"] == s.instructions == 8
    assert all(0.0 <= v <= 1.0 for v in doc["metrics"].values())
    assert [r["strict"] for r in results] == [[c.strict for c in cs] for cs in checks]
    per_id: dict[str, list[ifeval.ConstraintCheck]] = {}
    for c in (c for cs in checks for c in cs):
        per_id.setdefault(c.instruction_id, []).append(c)
    assert doc["by_instruction"] == {
        iid: {
            "count": len(cs),
            "strict": sum(c.strict for c in cs) / len(cs),
            "loose": sum(c.loose for c in cs) / len(cs),
        }
        for iid, cs in per_id.items()
    }


async def test_eval_table_and_clear_errors(actor_target: str, tmp_path: Path) -> None:
    bad = tmp_path / "eval.jsonl"
    bad.write_text(SAMPLE.read_text().splitlines()[0] + "\n" + '{"prompt": "hi"}\n')
    table, missing_adapter, bad_file = await asyncio.gather(
        run("eval", "--data", str(SAMPLE), "--limit", "2", "--max-tokens", "8",
            "--target", actor_target),
        run("eval", "--data", str(SAMPLE), "--limit", "2", "--max-tokens", "8",
            "--adapter", "actor-9-000000000000", "--target", actor_target),
        run("eval", "--data", str(bad), "--target", actor_target),
    )  # fmt: skip
    code, out, err = table
    assert code == 0, err
    assert "2 prompts, 3 instructions; adapter (active), served by base" in out
    for name in ("prompt_level_strict", "prompt_level_loose", "instruction_level_strict",
                 "instruction_level_loose", "length_constraints:number_words"):  # fmt: skip
        assert name in out
    code, out, err = missing_adapter
    assert code == 1 and out == ""
    assert "NOT_FOUND" in err and "actor-9-000000000000" in err and "Traceback" not in err
    code, out, err = bad_file
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"{bad}:2: missing field 'key'" in err
