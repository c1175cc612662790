"""spar's tree search vs the reference procedure: same pairs, budget, engine and run.

The reference re-implements the paper's code path: BFS with the same branch, keep-top,
depth, gate, prompts, judge and budget, but *within one search* every refine call is
issued one at a time (n=1) and each new node is judged with one n=5 call before the
next refine call. Across searches it runs as many in parallel as spar does. spar sends
all expansions of a level at once (one n=branch request per parent) and judges each
child as soon as it exists, so the engine batches the whole level.

    .venv/bin/python -m bench.search [--pairs 8] [--latency-runs 2] [--concurrency 8]

Measures (a) single-search latency at concurrency 1 (the refined-answer API case),
(b) refined answers per minute at concurrency 8, and (c) engine utilisation during
spar's concurrency-8 run: generated tokens/s ÷ the engine's peak batched tokens/s
measured in the same run. Ends with
``RESULT search latency_ratio=<ref p50 ÷ spar p50> throughput_ratio=<spar ÷ ref>
utilisation=<x>``. Targets: latency_ratio ≥ 2.5, throughput_ratio ≥ 1.0,
utilisation ≥ 0.7.

By default the end gate is off (``--end-gate 1``: no value exceeds it), so both sides
search the same full, budget-bounded tree and do the same amount of work; a lucky early
pass on one side would otherwise decide the comparison. Ties are not re-sampled
(``tie_resample_rounds=0``) for the same reason.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import format_result
from services.refiner.cost import Budget, BudgetExhausted, Meter
from services.refiner.judge import Judge, JudgeConfig
from services.refiner.search import Node, SearchConfig, TreeSearch, refine_critique
from spar import ifeval
from spar.config import EngineSettings, Settings
from spar.engine.protocol import Engine, GenerationRequest, GenerationResult, Message
from spar.ifeval import Constraint
from spar.model import prepare_default_model
from spar.refine_templates import Prompts


@dataclass(frozen=True)
class Pair:
    """One failing (instruction, response) pair and the constraints it was checked against."""

    instruction: str
    response: str
    constraints: tuple[Constraint, ...]


PAIRS = [
    Pair("Describe a cat in under 15 words and without any commas.",
         "A cat, which is a small, furry animal, likes to sleep, eat, and play with yarn all "
         "day long in the sun.",
         (Constraint("punctuation:no_comma"),
          Constraint("length_constraints:number_words",
                     {"relation": "less than", "num_words": 15}))),
    Pair("Give the poem a title wrapped in double angular brackets, like <<title>>, then write "
         "two lines about rain.",
         "Rain falls on the roof.\nThe street shines below.",
         (Constraint("detectable_format:title"),)),
    Pair("Answer in lowercase letters only: what is the capital of France?",
         "The capital of France is Paris, a city on the Seine.",
         (Constraint("change_case:english_lowercase"),)),
    Pair("Explain what a cloud is. End your response with the exact phrase 'Is there anything "
         "else I can help with?'",
         "A cloud is a mass of tiny water droplets floating in the sky.",
         (Constraint("startend:end_checker",
                     {"end_phrase": "Is there anything else I can help with?"}),)),
    Pair("Give exactly 3 markdown bullet points (* item) about apples.",
         "Apples are red or green. They taste sweet. They grow on trees.",
         (Constraint("detectable_format:number_bullet_lists", {"num_bullets": 3}),)),
    Pair("Write two sentences about the moon that include the words silver and tide.",
         "The moon is bright tonight. It lights the dark sky.",
         (Constraint("keywords:existence", {"keywords": ["silver", "tide"]}),)),
    Pair("Wrap your entire answer in double quotation marks. Name a yellow fruit.",
         "A banana is a yellow fruit.",
         (Constraint("startend:quotation"),)),
    Pair("Answer in capital letters only: why is the sky blue?",
         "The sky is blue because air scatters blue light more than red light.",
         (Constraint("change_case:english_capital"),)),
]  # fmt: skip


@dataclass(frozen=True)
class Run:
    """What one search (or the reference procedure) spent and how it ended, on one pair."""

    wall_s: float
    generated_tokens: int
    nodes: int
    outcome: str


@dataclass(frozen=True)
class Setup:
    """The templates, judge, search shape and budget that both sides run with."""

    prompts: Prompts
    judge: JudgeConfig
    search: SearchConfig
    budget: Budget


def make_judge(pair: Pair, setup: Setup, meter: Meter) -> Judge:
    return Judge(
        "hybrid", pair.instruction, pair.constraints, prompts=setup.prompts, config=setup.judge,
        generate=meter.for_phase("judge"), check=ifeval.check,
    )  # fmt: skip


async def spar_search(engine: Engine, pair: Pair, setup: Setup) -> Run:
    meter = Meter(engine.generate, setup.budget)
    search = TreeSearch(
        pair.instruction, pair.response, judge=make_judge(pair, setup, meter), meter=meter,
        prompts=setup.prompts, config=setup.search,
    )  # fmt: skip
    result = await search.run()
    return Run(
        result.wall_time_s, result.cost.generated_tokens, result.cost.nodes_expanded,
        result.outcome,
    )  # fmt: skip


async def reference_search(engine: Engine, pair: Pair, setup: Setup) -> Run:
    """The paper's procedure: one refine call (n=1) at a time, each child judged at once."""
    start = time.monotonic()
    meter = Meter(engine.generate, setup.budget)
    judge = make_judge(pair, setup, meter)
    c = setup.search
    root = Node(0, -1, 0, pair.response)
    nodes = [root]
    outcome = "exhausted"
    try:
        root.judgement = await judge.judge(root.response)
        if root.judgement.verdict == "pass":
            outcome = "already_passing"
        frontier = [root] if outcome == "exhausted" else []
        for _ in range(c.max_depth):
            children: list[Node] = []
            for parent in frontier:
                assert parent.judgement is not None
                messages = setup.prompts.refine_messages(
                    pair.instruction, parent.response, refine_critique(parent.judgement)
                )
                for _ in range(c.branch):
                    child = await _reference_child(
                        meter, messages, c, setup.prompts, parent, len(nodes)
                    )
                    if child is None:
                        continue
                    nodes.append(child)
                    child.judgement = await judge.judge(child.response)
                    children.append(child)
            if not children:
                break
            children.sort(key=lambda n: n.value, reverse=True)
            assert children[0].judgement is not None
            if children[0].judgement.passes(c.end_gate):
                outcome = "refined"
                break
            frontier = children[: c.keep_top]
    except BudgetExhausted:
        pass
    return Run(
        time.monotonic() - start, meter.cost.generated_tokens, meter.cost.nodes_expanded, outcome
    )


async def _reference_child(
    meter: Meter,
    messages: list[Message],
    c: SearchConfig,
    prompts: Prompts,
    parent: Node,
    node_id: int,
) -> Node | None:
    if meter.reserve_nodes(1) == 0:
        raise BudgetExhausted("node budget spent")
    try:
        for _ in range(1 + c.parse_retries):
            result = await meter.generate(
                "refine",
                GenerationRequest(
                    messages=messages, n=1, temperature=c.refine_temperature,
                    top_p=c.refine_top_p, max_tokens=c.refine_max_tokens, stop=prompts.stop,
                ),
            )  # fmt: skip
            s = result.samples[0]
            refinement = prompts.parse_refinement(s.text, s.finish_reason)
            if refinement is not None:
                meter.use_node()
                return Node(node_id, parent.id, parent.depth + 1, refinement.response)
        meter.release_nodes(1)
        return None
    except BaseException:
        meter.release_nodes(1)
        raise


SearchFn = Callable[[Engine, Pair, Setup], Awaitable[Run]]


async def run_many(
    fn: SearchFn, engine: Engine, pairs: Sequence[Pair], setup: Setup, concurrency: int
) -> tuple[list[Run], float]:
    gate = asyncio.Semaphore(concurrency)

    async def one(pair: Pair) -> Run:
        async with gate:
            return await fn(engine, pair, setup)

    start = time.monotonic()
    runs = await asyncio.gather(*(one(p) for p in pairs))
    return list(runs), time.monotonic() - start


async def peak_tokens_per_s(engine: Engine, sequences: int, max_tokens: int) -> float:
    """Generated tokens/s with many long sequences in flight (the engine's batched peak)."""
    topics = ["the sea", "a forest", "a city at night", "an old library", "a long journey"]
    requests = [
        GenerationRequest(
            messages=[Message("user", f"Write a long, detailed story about {topics[i % 5]}.")],
            n=1,
            temperature=1.0,
            max_tokens=max_tokens,
        )
        for i in range(sequences)
    ]
    start = time.monotonic()
    results: list[GenerationResult] = await asyncio.gather(*(engine.generate(r) for r in requests))
    wall = time.monotonic() - start
    return sum(r.usage.completion_tokens for r in results) / wall


def load() -> str:
    """The machine's load average: other processes share the CPU engine's cores."""
    one, five, _ = os.getloadavg()
    return f"(load average {one:.1f} / {five:.1f})"


def p50(runs: Sequence[Run]) -> float:
    return statistics.median(r.wall_s for r in runs)


def row(name: str, runs: Sequence[Run], wall: float | None = None) -> str:
    tokens = statistics.mean(r.generated_tokens for r in runs)
    nodes = statistics.mean(r.nodes for r in runs)
    extra = f"{len(runs) / wall * 60:9.2f}" if wall else f"{'':9s}"
    # Seconds per 1,000 generated tokens: the trees of two runs differ (a refinement that
    # cannot be parsed is not a node), so latency alone compares unequal work.
    per_k = sum(r.wall_s for r in runs) / max(sum(r.generated_tokens for r in runs), 1) * 1000
    return (
        f"{name:28s} {p50(runs):8.1f} {max(r.wall_s for r in runs):8.1f} {extra} "
        f"{nodes:6.1f} {tokens:8.0f} {per_k:9.1f}"
    )


async def main_async(args: argparse.Namespace) -> str:
    from spar.engine.vllm_engine import VllmEngine

    model = prepare_default_model(Settings().cache_dir).path
    settings = Settings(
        cache_dir=Path(tempfile.mkdtemp(prefix="spar-bench-")),
        model=str(model),
        engine=EngineSettings(kv_cache_gib=args.kv_cache_gib, max_num_seqs=args.max_num_seqs),
    )
    ifeval.load()
    engine = await asyncio.to_thread(VllmEngine.start, settings)
    try:
        await engine.generate(GenerationRequest(messages=[Message("user", "Hi")], max_tokens=1))
        setup = Setup(
            prompts=Prompts(),
            # Every node voted on and the LLM deciding the gate (votes=always, llm_veto): with
            # --end-gate 1 nothing passes, so both sides build the same full tree.
            judge=JudgeConfig(
                samples=5,
                temperature=0.7,
                max_tokens=args.judge_tokens,
                tie_resample_rounds=0,
                votes="always",
                llm_veto=True,
            ),
            search=SearchConfig(
                branch=args.branch,
                keep_top=2,
                max_depth=args.depth,
                end_gate=args.end_gate,
                refine_max_tokens=args.refine_tokens,
                parse_retries=args.parse_retries,
            ),
            budget=Budget(args.max_nodes, args.max_tokens, math.inf),
        )
        pairs = (PAIRS * math.ceil(args.pairs / len(PAIRS)))[: args.pairs]
        lat = pairs[: args.latency_runs]
        print(f"pairs={len(pairs)} branch={args.branch} keep_top=2 depth={args.depth} "
              f"end_gate={args.end_gate} judge=hybrid k=5x{args.judge_tokens} tokens "
              f"refine={args.refine_tokens} tokens parse_retries={args.parse_retries} "
              f"budget={args.max_nodes} nodes/"
              f"{args.max_tokens} tokens", flush=True)  # fmt: skip
        spar1, _ = await run_many(spar_search, engine, lat, setup, 1)
        print(f"spar  concurrency 1: p50 {p50(spar1):.1f} s {load()}", flush=True)
        ref1, _ = await run_many(reference_search, engine, lat, setup, 1)
        print(f"ref   concurrency 1: p50 {p50(ref1):.1f} s {load()}", flush=True)
        # The peak is measured right before and right after spar's run (the larger one
        # counts), so load from other processes on a shared machine skews it less.
        peak_before = await peak_tokens_per_s(engine, args.peak_sequences, args.peak_tokens)
        print(f"engine peak: {peak_before:.1f} generated tokens/s {load()}", flush=True)
        spar8, spar8_wall = await run_many(spar_search, engine, pairs, setup, args.concurrency)
        print(f"spar  concurrency {args.concurrency}: {spar8_wall:.1f} s {load()}", flush=True)
        peak_after = await peak_tokens_per_s(engine, args.peak_sequences, args.peak_tokens)
        print(f"engine peak: {peak_after:.1f} generated tokens/s {load()}", flush=True)
        peak = max(peak_before, peak_after)
        ref8, ref8_wall = await run_many(reference_search, engine, pairs, setup, args.concurrency)
        print(f"ref   concurrency {args.concurrency}: {ref8_wall:.1f} s {load()}", flush=True)
    finally:
        engine.shutdown()

    spar_rate = len(spar8) / spar8_wall * 60
    ref_rate = len(ref8) / ref8_wall * 60
    spar_tps = sum(r.generated_tokens for r in spar8) / spar8_wall
    latency_ratio = p50(ref1) / p50(spar1)
    throughput_ratio = spar_rate / ref_rate
    utilisation = spar_tps / peak
    print()
    print(
        f"{'':28s} {'p50 s':>8s} {'max s':>8s} {'ans/min':>9s} {'nodes':>6s} {'gen tok':>8s} "
        f"{'s/1k tok':>9s}"
    )
    print(row("spar, concurrency 1", spar1))
    print(row("reference, concurrency 1", ref1))
    print(row(f"spar, concurrency {args.concurrency}", spar8, spar8_wall))
    print(row(f"reference, concurrency {args.concurrency}", ref8, ref8_wall))
    print(f"engine peak {peak:.1f} tok/s (before {peak_before:.1f}, after {peak_after:.1f}); "
          f"spar at concurrency {args.concurrency}: {spar_tps:.1f} tok/s; reference: "
          f"{sum(r.generated_tokens for r in ref8) / ref8_wall:.1f} tok/s")  # fmt: skip
    print(f"outcomes spar: {sorted(r.outcome for r in spar8)}")
    print(f"outcomes reference: {sorted(r.outcome for r in ref8)}")
    return format_result(
        "search",
        latency_ratio=f"{latency_ratio:.2f}",
        throughput_ratio=f"{throughput_ratio:.2f}",
        utilisation=f"{utilisation:.2f}",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pairs", type=int, default=8, help="searches at concurrency N")
    p.add_argument("--latency-runs", type=int, default=2, help="searches at concurrency 1")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--branch", type=int, default=3)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--end-gate", type=float, default=1.0)
    p.add_argument("--judge-tokens", type=int, default=256, help="tokens per judge sample")
    p.add_argument(
        "--refine-tokens", type=int, default=320, help="tokens per refinement (256 + 64)"
    )
    p.add_argument("--parse-retries", type=int, default=0, help="refine retries per node")
    p.add_argument("--max-nodes", type=int, default=9, help="node budget per search")
    p.add_argument("--max-tokens", type=int, default=100_000, help="token budget per search")
    p.add_argument("--peak-sequences", type=int, default=64)
    p.add_argument("--peak-tokens", type=int, default=64)
    p.add_argument("--kv-cache-gib", type=float, default=2.0)
    p.add_argument("--max-num-seqs", type=int, default=128)
    print(asyncio.run(main_async(p.parse_args())))


if __name__ == "__main__":
    main()
