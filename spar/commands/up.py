"""``spar up`` (the embedded default) and ``spar health``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from spar.commands.flags import EXIT_ERROR, add_client_flags, print_json, settings_from
from spar.config import DEFAULT_PORTS
from spar.errors import SparError

#: Services `spar up` starts, in order, each as `spar <role> serve` in its own process.
EMBEDDED_ROLES = ["actor", "refiner"]


def cmd_health(args: argparse.Namespace) -> int:
    from spar.client import ActorClient

    with ActorClient(args.target) as client:
        status = client.health(args.service)
    if args.json:
        print_json({"target": args.target, "status": status})
    else:
        print(status)
    return 0 if status == "SERVING" else EXIT_ERROR


def cmd_up(args: argparse.Namespace) -> int:
    from spar.client import ActorClient

    settings = settings_from(args)
    env = dict(os.environ)
    if settings.model:
        env["SPAR_MODEL"] = settings.model
    # The refiner answers through the local actor unless told otherwise.
    env.setdefault("SPAR_REFINER__ACTOR_TARGET", f"{settings.host}:{DEFAULT_PORTS['actor'][0]}")
    children: list[subprocess.Popen[bytes]] = []
    try:
        for role in EMBEDDED_ROLES:
            cmd = [sys.executable, "-m", "spar.cli", role, "serve"]
            print(f"spar up: starting the {role}", file=sys.stderr)
            children.append(subprocess.Popen(cmd, env=env, start_new_session=True))
        targets = {r: f"{settings.host}:{DEFAULT_PORTS[r][0]}" for r in EMBEDDED_ROLES}
        for target in targets.values():
            _wait_serving(target, children, timeout=args.start_timeout)
        with ActorClient(targets["actor"], timeout=120) as actor:
            reply = actor.generate(args.prompt, max_tokens=96, temperature=0.0)
        print(f"\nprompt: {args.prompt}\nactor:  {reply.completions[0].text.strip()}\n")
        if "refiner" in targets:
            _print_refined_answer(targets["refiner"], args.prompt)
        for role, target in targets.items():
            print(f"  {role:12s} {target}  metrics :{DEFAULT_PORTS[role][1]}", file=sys.stderr)
        print(
            "spar is up. Try: .venv/bin/spar generate 'Name three colours.' --n 3\n"
            "  or: .venv/bin/spar refine 'Describe rain without commas.' "
            "--constraint punctuation:no_comma --budget-nodes 3\n"
            "Ctrl-C stops every service.",
            file=sys.stderr,
        )
        if args.exit_after_check:
            return 0
        while all(c.poll() is None for c in children):
            time.sleep(1)
        print("spar up: a service exited; stopping the others", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(children)


def _print_refined_answer(target: str, prompt: str) -> None:
    """One refined answer (judge, then a small search when the answer fails)."""
    from spar.client import RefinerClient, search_budget, search_options
    from spar.v1 import common_pb2

    with RefinerClient(target, timeout=600) as refiner:
        answer = refiner.answer(
            prompt,
            max_tokens=96,
            options=search_options(branch=2, max_depth=1),
            budget=search_budget(max_nodes=2),
        )
    outcome = common_pb2.SearchOutcome.Name(answer.outcome).removeprefix("SEARCH_OUTCOME_")
    verdict = common_pb2.Verdict.Name(answer.verdict).removeprefix("VERDICT_")
    cost = answer.cost
    tokens = sum(p.completion_tokens for p in (cost.generate, cost.judge, cost.refine))
    print(
        f"refined: {answer.answer.strip()}\n"
        f"         ({outcome.lower()}, verdict {verdict.lower()}, value {answer.value:.2f}, "
        f"{cost.nodes_expanded} nodes, {tokens} generated tokens, "
        f"{cost.wall_time.ToTimedelta().total_seconds():.1f} s)\n"
    )


def _stop(children: Sequence[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _wait_serving(target: str, children: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    from spar.client import ActorClient

    deadline = time.monotonic() + timeout
    with ActorClient(target) as client:
        while time.monotonic() < deadline:
            if any(c.poll() is not None for c in children):
                raise SparError("a service exited during start-up; see its log above")
            try:
                if client.health(timeout=2) == "SERVING":
                    return
            except SparError:
                pass
            time.sleep(1)
    raise SparError(f"{target} did not report SERVING within {timeout:.0f} s")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    health = sub.add_parser("health", help="gRPC health of a service")
    health.add_argument("--service", default="", help="service name (default: the server)")
    add_client_flags(health, "actor")
    health.set_defaults(func=cmd_health)

    up = sub.add_parser("up", help="run every service on loopback (the embedded default)")
    up.add_argument("--prompt", default="Write one sentence about the sea, in under 20 words.")
    up.add_argument("--start-timeout", type=float, default=600.0, help="seconds")
    up.add_argument("--exit-after-check", action="store_true", help="stop after the first answer")
    up.add_argument("--model", help="Hugging Face model folder (default: the prepared SmolLM2)")
    up.add_argument("--host", help="address of every service (default 127.0.0.1)")
    up.set_defaults(func=cmd_up)
