"""Flags and output helpers shared by every subcommand."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from spar.config import DEFAULT_PORTS, Settings
from spar.log_setup import configure_logging
from spar.security import ClientSecurity, client_security

EXIT_ERROR = 1

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]
C = TypeVar("C")


def print_json(obj: Any) -> None:
    """Prints one JSON document (protobuf messages keep their field names)."""
    if isinstance(obj, Message):
        obj = MessageToDict(obj, preserving_proto_field_name=True)
    print(json.dumps(obj, indent=2, sort_keys=True))


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the serve flags that were given."""
    overrides: dict[str, Any] = {}
    for key in ("host", "port", "metrics_port", "model"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    settings = Settings(**overrides)
    if getattr(args, "plaintext", False):
        settings.tls.plaintext = True
    return settings


def security_from(args: argparse.Namespace) -> ClientSecurity:
    """TLS credentials and bearer token of a CLI client (SPAR_TLS__*, SPAR_AUTH__*)."""
    return client_security(settings_from(args))


def connect(client: Callable[..., C], args: argparse.Namespace) -> C:
    """A client (``ActorClient``, ...) of the service at --target, with --timeout and the TLS
    and token settings (the flags of :func:`add_client_flags`)."""
    return client(args.target, timeout=args.timeout, **security_from(args))


def default_target(role: str) -> str:
    return os.environ.get(f"SPAR_{role.upper()}_TARGET", f"127.0.0.1:{DEFAULT_PORTS[role][0]}")


def add_group(sub: SubParsers, name: str, help: str) -> SubParsers:
    """``spar <name> <subcommand>``: a command whose subcommand is required."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True)


def add_serve_command(
    sub: SubParsers, service: str, help: str, func: Handler
) -> argparse.ArgumentParser:
    """``spar <service> serve`` (the group ``spar <service>``, "the <service> service") with
    the address flags; a service adds its own flags to the parser it returns."""
    group = add_group(sub, service, f"the {service} service")
    serve = group.add_parser("serve", help=help)
    add_serve_flags(serve)
    serve.set_defaults(func=func)
    return serve


def run_service(serve: Callable[[Settings], Coroutine[Any, Any, None]], settings: Settings) -> int:
    """Runs a service's server (its ``serve``) until SIGTERM or SIGINT, with spar's logging."""
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
    return 0


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    """The address flags every ``spar <service> serve`` takes."""
    p.add_argument("--host", help="address to bind (default 127.0.0.1, SPAR_HOST)")
    p.add_argument("--port", type=int, help="gRPC port (default: the service's, SPAR_PORT)")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus port; 0 picks a free one, -1 turns it off (SPAR_METRICS_PORT)",
    )
    p.add_argument("--model", help="Hugging Face model folder (default: the prepared SmolLM2)")
    add_plaintext_flag(p, "serve")


def add_plaintext_flag(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "--plaintext",
        action="store_true",
        default=None,
        help=f"{verb} without TLS when no certificate is configured; local use only "
        "(SPAR_TLS__PLAINTEXT)",
    )


def add_client_flags(p: argparse.ArgumentParser, role: str) -> None:
    """--target, --json and --timeout of every command that calls a service."""
    p.add_argument(
        "--target",
        default=default_target(role),
        help=f"HOST:PORT of the {role} (default %(default)s, SPAR_{role.upper()}_TARGET)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    add_plaintext_flag(p, "connect")
