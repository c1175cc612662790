"""``spar actor serve``, ``spar generate`` and ``spar host ...`` (adapter hosting)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from spar_cli.commands.flags import (
    add_client_flags,
    add_group,
    add_serve_command,
    connect,
    print_json,
    run_service,
    settings_from,
)


def cmd_serve(args: argparse.Namespace) -> int:
    from services.actor.server import serve

    return run_service(serve, settings_from(args))


def cmd_generate(args: argparse.Namespace) -> int:
    from spar.client import ActorClient

    kwargs: dict[str, Any] = {
        "n": args.n,
        "max_tokens": args.max_tokens,
        "adapter": args.adapter,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "stop": args.stop or (),
    }
    with connect(ActorClient, args) as client:
        if args.stream:
            for delta in client.generate_stream(args.prompt, **kwargs):
                if args.json:
                    print(json.dumps(MessageToDict(delta, preserving_proto_field_name=True)))
                elif args.n > 1:
                    print(f"[{delta.index}] {delta.delta}", flush=True)
                else:
                    print(delta.delta, end="", flush=True)
            if not args.json:
                print()
            return 0
        reply = client.generate(args.prompt, **kwargs)
    if args.json:
        print_json(reply)
        return 0
    for c in reply.completions:
        if len(reply.completions) > 1:
            print(f"--- sample {c.index} ({c.completion_tokens} tokens) ---")
        print(c.text)
    return 0


def cmd_host(args: argparse.Namespace) -> int:
    from spar.client import AdapterHostClient

    with connect(AdapterHostClient, args) as client:
        reply: Message
        if args.host_command == "list":
            reply = client.list_adapters()
        elif args.host_command == "stage":
            path = str(Path(args.path).resolve()) if args.path else ""
            reply = client.stage_adapter(
                args.name, path, store_target=args.store, digest=args.digest
            )
        elif args.host_command == "activate":
            reply = client.activate_adapter(args.name)
        else:
            reply = client.retire_adapter(args.name)
    if args.json:
        print_json(reply)
    else:
        print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_serve_command(sub, "actor", "run an actor replica", cmd_serve)

    gen = sub.add_parser("generate", help="generate with the actor")
    gen.add_argument("prompt")
    gen.add_argument("--n", type=int, default=1, help="samples (default 1)")
    gen.add_argument("--max-tokens", type=int, default=0, help="tokens per sample")
    gen.add_argument("--temperature", type=float, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--stop", action="append", help="stop string (repeatable)")
    gen.add_argument("--adapter", default="", help="adapter version ('base': none)")
    gen.add_argument("--stream", action="store_true", help="print text as it is generated")
    add_client_flags(gen, "actor")
    gen.set_defaults(func=cmd_generate)

    host_sub = add_group(sub, "host", "adapter versions hosted by an actor or refiner replica")
    for name, help_text in (
        ("list", "list loaded versions"),
        ("stage", "stage a version from a local folder or an artifact store"),
        ("activate", "make a staged version the default ('base': none)"),
        ("retire", "unload a version"),
    ):
        p = host_sub.add_parser(name, help=help_text)
        if name != "list":
            p.add_argument("name")
        if name == "stage":
            p.add_argument("path", nargs="?", default="", help="PEFT adapter folder")
            p.add_argument("--store", default="", help="artifact store HOST:PORT instead")
            p.add_argument("--digest", default="", help="expected sha256 content digest")
        add_client_flags(p, "actor")
        p.set_defaults(func=cmd_host)
