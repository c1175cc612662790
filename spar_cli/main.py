"""The ``spar`` command line. Every command that prints results takes ``--json``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from spar.errors import SparError
from spar_cli.commands import (
    actor,
    coordinator,
    criteria,
    model,
    prompts,
    refiner,
    report,
    trainer,
    up,
)
from spar_cli.commands.flags import EXIT_ERROR

#: Each module adds its subcommands; add a module here to add commands.
COMMAND_MODULES = [model, actor, up, refiner, trainer, coordinator, prompts, report, criteria]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spar", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SparError as exc:
        print(f"spar: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
