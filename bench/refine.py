"""Refinement itself: does spar's search turn failing answers into passing, sane ones?

The cases are a fixed, seeded set of failing (prompt, answer) pairs: verifiable prompts
synthesised by spar's own generator (``spar.prompt_synthesis.synthesize``; not
IFEval's prompts) and the default model's own answers to them, kept when at least one
checked constraint fails and the answer ended by itself (not cut at max_tokens). The set
lives in ``bench/data/refine_cases.jsonl``; ``--rebuild`` draws it again (same seed,
same engine seed: the same set, up to engine nondeterminism).

In one run, on one CPU vLLM engine with the default model, it compares:

(a) **spar**: :class:`TreeSearch` with the hybrid judge and the production defaults
    (``Settings().refiner``, so ``SPAR_REFINER__*`` variables apply: direct refine
    prompt, branch 3, keep 2, depth 3, 12 nodes, 16,384 tokens, 120 s, refine max_tokens
    = the answers' 256 + 64, guardrails on), at the refiner's default concurrency of 4
    searches;
(b) **baseline**: one rewrite request per case from the verifier's complaints (the same
    direct prompt and critique), 5 samples (T=0.7), the best of them taken. It runs
    ``--baseline-runs`` times (3) over the cases and its rate is the mean: a single run
    moved by six cases out of 64 between two runs of the same code.

Success: the final answer passes every constraint and breaks no guardrail
(:mod:`spar.guardrails`, applied to both sides). A regression: the final answer passes
fewer constraints than the original. "Lost to guardrails": cases where a candidate
passed every constraint but every such candidate broke a guardrail.

    .venv/bin/python -m bench.refine [--cases 64] [--rebuild] [--compare-votes 16]
        [--baseline-runs 3]
        [--engine vllm|hf] [--refiner-adapter DIR] [--cases-file PATH]

``--refiner-adapter`` loads a LoRA folder (e.g. the refiner warm-up's version from the
trainer's store) into the engine and runs the spar side with it; the cases and the
baseline stay on the base model. ``--engine hf`` runs on the transformers engine (the GPU
machine has no vLLM; its settings come from ``SPAR_ENGINE__*``).

Ends with ``RESULT refine success_rate=… baseline_rate=… ratio=… regressions=…
edit_distance=… tokens_per_success=…``. Targets: regressions 0, success_rate ≥ 0.20 and
≥ 1.5 × baseline_rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.common import format_result
from services.refiner import options
from services.refiner.core import EngineContext
from services.refiner.cost import Budget, Meter
from services.refiner.judge import Judge, JudgeConfig
from services.refiner.search import SearchConfig, TreeSearch
from spar import guardrails, ifeval
from spar.complaints import program_critique
from spar.config import RefinerSettings, Settings
from spar.edits import normalized_edit_distance
from spar.engine.protocol import AdapterRef, Engine, GenerationRequest, GenerationResult, Message
from spar.ifeval import Constraint
from spar.model import prepare_default_model
from spar.prompt_synthesis import synthesize
from spar.refine_templates import Prompts

CASES_FILE = Path(__file__).parent / "data" / "refine_cases.jsonl"
ANSWER_MAX_TOKENS = 256
"""The actor's default max_tokens (SPAR_LIMITS__DEFAULT_MAX_TOKENS)."""


@dataclass(frozen=True)
class Case:
    """One failing case: a synthesised prompt, the model's own answer and its constraints."""

    key: str
    instruction: str
    response: str
    constraints: tuple[Constraint, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "instruction": self.instruction,
            "response": self.response,
            "instruction_id_list": [c.instruction_id for c in self.constraints],
            "kwargs": [dict(c.kwargs) for c in self.constraints],
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Case:
        ids, kwargs = doc["instruction_id_list"], doc["kwargs"]
        assert isinstance(ids, list) and isinstance(kwargs, list)
        return cls(
            str(doc["key"]), str(doc["instruction"]), str(doc["response"]),
            tuple(Constraint(i, k) for i, k in zip(ids, kwargs, strict=True)),
        )  # fmt: skip


@dataclass
class Outcome:
    """One side's result on one case."""

    final: str
    met: int
    total: int
    sane: bool
    original_met: int
    tokens: int
    lost_to_guardrails: bool = False
    search_outcome: str = ""
    wall_s: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.met == self.total and self.sane

    @property
    def regression(self) -> bool:
        return self.met < self.original_met


def met(case: Case, text: str) -> int:
    return sum(c.strict for c in ifeval.check(case.instruction, text, case.constraints))


def sane(case: Case, text: str) -> bool:
    return not guardrails.check(case.instruction, text, case.response)


# -- cases ---------------------------------------------------------------------------


async def build_cases(engine: Engine, n: int, seed: int) -> list[Case]:
    """Failing, uncut answers of the default model to synthesised prompts."""
    records = synthesize(6 * n, seed)
    cases: list[Case] = []
    for start in range(0, len(records), n):  # a batch at a time, until n cases fail
        batch = records[start : start + n]
        results = await asyncio.gather(*(
            engine.generate(GenerationRequest(
                messages=[Message("user", r.prompt)], n=1, temperature=0.9, top_p=0.9,
                max_tokens=ANSWER_MAX_TOKENS,
            ))
            for r in batch
        ))  # fmt: skip
        for record, result in zip(batch, results, strict=True):
            sample = result.samples[0]
            if sample.finish_reason != "stop" or not sample.text.strip():
                continue
            case = Case(f"synth-{seed}-{record.key}", record.prompt, sample.text.strip(),
                        record.constraints)  # fmt: skip
            if met(case, case.response) < len(case.constraints) and len(cases) < n:
                cases.append(case)
        if len(cases) == n:
            break
    return cases


# -- the two sides -------------------------------------------------------------------


def production_configs(settings: RefinerSettings) -> tuple[SearchConfig, JudgeConfig, Budget]:
    search = replace(
        options.search_config(options.SearchOptions(), settings, "", ANSWER_MAX_TOKENS),
        seed=0,
    )
    judge = options.judge_config(settings)
    budget = Budget(
        settings.default_max_nodes,
        settings.default_max_generated_tokens,
        settings.default_max_wall_time_s,
    )
    return search, judge, budget


async def spar_side(
    engine: Engine, case: Case, prompts: Prompts, search: SearchConfig, judge: JudgeConfig,
    budget: Budget,
) -> Outcome:  # fmt: skip
    meter = Meter(engine.generate, budget)
    j = Judge("hybrid", case.instruction, case.constraints, prompts=prompts, config=judge,
              generate=meter.for_phase("judge"), check=ifeval.check)  # fmt: skip
    tree = TreeSearch(case.instruction, case.response, judge=j, meter=meter, prompts=prompts,
                      config=search, context=EngineContext(engine))  # fmt: skip
    result = await tree.run()
    final = result.best.response
    passing_all = [
        n for n in result.tree[1:]
        if n.judgement is not None and n.judgement.constraint_share == 1.0
    ]  # fmt: skip
    lost = bool(passing_all) and all(n.judgement and n.judgement.guardrails for n in passing_all)
    cost = result.cost
    return Outcome(
        final=final, met=met(case, final), total=len(case.constraints),
        sane=sane(case, final) or final == case.response, original_met=met(case, case.response),
        tokens=cost.generated_tokens, lost_to_guardrails=lost and not result.changed,
        search_outcome=result.outcome, wall_s=result.wall_time_s,
        extra={
            "judge_tokens": cost.judge.completion_tokens,
            "refine_tokens": cost.refine.completion_tokens,
            "votes_skipped": cost.votes_skipped, "judgements": cost.judgements,
            "nodes": cost.nodes_expanded,
            **{f"unusable_{k}": v for k, v in cost.unusable.items()},
            **{f"guardrail_{k}": v for k, v in cost.guardrail_failures.items()},
        },
    )  # fmt: skip


async def baseline_side(
    engine: Engine, case: Case, prompts: Prompts, search: SearchConfig
) -> Outcome:
    """One rewrite request from the verifier's complaints; the best of 5 samples."""
    checks = ifeval.check(case.instruction, case.response, case.constraints)
    critique = program_critique(case.response, case.constraints, checks, ())
    request = GenerationRequest(
        messages=prompts.refine_messages(case.instruction, case.response, critique),
        n=5, temperature=search.refine_temperature, top_p=search.refine_top_p,
        max_tokens=search.refine_max_tokens, clamp_to_context=True, loop_stop=search.loop_stop,
    )  # fmt: skip
    result = await engine.generate(request)
    original = met(case, case.response)
    candidates = []
    for s in result.samples:
        r = prompts.parse_refinement(s.text, s.finish_reason)
        if r is None:
            continue
        candidates.append((r.response, met(case, r.response), sane(case, r.response)))
    total = len(case.constraints)
    passing = [c for c in candidates if c[1] == total]
    lost = bool(passing) and not any(c[2] for c in passing)
    if not candidates:
        final, m, ok = case.response, original, True
    else:  # best: passes all and sane, then most constraints met, then the smaller edit
        final, m, ok = max(
            candidates,
            key=lambda c: (c[1] == total and c[2], c[1], -normalized_edit_distance(
                case.response, c[0])),
        )  # fmt: skip
    return Outcome(
        final=final, met=m, total=total, sane=ok, original_met=original,
        tokens=result.usage.completion_tokens, lost_to_guardrails=lost,
    )  # fmt: skip


async def bounded(concurrency: int, jobs: Sequence[object]) -> list[Outcome]:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: object) -> Outcome:
        async with gate:
            return await job  # type: ignore[misc,no-any-return]

    return list(await asyncio.gather(*(one(j) for j in jobs)))


# -- report --------------------------------------------------------------------------


def summary(name: str, outs: Sequence[Outcome], cases: Sequence[Case]) -> dict[str, float]:
    wins = [o for o, _ in zip(outs, cases, strict=True) if o.success]
    edits = [normalized_edit_distance(c.response, o.final)
             for o, c in zip(outs, cases, strict=True) if o.success]  # fmt: skip
    tokens = sum(o.tokens for o in outs)
    row = {
        "success_rate": len(wins) / len(outs),
        "successes": len(wins),
        "regressions": sum(o.regression for o in outs),
        "lost_to_guardrails": sum(o.lost_to_guardrails for o in outs),
        "edit_distance": statistics.mean(edits) if edits else float("nan"),
        "tokens": tokens,
        "tokens_per_success": tokens / len(wins) if wins else float("inf"),
    }
    print(
        f"{name:10s} {row['success_rate']:8.3f} {len(wins):5d}/{len(outs):<3d} "
        f"{row['regressions']:6d} {row['lost_to_guardrails']:9d} {row['edit_distance']:8.3f} "
        f"{tokens:9d} {row['tokens_per_success']:10.0f}"
    )
    return row


class AdapterEngine:
    """The engine with one adapter on every request that names none (the spar side)."""

    def __init__(self, engine: Engine, adapter: AdapterRef) -> None:
        self._engine, self.adapter = engine, adapter

    def __getattr__(self, name: str) -> object:
        return getattr(self._engine, name)

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return self._engine.prompt_tokens(request)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self._engine.generate(
            replace(request, adapter=request.adapter or self.adapter)
        )


async def main_async(args: argparse.Namespace) -> str:
    from spar.runtime import start_engine

    model = prepare_default_model(Settings().cache_dir).path
    settings = Settings(
        cache_dir=Path(tempfile.mkdtemp(prefix="spar-bench-")),
        model=str(model),
        engine=Settings().engine.model_copy(
            update={"kind": args.engine, "kv_cache_gib": args.kv_cache_gib}
        ),
    )
    ifeval.load()
    engine = await asyncio.to_thread(start_engine, settings)
    cases_file: Path = args.cases_file
    try:
        spar_engine: Engine = engine
        if args.refiner_adapter:
            ref = AdapterRef("refiner-bench", 1, Path(args.refiner_adapter))
            await engine.add_adapter(ref)
            spar_engine = AdapterEngine(engine, ref)  # type: ignore[assignment]
            print(f"spar side with the adapter {args.refiner_adapter}")
        if args.rebuild or not cases_file.exists():
            start = time.monotonic()
            cases = await build_cases(engine, args.cases, args.seed)
            cases_file.parent.mkdir(parents=True, exist_ok=True)
            cases_file.write_text("".join(json.dumps(c.to_json()) + "\n" for c in cases))
            print(f"built {len(cases)} cases in {time.monotonic() - start:.0f} s -> {cases_file}")
        lines = cases_file.read_text().splitlines()
        cases = [Case.from_json(json.loads(line)) for line in lines][: args.cases]
        refiner = Settings().refiner  # the defaults, or SPAR_REFINER__* where set
        prompts = Prompts.from_settings("", "", refiner.refine_style)
        search, judge, budget = production_configs(refiner)
        print(f"cases={len(cases)} constraints/case="
              f"{statistics.mean(len(c.constraints) for c in cases):.2f} judge=hybrid "
              f"k={judge.samples}x{judge.max_tokens} votes={judge.votes} "
              f"refine_style={refiner.refine_style} refine_max_tokens={search.refine_max_tokens} "
              f"refine_T={search.refine_temperature} "
              f"loop_stop={search.loop_stop} "
              f"branch={search.branch} root_branch={search.root_branch} "
              f"keep_top={search.keep_top} depth={search.max_depth} "
              f"budget={budget.max_nodes} nodes/{budget.max_generated_tokens} tokens/"
              f"{budget.max_wall_time_s:g} s concurrency={args.concurrency} "
              f"engine={engine.info.extra.get('engine')}/{engine.info.extra.get('dtype')} "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        base: list[Outcome] = []
        for run in range(args.baseline_runs):
            start = time.monotonic()
            outs = await bounded(
                args.concurrency * 4, [baseline_side(engine, c, prompts, search) for c in cases]
            )
            took = time.monotonic() - start
            base += outs
            print(f"baseline run {run + 1}/{args.baseline_runs}: "
                  f"{sum(o.success for o in outs)}/{len(outs)} successes, {took:.0f} s, "
                  f"{sum(o.tokens for o in outs) / took:.0f} generated tokens/s",
                  flush=True)  # fmt: skip
        start = time.monotonic()
        spar = await bounded(
            args.concurrency,
            [spar_side(spar_engine, c, prompts, search, judge, budget) for c in cases],
        )
        took = time.monotonic() - start
        print(f"spar done in {took:.0f} s, {sum(o.tokens for o in spar) / took:.0f} generated "
              f"tokens/s (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        always: list[Outcome] = []
        subset = cases[: args.compare_votes]
        if subset:
            judge_always = replace(judge, votes="always")
            always = await bounded(
                args.concurrency,
                [spar_side(spar_engine, c, prompts, search, judge_always, budget) for c in subset],
            )
    finally:
        engine.shutdown()

    print()
    print(f"{'side':10s} {'success':>8s} {'wins':>9s} {'regr.':>6s} {'lost(gr)':>9s} "
          f"{'edit':>8s} {'gen tok':>9s} {'tok/succ':>10s}")  # fmt: skip
    s = summary("spar", spar, cases)
    b = summary("baseline", base, list(cases) * args.baseline_runs) if base else None
    outcomes = Counter(o.search_outcome for o in spar)
    extra: Counter[str] = Counter()
    for o in spar:
        extra.update(o.extra)
    print(f"search outcomes: {dict(sorted(outcomes.items()))}")
    print(f"search totals: {dict(sorted(extra.items()))}")
    print(f"search wall s: p50 {statistics.median(o.wall_s for o in spar):.1f}, "
          f"max {max(o.wall_s for o in spar):.1f}")  # fmt: skip
    if always:
        n = len(always)
        mine = sum(o.extra["judge_tokens"] for o in spar[:n])
        theirs = sum(o.extra["judge_tokens"] for o in always)
        wins, wins_always = sum(o.success for o in spar[:n]), sum(o.success for o in always)
        print(f"votes when needed vs always, first {n} cases: judge tokens {mine} vs {theirs} "
              f"(saved {theirs - mine}, {1 - mine / max(theirs, 1):.0%}); successes "
              f"{wins} vs {wins_always}")  # fmt: skip
    if b is None:  # --baseline-runs 0: the search side alone, no ratio to report
        return format_result(
            "refine",
            success_rate=f"{s['success_rate']:.3f}",
            regressions=int(s["regressions"]),
            edit_distance=f"{s['edit_distance']:.3f}",
            tokens_per_success=f"{s['tokens_per_success']:.0f}",
        )
    ratio = s["success_rate"] / b["success_rate"] if b["success_rate"] else float("inf")
    return format_result(
        "refine",
        success_rate=f"{s['success_rate']:.3f}",
        baseline_rate=f"{b['success_rate']:.3f}",
        ratio=f"{ratio:.2f}",
        regressions=int(s["regressions"]),
        edit_distance=f"{s['edit_distance']:.3f}",
        tokens_per_success=f"{s['tokens_per_success']:.0f}",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", type=int, default=64, help="failing cases (at least 60)")
    p.add_argument("--seed", type=int, default=7, help="prompt synthesis seed (--rebuild)")
    p.add_argument("--rebuild", action="store_true", help="draw the case set again")
    p.add_argument("--concurrency", type=int, default=4, help="searches at once")
    p.add_argument("--baseline-runs", type=int, default=3,
                   help="runs of the baseline over the cases (its rate is their mean: one "
                   "run moves by several cases from run to run); 0: the search side alone, "
                   "without baseline_rate and ratio")  # fmt: skip
    p.add_argument("--compare-votes", type=int, default=16,
                   help="cases also searched with judge_votes=always (tokens saved)")  # fmt: skip
    p.add_argument("--kv-cache-gib", type=float, default=2.0)
    p.add_argument(
        "--engine",
        choices=["vllm", "hf"],
        default="vllm",
        help="vllm (CPU here) or hf (transformers; the GPU machine)",
    )
    p.add_argument(
        "--refiner-adapter", default="", help="LoRA folder loaded into the engine for the spar side"
    )
    p.add_argument(
        "--cases-file",
        type=Path,
        default=CASES_FILE,
        help="the case set (built there when missing or with --rebuild)",
    )
    args = p.parse_args()
    if args.baseline_runs < 0:
        p.error(f"--baseline-runs {args.baseline_runs}: give 0 or more")
    print(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
