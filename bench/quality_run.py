"""The quality run: SPaR iterations of the default model, measured on held-out prompts.

    python -m bench.quality_run --out runs/quality [--iterations 3] [--num-prompts 1000]
        [--eval-prompts 500] [--warmup-prompts 256] [--device cuda] [--no-llm-refined]

What runs: ``spar up`` (all four services on loopback, the same code paths as every
deployment) with the settings of :data:`PROFILE` (the "quality" profile; the environment
overrides each), then for each iteration ``StartIteration`` + ``WatchIteration`` (what
``spar iterate`` does). Iteration 1 starts with the refiner's warm-up
(``SPAR_COORDINATOR__WARMUP``, on in this profile).

What is measured, on the coordinator's held-out prompts (``inputs.eval_prompts``: base
tasks and constraint combinations that no training prompt uses, checked here again with
``prompts.check_split``) — *IFEval metrics on synthesised prompts*, not the IFEval
benchmark — before iteration 1 ("iteration 0", the base model) and after each iteration
(the actor and refiner versions served then):

- ``greedy``: the actor's greedy answers (the served version);
- ``refined``: the refiner's ``Answer`` (default budget, hybrid judge, the prompt's
  constraints supplied, guardrails on);
- ``llm_refined``: ``Answer`` with the LLM judge only (no constraints supplied);
- for each: IFEval's four metrics, the **degenerate share** (answers that break a rule of
  :mod:`spar.guardrails`, the same rules for every side; and the share wrapped in
  quotation marks, the habit a naive repair-trained actor picked up) and tokens per answer;
- **run-to-run spread**: the base model's greedy answers twice in one session (share of
  answers that differ, change of each metric), and the coordinator's own evaluation of
  each candidate against this run's evaluation of the same served version;
- tokens spent per point gained.

Everything is written to ``OUT/quality.json`` after every step (a run cut short keeps
what it measured, and a run started again on the same OUT resumes: the coordinator from
its checkpoint, this driver from the steps it finished) and summarised in
``OUT/report.md``. The last line printed is ``RESULT quality_run iterations=N
greedy_gain=… refined_gain=… llm_refined_gain=…``: points of prompt-level loose accuracy
after the last iteration, greedy against the base model's greedy, each refined row against
greedy of the same iteration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from bench.local_servers import stop_server
from services.coordinator.inputs import SPLIT, eval_prompts
from spar.atomic_files import write_atomic
from spar.client import (
    ActorClient,
    AsyncActorClient,
    AsyncRefinerClient,
    CoordinatorClient,
    TrainerClient,
)
from spar.client.enums import SEARCH_OUTCOME
from spar.config import Settings
from spar.errors import SparError
from spar.evaluation import METRICS, Response, evaluate_actor, score
from spar.prompt_sets import PromptRecord, normalize
from spar.prompt_synthesis import check_split
from spar.quality_report import (
    MAIN,
    degenerate,
    report,
    result_line,
    spread,
)
from spar.v1 import coordinator_pb2 as pb
from spar_cli.commands.coordinator import summary

#: The quality profile (the environment overrides each). The paper's search and judge
#: settings are the defaults already (branch 3, keep 2, depth 3, 5 judge samples).
PROFILE = {
    "SPAR_TLS__PLAINTEXT": "true",
    "SPAR_ENGINE__KIND": "hf",
    "SPAR_ENGINE__DTYPE": "bfloat16",
    "SPAR_TRAINER__DEVICE": "cuda",
    "SPAR_TRAINER__GRADIENT_CHECKPOINTING": "false",
    "SPAR_COORDINATOR__SAMPLES_PER_PROMPT": "5",
    "SPAR_COORDINATOR__JUDGE_SAMPLES": "5",
    "SPAR_COORDINATOR__JUDGE": "hybrid",
    "SPAR_COORDINATOR__CONCURRENCY": "256",
    "SPAR_COORDINATOR__SEARCH_MAX_WALL_TIME_S": "300",
    "SPAR_COORDINATOR__WARMUP": "true",
    # LoRA needs a larger step than the paper's full fine-tuning of an 8B model.
    "SPAR_COORDINATOR__LEARNING_RATE_DPO": "5e-5",
    "SPAR_COORDINATOR__LEARNING_RATE_SFT": "1e-4",
    "SPAR_REFINER__MAX_CONCURRENT_SEARCHES": "256",
    "SPAR_REFINER__MAX_QUEUE": "1024",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Run:
    """The run's record (quality.json under ``out``): the steps done, so a restart resumes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "quality.json"
        self.doc: dict[str, Any] = (
            json.loads(self.path.read_text()) if self.path.exists() else {"iterations": {}}
        )

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.doc, indent=1).encode())


def start_services(
    env: dict[str, str], out: Path, targets: list[str], timeout: float
) -> subprocess.Popen[bytes]:
    """``spar up`` in the background; returns once every service reports SERVING."""
    logf = (out / "services.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "spar_cli", "up", "--start-timeout", str(int(timeout))],
        env=env, stdout=logf, stderr=logf, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    for target in targets:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"spar up exited ({proc.returncode}); see {out / 'services.log'}")
            if time.monotonic() > deadline:
                proc.terminate()
                raise SystemExit(f"{target} not SERVING after {timeout:.0f} s")
            try:
                with ActorClient(target) as client:
                    if client.health(timeout=5) == "SERVING":
                        break
            except SparError:
                pass
            time.sleep(2)
    log("services up: " + ", ".join(targets))
    return proc


def iteration_prompts(settings: Settings, number: int) -> list[PromptRecord]:
    state = Path(settings.coordinator.state_dir or settings.cache_dir / "coordinator")
    path = state / "iterations" / f"{number:04d}" / "prompts.jsonl"
    return [
        PromptRecord(d["key"], d["prompt"], tuple(d["instruction_id_list"]), tuple(d["kwargs"]))
        for d in map(json.loads, path.read_text().splitlines())
    ]


def check_held_out(settings: Settings, records: list[PromptRecord], number: int) -> int:
    """Training prompts of an iteration that are held-out prompts (must be 0); raises
    when the held-out set shares a base task or a constraint combination with them."""
    train = iteration_prompts(settings, number)
    if not settings.coordinator.eval_path and not settings.coordinator.prompts_path:
        check_split(train, records, SPLIT)
    held = {normalize(r.prompt) for r in records}
    return sum(1 for p in train if normalize(p.prompt) in held)


# -- measurements ----------------------------------------------------------------------


async def greedy_eval(
    target: str, records: list[PromptRecord], max_tokens: int, concurrency: int, adapter: str = ""
) -> dict[str, Any]:
    """The actor's greedy answers (the served version, or ``adapter``: ``base`` for the
    base model), scored as the coordinator's evaluation scores them."""
    start = time.monotonic()
    async with AsyncActorClient(target, timeout=900) as actor:
        report = await evaluate_actor(
            actor, records, adapter=adapter, max_tokens=max_tokens, concurrency=concurrency
        )
    answers = [r.response.text for r in report.results]
    return {
        "metrics": report.scores.as_dict(),
        "prompts": len(records),
        "degenerate": degenerate(records, answers),
        "tokens_per_answer": _mean([r.response.completion_tokens for r in report.results]),
        "cut_share": round(
            sum(r.response.finish_reason == "LENGTH" for r in report.results) / len(records), 4
        ),
        "served_actor": list(report.served_adapters),
        "wall_s": round(time.monotonic() - start, 1),
        "answers": answers,
    }


async def refined_eval(
    target: str, records: list[PromptRecord], max_tokens: int, concurrency: int, judge: str
) -> dict[str, Any]:
    """``Answer`` on every record (default budget). ``hybrid``: the prompt's constraints
    supplied; ``llm``: none supplied, the LLM judge only."""
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()
    errors: list[str] = []

    async def one(client: AsyncRefinerClient, r: PromptRecord) -> tuple[Response, Any]:
        constraints = (
            [(c.instruction_id, dict(c.kwargs)) for c in r.constraints] if judge == "hybrid" else []
        )
        async with gate:
            try:
                reply = await client.answer(
                    r.prompt, constraints=constraints, judge=judge, max_tokens=max_tokens
                )
            except Exception as exc:  # reported, scored as an empty answer
                errors.append(f"{r.key}: {exc}")
                return Response(text=""), None
            return Response(text=reply.answer, adapter=reply.actor_adapter), reply

    async with AsyncRefinerClient(target, timeout=1800) as client:
        done = await asyncio.gather(*(one(client, r) for r in records))
    answers = [resp.text for resp, _ in done]
    report = await asyncio.to_thread(score, records, [resp for resp, _ in done])
    replies = [reply for _, reply in done if reply is not None]

    def generated(r: Any) -> int:
        c = r.cost
        return int(
            c.judge.completion_tokens + c.refine.completion_tokens + c.generate.completion_tokens
        )

    outcomes = Counter(SEARCH_OUTCOME.label(r.outcome) for r in replies)
    return {
        "judge": judge,
        "metrics": report.scores.as_dict(),
        "prompts": len(records),
        "errors": len(errors),
        "first_errors": errors[:5],
        "degenerate": degenerate(records, answers),
        "changed": sum(1 for r in replies if r.answer != r.original),
        "outcomes": dict(outcomes),
        "generated_tokens_per_answer": _mean([generated(r) for r in replies]),
        "nodes_per_answer": _mean([r.cost.nodes_expanded for r in replies]),
        "wall_s": round(time.monotonic() - start, 1),
        "served_actor": sorted({r.actor_adapter for r in replies}),
        "served_refiner": sorted({r.refiner_adapter for r in replies}),
    }


def _mean(xs: Sequence[float]) -> float:
    return round(sum(xs) / len(xs), 2) if xs else 0.0


def iteration_json(it: pb.Iteration) -> dict[str, Any]:
    doc: dict[str, Any] = json_format.MessageToDict(it, preserving_proto_field_name=True)
    return doc


def manifests(target: str) -> list[dict[str, Any]]:
    with TrainerClient(target, timeout=60) as trainer:
        reply = trainer.list_adapters("")
    return [
        {
            "name": m.version.name,
            "role": m.version.role,
            "digest": m.version.digest,
            "parent": m.parent,
            "dataset_digest": m.dataset_digest,
            "metrics": dict(m.metrics),
        }
        for m in reply.adapters
    ]


# -- the run -----------------------------------------------------------------------------


def measure(
    run: Run, slot: dict[str, Any], args: argparse.Namespace, records: list[PromptRecord],
    actor: str, refiner: str, max_tokens: int, *, repeat: bool, adapter: str = "",
) -> None:  # fmt: skip
    """Greedy (twice when ``repeat``), refined and LLM-refined evaluations of what is
    served now (greedy pinned to ``adapter`` when given); each step is saved as it ends
    and skipped when a resumed run has it."""

    def greedy() -> Any:
        return greedy_eval(actor, records, max_tokens, args.concurrency, adapter)

    steps: list[tuple[str, Any]] = [("greedy", greedy)]
    if repeat:
        steps.append(("greedy_repeat", greedy))
    if args.refined:
        steps.append(("refined", lambda: refined_eval(
            refiner, records, max_tokens, args.refined_concurrency, "hybrid")))  # fmt: skip
    if args.llm_refined:
        steps.append(("llm_refined", lambda: refined_eval(
            refiner, records, max_tokens, args.refined_concurrency, "llm")))  # fmt: skip
    for key, step in steps:
        if slot.get(key):
            continue
        log(f"  {key} evaluation")
        slot[key] = asyncio.run(step())
        m = slot[key]["metrics"]
        log(f"  {key}: {MAIN} {m[MAIN]:.3f}, degenerate {slot[key]['degenerate']['share']:.3f}")
        run.save()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--num-prompts", type=int, default=1000)
    ap.add_argument("--eval-prompts", type=int, default=500)
    ap.add_argument("--warmup-prompts", type=int, default=256)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--concurrency", type=int, default=256, help="greedy requests in flight")
    ap.add_argument("--refined-concurrency", type=int, default=256)
    ap.add_argument("--no-refined", dest="refined", action="store_false",
                    help="skip the refined (hybrid) evaluations")  # fmt: skip
    ap.add_argument("--no-llm-refined", dest="llm_refined", action="store_false",
                    help="skip the refined evaluations with the LLM judge only")  # fmt: skip
    ap.add_argument("--no-spread", dest="spread", action="store_false",
                    help="evaluate the base model's greedy answers once, not twice")  # fmt: skip
    ap.add_argument("--base-greedy-only", action="store_true",
                    help="measure the base model by greedy answers only (refined rows are "
                         "compared with greedy of the same iteration)")  # fmt: skip
    ap.add_argument("--start-timeout", type=float, default=600)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    env = {**PROFILE, **os.environ}
    env.setdefault("SPAR_ENGINE__DEVICE", args.device)
    env.setdefault("SPAR_CACHE_DIR", str(args.out / "cache"))
    env["SPAR_COORDINATOR__NUM_PROMPTS"] = str(args.num_prompts)
    env["SPAR_COORDINATOR__EVAL_PROMPTS"] = str(args.eval_prompts)
    env.setdefault("SPAR_COORDINATOR__WARMUP_PROMPTS", str(args.warmup_prompts))
    if args.device == "cpu":
        env["SPAR_TRAINER__DEVICE"] = "cpu"
    os.environ.update(env)
    settings = Settings()
    run = Run(args.out)
    run.doc["settings"] = {k: v for k, v in sorted(env.items()) if k.startswith("SPAR_")}
    run.doc.setdefault("sessions", []).append({"started": time.strftime("%Y-%m-%d %H:%M:%S")})
    run.save()

    records = eval_prompts(settings.coordinator)
    log(f"{len(records)} held-out prompts; starting the services")
    t0 = time.monotonic()
    refiner, coordinator, trainer, actor = (
        f"127.0.0.1:{settings.address(role)[1]}"
        for role in ("refiner", "coordinator", "trainer", "actor")
    )
    services = start_services(
        env, args.out, [trainer, coordinator, actor, refiner], args.start_timeout
    )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the run ends here: services stop, the report is written

    signal.signal(signal.SIGTERM, stop)
    run.doc["sessions"][-1]["start_s"] = round(time.monotonic() - t0, 1)
    run.save()
    max_tokens = settings.coordinator.eval_max_tokens
    try:
        base = run.doc["iterations"].setdefault("0", {})
        log("iteration 0 (the base model)")
        base_args = argparse.Namespace(**{**vars(args), "refined": False, "llm_refined": False})
        measure(
            run, base, base_args if args.base_greedy_only else args, records, actor, refiner,
            max_tokens, repeat=args.spread, adapter="base",
        )  # fmt: skip
        if base.get("greedy_repeat"):
            run.doc["spread"] = spread(base["greedy"], base["greedy_repeat"])
        for number in range(1, args.iterations + 1):
            slot = run.doc["iterations"].setdefault(str(number), {})
            if not slot.get("iteration"):
                log(f"iteration {number}")
                t_it = time.monotonic()
                with CoordinatorClient(coordinator) as client:
                    it = client.start_iteration("", args.num_prompts)
                    final = it
                    for event in client.watch_iteration(it.number):
                        final = event.iteration
                        log(f"  {pb.IterationStage.Name(final.stage)}: {event.message}")
                log(summary(final))
                slot["iteration"] = iteration_json(final)
                slot["wall_s"] = round(time.monotonic() - t_it, 1)
                slot["overlap_with_held_out"] = check_held_out(settings, records, final.number)
                run.doc["sessions"][-1].setdefault("iterations", []).append(number)
                run.save()
                if final.state == pb.ITERATION_STATE_FAILED:
                    log(f"iteration {number} failed: {final.error}")
                    break
            log(f"evaluations after iteration {number}")
            measure(run, slot, args, records, actor, refiner, max_tokens, repeat=False)
            cand = slot["iteration"].get("candidate_eval")
            served = slot["greedy"]["served_actor"]
            name = slot["iteration"].get("actor_candidate", {}).get("name")
            if cand and name and served == [name]:
                slot["coordinator_vs_run"] = {
                    k: round(slot["greedy"]["metrics"][k] - cand.get(k, 0.0), 4) for k in METRICS
                }
            run.save()
        run.doc["manifests"] = manifests(trainer)
        run.save()
    except KeyboardInterrupt:
        log("stopped (SIGTERM or Ctrl-C); what was measured is kept")
    finally:
        stop_server(services)
        text = report(run.doc)
        (args.out / "report.md").write_text(text)
        print(text)
        print(result_line(run.doc), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
