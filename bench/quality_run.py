"""The quality run: SPaR iterations of the default model, measured on held-out prompts.

    python -m bench.quality_run --out runs/quality [--iterations 3] [--num-prompts 1000]
        [--eval-prompts 500] [--device cuda]

What runs: ``spar up`` (all four services on loopback, the same code paths as every
deployment) with the settings of :data:`PROFILE` (overridable through the environment),
then for each iteration ``StartIteration`` + ``WatchIteration`` (what ``spar iterate``
does), then a refined evaluation: the refiner's ``Answer`` (default budget, the hybrid
judge) on every held-out prompt, scored with the same IFEval checks as the coordinator's
greedy evaluation. Greedy figures come from the iteration itself (its baseline and
candidate evaluations). The held-out prompts are the coordinator's own
(``services.coordinator.inputs.eval_prompts``); the run checks that no training prompt of
any iteration is among them.

Everything measured is written to ``OUT/quality.json`` after every step (a run cut short
keeps what it measured) and summarised in ``OUT/report.md``; the last line printed is
``RESULT quality_run ...``. With ``--iterations 0`` only the base model is evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from services.coordinator.evaluate import METRICS, Response, score
from services.coordinator.inputs import eval_prompts
from services.coordinator.prompts import PromptRecord, normalize
from spar.client import ActorClient, AsyncRefinerClient, CoordinatorClient, TrainerClient
from spar.commands.coordinator import summary
from spar.config import Settings
from spar.errors import SparError
from spar.v1 import coordinator_pb2 as pb

#: Settings of the run (the environment overrides each). The paper's search and judge
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
    # LoRA needs a larger step than the paper's full fine-tuning of an 8B model.
    "SPAR_COORDINATOR__LEARNING_RATE_DPO": "5e-5",
    "SPAR_COORDINATOR__LEARNING_RATE_SFT": "1e-4",
    "SPAR_REFINER__MAX_CONCURRENT_SEARCHES": "256",
    "SPAR_REFINER__MAX_QUEUE": "1024",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "quality.json"
        self.doc: dict[str, Any] = (
            json.loads(self.path.read_text()) if self.path.exists() else {"iterations": {}}
        )

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1))
        tmp.replace(self.path)


def start_services(
    env: dict[str, str], out: Path, targets: list[str], timeout: float
) -> subprocess.Popen[bytes]:
    """``spar up`` in the background; returns once every service reports SERVING."""
    logf = (out / "services.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "spar.cli", "up", "--start-timeout", str(int(timeout))],
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


def held_out(settings: Settings) -> list[PromptRecord]:
    return eval_prompts(settings.coordinator)


def check_disjoint(settings: Settings, records: list[PromptRecord], number: int) -> int:
    """Training prompts of an iteration that are also held-out prompts (must be 0)."""
    state = Path(settings.coordinator.state_dir or settings.cache_dir / "coordinator")
    path = state / "iterations" / f"{number:04d}" / "prompts.jsonl"
    held = {normalize(r.prompt) for r in records}
    train = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(1 for p in train if normalize(p["prompt"]) in held)


async def refined_eval(
    target: str, records: list[PromptRecord], max_tokens: int, concurrency: int
) -> dict[str, Any]:
    """``Answer`` on every record (default budget, hybrid judge), scored like greedy."""
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()
    errors: list[str] = []

    async def one(client: AsyncRefinerClient, r: PromptRecord) -> tuple[Response, Any]:
        async with gate:
            try:
                reply = await client.answer(
                    r.prompt,
                    constraints=[(c.instruction_id, dict(c.kwargs)) for c in r.constraints],
                    judge="hybrid",
                    max_tokens=max_tokens,
                )
            except Exception as exc:  # reported, scored as an empty answer
                errors.append(f"{r.key}: {exc}")
                return Response(text=""), None
            return Response(text=reply.answer, adapter=reply.actor_adapter), reply

    async with AsyncRefinerClient(target, timeout=900) as client:
        done = await asyncio.gather(*(one(client, r) for r in records))
    report = score(records, [resp for resp, _ in done])
    replies = [reply for _, reply in done if reply is not None]
    cost = {
        "answers": len(replies),
        "searched": sum(1 for r in replies if r.cost.nodes_expanded > 0),
        "nodes_per_answer": _mean([r.cost.nodes_expanded for r in replies]),
        "judge_tokens_per_answer": _mean(
            [r.cost.judge.completion_tokens + r.cost.judge.prompt_tokens for r in replies]
        ),
        "refine_tokens_per_answer": _mean(
            [r.cost.refine.completion_tokens + r.cost.refine.prompt_tokens for r in replies]
        ),
        "generated_tokens_per_answer": _mean(
            [
                r.cost.judge.completion_tokens
                + r.cost.refine.completion_tokens
                + r.cost.generate.completion_tokens
                for r in replies
            ]
        ),
        "wall_s_per_answer": _mean(
            [r.cost.wall_time.ToTimedelta().total_seconds() for r in replies]
        ),
    }
    return {
        "metrics": report.scores.as_dict(),
        "prompts": len(records),
        "errors": len(errors),
        "first_errors": errors[:5],
        "cost": cost,
        "wall_s": round(time.monotonic() - start, 1),
        "served_actor": sorted({r.actor_adapter for r in replies}),
        "served_refiner": sorted({r.refiner_adapter for r in replies}),
    }


def _mean(xs: list[float] | list[int]) -> float:
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


COUNTS = ("prompts", "samples", "negatives", "searches", "refined", "dpo_pairs", "sft_records")


def report(doc: dict[str, Any]) -> str:
    """The markdown tables of bench/RESULTS.md."""
    lines = ["| iteration | answers | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * 4]
    rows: list[tuple[str, str, dict[str, float]]] = []
    its = doc["iterations"]
    base = doc.get("base_refined")
    first = its.get("1", {}).get("iteration", {})
    if first.get("baseline_eval"):
        rows.append(("0 (base)", "greedy", first["baseline_eval"]))
    if base:
        rows.append(("0 (base)", "refined", base["metrics"]))
    for n in sorted(its, key=int):
        it = its[n].get("iteration", {})
        if it.get("candidate_eval"):
            rows.append((n, "greedy (candidate)", it["candidate_eval"]))
        if its[n].get("refined"):
            rows.append((n, "refined (served)", its[n]["refined"]["metrics"]))
    for name, kind, m in rows:
        lines.append(
            f"| {name} | {kind} | " + " | ".join(f"{m.get(k, 0):.3f}" for k in METRICS) + " |"
        )
    lines += ["", "| iteration | state | prompts | samples | negatives | searches | refined | "
              "DPO pairs | SFT records | stage seconds | decision |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n in sorted(its, key=int):
        it = its[n].get("iteration", {})
        c = it.get("counts", {})
        stages = ", ".join(
            f"{t['stage'].removeprefix('ITERATION_STAGE_').lower()} {_seconds(t):.0f}"
            for t in it.get("timings", [])
        )
        lines.append(
            f"| {n} | {it.get('state', '?').removeprefix('ITERATION_STATE_').lower()} | "
            + " | ".join(str(c.get(k, 0)) for k in COUNTS)
            + f" | {stages} | {it.get('decision', '')} |"
        )
    return "\n".join(lines) + "\n"


def _seconds(timing: dict[str, Any]) -> float:
    d = timing.get("duration", "0s")
    return float(str(d).rstrip("s") or 0)


def result_line(doc: dict[str, Any]) -> str:
    its = doc["iterations"]
    fields = {"iterations": len([n for n in its if its[n].get("iteration")])}
    first = its.get("1", {}).get("iteration", {}).get("baseline_eval", {})
    if first:
        fields["greedy_loose_base"] = round(first.get("prompt_level_loose", 0), 4)
    if its:
        last = its[max(its, key=int)]
        it = last.get("iteration", {})
        # The served actor after the last iteration: the candidate if promoted.
        served = (
            it.get("candidate_eval")
            if it.get("state") == "ITERATION_STATE_SUCCEEDED"
            else (it.get("baseline_eval"))
        )
        if served:
            fields["greedy_loose_last"] = round(served.get("prompt_level_loose", 0), 4)
        if last.get("refined"):
            fields["refined_loose_last"] = round(
                last["refined"]["metrics"]["prompt_level_loose"], 4
            )
    if doc.get("base_refined"):
        fields["refined_loose_base"] = round(
            doc["base_refined"]["metrics"]["prompt_level_loose"], 4
        )
    return "RESULT quality_run " + " ".join(f"{k}={v}" for k, v in fields.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--num-prompts", type=int, default=1000)
    ap.add_argument("--eval-prompts", type=int, default=500)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--refined-concurrency", type=int, default=256)
    ap.add_argument(
        "--base-refined",
        action="store_true",
        help="also evaluate the base model's refined answers (before iteration 1)",
    )
    ap.add_argument("--start-timeout", type=float, default=600)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    env = {**PROFILE, **os.environ}
    env.setdefault("SPAR_ENGINE__DEVICE", args.device)
    env.setdefault("SPAR_CACHE_DIR", str(args.out / "cache"))
    env["SPAR_COORDINATOR__NUM_PROMPTS"] = str(args.num_prompts)
    env["SPAR_COORDINATOR__EVAL_PROMPTS"] = str(args.eval_prompts)
    if args.device == "cpu":
        env["SPAR_TRAINER__DEVICE"] = "cpu"
    os.environ.update(env)
    settings = Settings()
    run = Run(args.out)
    run.doc["settings"] = {k: v for k, v in sorted(env.items()) if k.startswith("SPAR_")}
    run.save()

    records = held_out(settings)
    log(f"{len(records)} held-out prompts; starting the services")
    t0 = time.monotonic()
    refiner, coordinator, trainer, actor = (
        f"127.0.0.1:{settings.address(role)[1]}"
        for role in ("refiner", "coordinator", "trainer", "actor")
    )
    services = start_services(
        env, args.out, [trainer, coordinator, actor, refiner], args.start_timeout
    )
    run.doc["start_s"] = round(time.monotonic() - t0, 1)
    run.save()
    max_tokens = settings.coordinator.eval_max_tokens
    try:
        if args.base_refined and "base_refined" not in run.doc:
            log("refined evaluation of the base model")
            run.doc["base_refined"] = asyncio.run(
                refined_eval(refiner, records, max_tokens, args.refined_concurrency)
            )
            run.save()
        for number in range(1, args.iterations + 1):
            slot = run.doc["iterations"].setdefault(str(number), {})
            if not slot.get("iteration"):
                log(f"iteration {number}")
                with CoordinatorClient(coordinator) as client:
                    it = client.start_iteration("", args.num_prompts)
                    final = it
                    for event in client.watch_iteration(it.number):
                        final = event.iteration
                        log(f"  {pb.IterationStage.Name(final.stage)}: {event.message}")
                log(summary(final))
                slot["iteration"] = iteration_json(final)
                slot["overlap_with_held_out"] = check_disjoint(settings, records, final.number)
                run.save()
                if final.state == pb.ITERATION_STATE_FAILED:
                    log(f"iteration {number} failed: {final.error}")
                    break
            if not slot.get("refined"):
                log(f"refined evaluation after iteration {number}")
                slot["refined"] = asyncio.run(
                    refined_eval(refiner, records, max_tokens, args.refined_concurrency)
                )
                run.save()
        run.doc["manifests"] = manifests(trainer)
        run.save()
    finally:
        services.terminate()
        try:
            services.wait(timeout=60)
        except subprocess.TimeoutExpired:
            services.kill()
        text = report(run.doc)
        (args.out / "report.md").write_text(text)
        print(text)
        print(result_line(run.doc), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
