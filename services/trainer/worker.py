"""The training worker process: ``python -m services.trainer.worker SPEC.json``.

The server starts one per job, so cancelling (or SIGKILL of the server) ends the training
cleanly and the server's event loop never runs torch. The worker writes one JSON event a
line to its stdout (``progress``, then ``done`` or ``error``); everything libraries print
goes to stderr, the job's log. It asks the kernel to kill it when its parent dies, so a
killed trainer leaves no orphan training on.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

PARENT_PID_ENV = "SPAR_TRAINER_PARENT_PID"


def _die_with_parent() -> None:
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    expected = os.environ.get(PARENT_PID_ENV)
    # The parent may have died before prctl took effect: then nobody is waiting for us.
    if expected and os.getppid() != int(expected):
        os._exit(1)


def _event_stream() -> TextIO:
    """Our own handle on stdout; fd 1 itself is pointed at stderr for libraries' prints."""
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m services.trainer.worker SPEC.json", file=sys.stderr)
        return 2
    _die_with_parent()
    events = _event_stream()

    def report(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from services.trainer.training import JobSpec, run_job

    try:
        spec = JobSpec.from_json(Path(argv[1]).read_text())
        metrics = run_job(spec, report)
    except Exception as exc:
        traceback.print_exc()
        report({"event": "error", "message": f"{type(exc).__name__}: {exc}"[:4000]})
        return 1
    report({"event": "done", "metrics": metrics})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
