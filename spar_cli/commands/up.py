"""``spar up`` (the embedded default: all four services on loopback) and ``spar health``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spar.config import DEFAULT_PORTS, TlsSettings
from spar.security import ClientSecurity, client_security
from spar_cli.commands.flags import (
    EXIT_ERROR,
    add_client_flags,
    print_json,
    security_from,
    settings_from,
)
from spar_cli.commands.local_run import LocalRun, StatusLine, new_run_folder

if TYPE_CHECKING:
    from spar.v1 import coordinator_pb2

#: Start order: the coordinator before the engine replicas, which ask it for their
#: desired adapter version before they report SERVING.
ROLES = ["trainer", "coordinator", "actor", "refiner"]

#: A small iteration for the demo (each can be overridden through the environment).
DEMO_ITERATION = {
    "SPAR_COORDINATOR__NUM_PROMPTS": "4",
    "SPAR_COORDINATOR__SAMPLES_PER_PROMPT": "3",
    "SPAR_COORDINATOR__SAMPLE_MAX_TOKENS": "96",
    "SPAR_COORDINATOR__EVAL_PROMPTS": "8",
    "SPAR_COORDINATOR__EVAL_MAX_TOKENS": "128",
    "SPAR_COORDINATOR__SEARCH_MAX_NODES": "6",
    # Shorter judge and refine turns keep the demo's searches within minutes on a CPU.
    "SPAR_REFINER__JUDGE_MAX_TOKENS": "128",
    "SPAR_REFINER__REFINE_MAX_TOKENS": "192",
}


@dataclass(frozen=True)
class Endpoint:
    """Where one service of ``spar up`` listens."""

    role: str
    """actor, refiner, trainer or coordinator."""
    grpc: str
    """HOST:PORT of its gRPC server."""
    metrics: str
    """HOST:PORT of its metrics endpoint."""


def endpoints(host: str, base_port: int | None) -> dict[str, Endpoint]:
    """gRPC and metrics addresses of every service (base_port: P, P+1, ...; metrics P+10...)."""
    out = {}
    for i, role in enumerate(["actor", "refiner", "trainer", "coordinator"]):
        grpc_port, metrics_port = DEFAULT_PORTS[role]
        if base_port is not None:
            grpc_port, metrics_port = base_port + i, base_port + 10 + i
        out[role] = Endpoint(role, f"{host}:{grpc_port}", f"{host}:{metrics_port}")
    return out


def child_env(base: dict[str, str], eps: dict[str, Endpoint], role: str) -> dict[str, str]:
    env = dict(base)
    env["SPAR_PORT"] = eps[role].grpc.rsplit(":", 1)[1]
    env["SPAR_METRICS_PORT"] = eps[role].metrics.rsplit(":", 1)[1]
    wiring = {
        "SPAR_REFINER__ACTOR_TARGET": eps["actor"].grpc,
        "SPAR_COORDINATOR__ACTOR_TARGET": eps["actor"].grpc,
        "SPAR_COORDINATOR__REFINER_TARGET": eps["refiner"].grpc,
        "SPAR_COORDINATOR__TRAINER_TARGET": eps["trainer"].grpc,
        "SPAR_COORDINATOR__ACTOR__TARGETS": json.dumps([eps["actor"].grpc]),
        "SPAR_COORDINATOR__REFINER__TARGETS": json.dumps([eps["refiner"].grpc]),
        "SPAR_COORDINATOR_TARGET": eps["coordinator"].grpc,
    }
    for key, value in wiring.items():
        env.setdefault(key, value)
    return env


def cmd_health(args: argparse.Namespace) -> int:
    from spar.client import ActorClient

    with ActorClient(args.target, **security_from(args)) as client:
        status = client.health(args.service)
    report: dict[str, str] = {"target": args.target, "status": status}
    serving = status == "SERVING"
    if args.http_port is not None:
        host = args.target.rsplit(":", 1)[0].removeprefix("dns:///")
        report["http"] = http_health(host, args.http_port, settings_from(args).tls)
        serving = serving and report["http"] == "serving"
    if args.json:
        print_json(report)
    else:
        print(status if args.http_port is None else f"{status} (http: {report['http']})")
    return 0 if serving else EXIT_ERROR


def http_health(host: str, port: int, tls: TlsSettings) -> str:
    """``GET /health`` of the refiner's OpenAI-compatible endpoint: ``serving``,
    ``not_serving`` or why it could not be asked. It uses the TLS settings the way gRPC
    clients do: plaintext only when allowed and no file is set, else TLS verified with the
    CA (presenting the certificate for mutual TLS) against SPAR_TLS__SERVER_NAME."""
    import http.client
    import ssl

    conn: http.client.HTTPConnection
    if not (tls.cert_file or tls.key_file or tls.ca_file) and tls.plaintext:
        conn = http.client.HTTPConnection(host, port, timeout=5)
    else:
        context = ssl.create_default_context(
            cafile=os.path.expanduser(tls.ca_file) if tls.ca_file else None
        )
        if tls.cert_file:
            context.load_cert_chain(
                os.path.expanduser(tls.cert_file), os.path.expanduser(tls.key_file)
            )
        server_name = tls.server_name or host

        class Https(http.client.HTTPSConnection):
            def connect(self) -> None:
                http.client.HTTPConnection.connect(self)
                self.sock = context.wrap_socket(self.sock, server_hostname=server_name)

        conn = Https(host, port, timeout=5, context=context)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"unreachable: {exc}"
    finally:
        conn.close()
    try:
        return str(json.loads(body)["status"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status}"


def _announce(eps: dict[str, Endpoint], as_json: bool) -> None:
    if as_json:
        doc = {r: {"grpc": e.grpc, "metrics": e.metrics} for r, e in eps.items()}
        print(json.dumps(doc), flush=True)
        return
    for e in eps.values():
        print(f"  {e.role:12s} grpc {e.grpc:18s} metrics {e.metrics}", file=sys.stderr)


def _sigterm_as_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    # The embedded default: every service on loopback, plaintext unless TLS files are
    # configured (the children inherit the environment).
    os.environ.setdefault("SPAR_TLS__PLAINTEXT", "true")
    settings = settings_from(args)
    security = client_security(settings)
    eps = endpoints(settings.host, args.base_port)
    base = dict(os.environ)
    if settings.model:
        base["SPAR_MODEL"] = settings.model
    if args.demo:
        base = {**DEMO_ITERATION, **base}
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    run = LocalRun(new_run_folder(settings.cache_dir), verbose=args.verbose)
    status = StatusLine()
    try:
        where = "this console" if args.verbose else f"{run.folder}/<service>.log"
        print(f"spar up: starting {', '.join(ROLES)}; their logs: {where}", file=sys.stderr)
        for role in ROLES:
            run.start(role, [sys.executable, "-m", "spar_cli", role, "serve"],
                      child_env(base, eps, role))  # fmt: skip
        took = run.wait_serving(
            {r: eps[r].grpc for r in ROLES}, args.start_timeout, security, status
        )
        status.done(f"spar up: every service is SERVING ({took:.0f} s)")
        _announce(eps, args.json)
        if args.demo:
            demo(eps, args.prompt, security)
        if args.exit:
            return 0
        print(f"spar is up; Ctrl-C stops every service. Logs: {run.folder}", file=sys.stderr)
        while not (exited := run.exited()):
            time.sleep(1)
        role, code = next(iter(exited.items()))
        print(f"spar up: {run.describe_exit(role, code)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 0
    finally:
        status.done("spar up: stopping every service (Ctrl-C again: at once) …")
        try:
            run.stop()
        except KeyboardInterrupt:
            run.kill()
        print("spar up: stopped", file=sys.stderr)


def demo(eps: dict[str, Endpoint], prompt: str, security: ClientSecurity) -> None:
    """A refined answer with what changed, then one small self-play iteration with a
    progress bar, its before/after table and the path of its report."""
    from spar.client import CoordinatorClient
    from spar_cli.commands import demo as show

    with CoordinatorClient(eps["coordinator"].grpc, **security) as coordinator:
        print(starting_point(coordinator.get_state()), flush=True)
    show.refined_answer(eps["refiner"].grpc, prompt, security)
    show.iteration(eps["coordinator"].grpc, security)


def starting_point(state: coordinator_pb2.CoordinatorState) -> str:
    """What the demo starts from: adapters an earlier run promoted, or the base model."""
    promoted = [v.name for v in (state.actor, state.refiner) if v.name]
    if not promoted:
        return "starting from the base model (no adapters promoted yet)"
    return f"starting from the promoted adapters of an earlier run: {', '.join(promoted)}"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    health = sub.add_parser("health", help="gRPC health of a service")
    health.add_argument("--service", default="", help="service name (default: the server)")
    health.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help="also ask the refiner's OpenAI-compatible endpoint on this port of the target's "
        "host (GET /health, with the same TLS settings)",
    )
    add_client_flags(health, "actor")
    health.set_defaults(func=cmd_health)

    up = sub.add_parser("up", help="run every service on loopback (the embedded default)")
    up.add_argument(
        "--base-port", type=int, help="gRPC ports P..P+3, metrics P+10..P+13 (default: 5005x/940x)"
    )
    up.add_argument("--json", action="store_true", help="print the endpoints as one JSON line")
    up.add_argument("--demo", action="store_true", help="a refined answer, then one iteration")
    up.add_argument("--prompt", default="Describe the sea in two short sentences.")
    up.add_argument("--exit", action="store_true", help="stop once start-up (and demo) is done")
    up.add_argument(
        "--verbose",
        action="store_true",
        help="show every service's and engine's output here instead of in the run folder",
    )
    up.add_argument("--start-timeout", type=float, default=900.0, help="seconds")
    up.add_argument("--model", help="Hugging Face model folder (default: the prepared SmolLM2)")
    up.add_argument("--host", help="address of every service (default 127.0.0.1)")
    up.set_defaults(func=cmd_up)
