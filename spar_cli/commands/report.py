"""``spar report [ITERATION]``: an iteration's HTML report, from the coordinator's state.

The coordinator writes one after every iteration (``<state_dir>/iterations/NNNN/
report.html``); this command writes it again, e.g. for an iteration that ran before
reports existed, or to another place with ``--out``. It reads the state directory, so it
runs where the coordinator's state is (the machine of ``spar up``, or the coordinator's pod).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spar.errors import NotFound
from spar_cli.commands.flags import print_json, settings_from


def report_path(iteration: int = 0, state_dir: Path | None = None, out: Path | None = None) -> Path:
    """Writes the report of ``iteration`` (0: the last one) and returns its path."""
    from services.coordinator import report
    from services.coordinator.state import StateStore, state_root

    store = StateStore(state_dir or state_root(settings_from(argparse.Namespace())))
    number = iteration or store.last_number()
    if not number:
        raise NotFound(f"no iteration has run yet (state directory {store.root})")
    return report.write(store, number, out)


def cmd_report(args: argparse.Namespace) -> int:
    path = report_path(args.iteration, args.state_dir, args.out)
    if args.json:
        print_json({"path": str(path)})
    else:
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="write an iteration's HTML report (figures inside)")
    p.add_argument("iteration", nargs="?", type=int, default=0, help="number (default: the last)")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="the coordinator's state directory (default: SPAR_COORDINATOR__STATE_DIR, "
        "else <cache>/coordinator)",
    )
    p.add_argument("--out", type=Path, help="file to write (default: report.html in its folder)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_report)
