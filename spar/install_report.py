"""The one way the ``python -m spar.<module> install`` commands end: what was installed
where, or the reason it could not be, as a CLI message and exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from spar.errors import FailedPrecondition


def report_install(install: Callable[[], tuple[Path, bool]]) -> int:
    """Runs ``install`` (returns (path, written)); prints ``installed: PATH`` or
    ``present: PATH`` and returns 0, or prints the error to stderr and returns 1."""
    try:
        path, written = install()
    except FailedPrecondition as exc:
        print(f"spar: {exc.message}", file=sys.stderr)
        return 1
    print(f"{'installed' if written else 'present'}: {path}")
    return 0
