"""``spar model prepare``."""

from __future__ import annotations

import argparse
import sys
import time

from spar_cli.commands.flags import EXIT_ERROR, add_group, print_json, settings_from


def cmd_prepare(args: argparse.Namespace) -> int:
    from spar.model import ModelPrepareError, check_model_loads, prepare_default_model

    settings = settings_from(args)
    started = time.monotonic()
    try:
        if settings.model:
            path = settings.model_path()
            check_model_loads(path)
            created = False
        else:
            prepared = prepare_default_model(settings.cache_dir)
            path, created = prepared.path, prepared.created
    except ModelPrepareError as exc:
        print(f"spar: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print_json({"path": str(path), "created": created})
    else:
        took = f" ({time.monotonic() - started:.0f} s)" if created else ""
        print(f"spar: model {'prepared' if created else 'ready'}: {path}{took}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    model = add_group(sub, "model", "the served model")
    prep = model.add_parser("prepare", help="download and convert the default model (idempotent)")
    prep.add_argument("--model", help="check this Hugging Face folder instead")
    prep.add_argument("--json", action="store_true", help="print one JSON document")
    prep.set_defaults(func=cmd_prepare)
