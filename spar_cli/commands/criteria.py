"""``spar criteria``: validate, list and try criteria packs, and print their JSON schema."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from spar_cli.commands.flags import EXIT_ERROR, add_group, print_json

if TYPE_CHECKING:
    from spar.criteria import CriteriaRegistry


def _registry(folder: str | None) -> CriteriaRegistry:
    from spar import criteria

    if folder:
        reg = criteria.CriteriaRegistry(folder)
        reg.load()
        return reg
    return criteria.registry()


def cmd_schema(args: argparse.Namespace) -> int:
    from spar.criterion_types import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validates pack files (or every pack of folders); prints one line per file."""
    from spar.criteria_packs import load_pack, pack_files
    from spar.errors import InvalidArgument

    failed = False
    names: dict[str, Path] = {}
    for arg in args.paths:
        path = Path(arg)
        files = pack_files(path) if path.is_dir() else [path]
        if path.is_dir() and not files:
            print(f"{path}: no pack files (.yaml, .yml, .json)")
            failed = True
        for f in files:
            try:
                pack = load_pack(f)
            except InvalidArgument as exc:
                print(f"FAIL {exc.message}")
                failed = True
                continue
            if pack.name in names:
                print(f"FAIL {f}: pack name {pack.name!r} is already used by {names[pack.name]}")
                failed = True
                continue
            names[pack.name] = f
            rubrics = sum(not c.checkable for c in pack.criteria)
            print(
                f"ok   {f}: pack {pack.name!r}, {len(pack.criteria)} criteria "
                f"({len(pack.criteria) - rubrics} checked by program, {rubrics} rubric)"
            )
    return EXIT_ERROR if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from spar import criteria
    from spar.criterion_types import IFEVAL_PACK

    reg = _registry(args.dir)
    packs = reg.packs()
    if args.json:
        print_json({name: p.model_dump(mode="json", by_alias=True) for name, p in packs.items()})
        return 0
    for pack in packs.values():
        print("\n".join(criteria.describe_pack(pack)))
    print(f"{IFEVAL_PACK} (built-in): IFEval's 25 instruction ids, kwargs per request")
    return 0


def cmd_try(args: argparse.Namespace) -> int:
    """Checks a response against criteria by program, locally (no services needed)."""

    reg = _registry(args.dir)
    constraints = reg.expand(args.criteria)
    checkable, rubric = reg.split(constraints)
    results = reg.check(args.instruction, args.response, checkable)
    if args.json:
        print_json(
            {
                "checks": [
                    {
                        "id": r.instruction_id,
                        "strict": r.strict,
                        "loose": r.loose,
                        "description": r.description,
                        "error": r.error,
                    }
                    for r in results
                ],
                "rubrics": reg.rubrics(rubric),
            }
        )
    else:
        for r in results:
            mark = "pass" if r.strict else "FAIL"
            print(f"{mark} {r.instruction_id:32s} {r.error or r.description}")
        for text in reg.rubrics(rubric):
            print(f"LLM  {'(rubric)':32s} {text}")
    return 0 if all(r.strict for r in results) else EXIT_ERROR


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = add_group(sub, "criteria", "criteria packs: validate, list, try, schema")

    schema = group.add_parser("schema", help="print the JSON schema of a pack file")
    schema.set_defaults(func=cmd_schema)

    check = group.add_parser("check", help="validate pack files or folders (exit 1 if bad)")
    check.add_argument("paths", nargs="+", help="pack files or folders of packs")
    check.set_defaults(func=cmd_check)

    dir_help = "folder of packs (default: SPAR_CRITERIA__DIR)"
    lst = group.add_parser("list", help="the packs and their criteria")
    lst.add_argument("--dir", help=dir_help)
    lst.add_argument("--json", action="store_true", help="print one JSON document")
    lst.set_defaults(func=cmd_list)

    tr = group.add_parser("try", help="check a response against criteria by program, locally")
    tr.add_argument("instruction")
    tr.add_argument("response")
    tr.add_argument(
        "--criteria",
        action="append",
        required=True,
        help="PACK or PACK/CRITERION (repeatable)",
    )
    tr.add_argument("--dir", help=dir_help)
    tr.add_argument("--json", action="store_true", help="print one JSON document")
    tr.set_defaults(func=cmd_try)
