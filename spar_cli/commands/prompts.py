"""``spar prompts synth|check`` (prompt sources) and ``spar eval`` (IFEval of the actor)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

from spar_cli.commands.flags import add_client_flags, add_group, connect, print_json


def cmd_synth(args: argparse.Namespace) -> int:
    from spar.prompt_sets import load_prompts, to_jsonl, write_jsonl
    from spar.prompt_synthesis import synthesize

    exclude = [r.prompt for r in load_prompts(args.exclude)] if args.exclude else []
    records = synthesize(args.n, args.seed, exclude, max_constraints=args.max_constraints)
    if args.out is None:
        sys.stdout.write(to_jsonl(records))
    else:
        write_jsonl(args.out, records)
        print(f"wrote {len(records)} prompts to {args.out}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from spar.prompt_sets import load_prompts

    records = load_prompts(args.file)
    ids = Counter(i for r in records for i in r.instruction_id_list)
    summary = {
        "file": str(args.file),
        "prompts": len(records),
        "with_constraints": sum(1 for r in records if r.instruction_id_list),
        "instructions": sum(ids.values()),
        "by_instruction": dict(sorted(ids.items())),
    }
    if args.json:
        print_json(summary)
        return 0
    print(
        f"{args.file}: {summary['prompts']} prompts, {summary['with_constraints']} with "
        f"verifiable instructions ({summary['instructions']} instructions)"
    )
    for iid, count in sorted(ids.items()):
        print(f"  {iid:48s} {count}")
    return 0


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spar.client import AsyncActorClient
    from spar.evaluation import EvalReport, evaluate_actor
    from spar.prompt_sets import load_ifeval

    records = load_ifeval(args.data)[: args.limit]

    async def run() -> EvalReport:
        with tqdm(
            total=len(records), desc="eval", unit="prompt", disable=not sys.stderr.isatty()
        ) as bar:
            async with connect(AsyncActorClient, args) as client:
                return await evaluate_actor(
                    client,
                    records,
                    adapter=args.adapter,
                    max_tokens=args.max_tokens,
                    concurrency=args.concurrency,
                    on_response=lambda _: bar.update(),
                )

    report = asyncio.run(run())
    if args.json:
        print_json({"data": str(args.data), **report.to_json()})
        return 0
    served = ", ".join(a or "base" for a in report.served_adapters)
    print(
        f"IFEval on {args.data}: {report.scores.prompts} prompts, "
        f"{report.scores.instructions} instructions; adapter {args.adapter or '(active)'}, "
        f"served by {served}; {report.wall_s:.1f} s\n"
    )
    print(f"{'metric':28s} score")
    for name, value in report.scores.as_dict().items():
        print(f"{name:28s} {value:.4f}")
    print(f"\n{'instruction id':48s} {'n':>4s} {'strict':>7s} {'loose':>7s}")
    for s in report.by_instruction:
        print(f"{s.instruction_id:48s} {s.count:4d} {s.strict:7.3f} {s.loose:7.3f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from spar.evaluation import DEFAULT_CONCURRENCY, DEFAULT_MAX_TOKENS

    prompts_sub = add_group(sub, "prompts", "prompt sources: synthesis and checks")
    synth = prompts_sub.add_parser(
        "synth", help="synthesize verifiable prompts (IFEval-format jsonl)"
    )
    synth.add_argument("--n", type=int, required=True, help="number of prompts")
    synth.add_argument("--seed", type=int, required=True, help="same seed, same prompts")
    synth.add_argument(
        "--exclude", type=Path, help="evaluation prompts (.jsonl or .txt) never to emit"
    )
    synth.add_argument("--out", type=Path, help="write here (default: stdout)")
    synth.add_argument(
        "--max-constraints", type=int, default=3, help="constraints per prompt, 1..3 (default 3)"
    )
    synth.set_defaults(func=cmd_synth)

    check = prompts_sub.add_parser("check", help="load and validate a prompt file")
    check.add_argument("file", type=Path, help="IFEval-format or plain .jsonl, or .txt")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(func=cmd_check)

    ev = sub.add_parser("eval", help="IFEval scores of the actor on IFEval-format prompts")
    ev.add_argument("--data", type=Path, required=True, help="IFEval-format jsonl")
    ev.add_argument("--adapter", default="", help="adapter version ('base': none; default active)")
    ev.add_argument(
        "--max-tokens",
        type=_positive,
        default=DEFAULT_MAX_TOKENS,
        help="tokens per answer (default %(default)s)",
    )
    ev.add_argument(
        "--concurrency",
        type=_positive,
        default=DEFAULT_CONCURRENCY,
        help="requests in flight (default %(default)s)",
    )
    ev.add_argument("--limit", type=_positive, default=None, help="only the first K prompts")
    add_client_flags(ev, "actor")
    ev.set_defaults(func=cmd_eval)
