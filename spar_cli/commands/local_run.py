"""The child processes of one ``spar up``, with their logs in a run folder.

Every service (and the vLLM engine processes it starts, which inherit its output) writes
into ``<cache>/runs/<time>/<role>.log``, so the console keeps spar's own lines and progress;
``--verbose`` sends the children's output to the console instead. A service that exits
is reported with the end of its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from spar.errors import SparError
from spar.security import ClientSecurity

#: Lines of a log shown when its service exits unexpectedly.
TAIL_LINES = 25
#: A service's grace period for in-flight requests (10 s) plus its engine's stop (up to 20 s).
STOP_TIMEOUT_S = 45.0


def new_run_folder(cache_dir: Path) -> Path:
    """``<cache>/runs/<YYYYmmdd-HHMMSS>`` (made unique), and ``runs/latest`` pointing to it."""
    runs = cache_dir / "runs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 100):
        folder = runs / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            break
        except FileExistsError:
            continue
    else:
        raise SparError(f"could not make a run folder under {runs}")
    latest = runs / "latest"
    with contextlib.suppress(OSError):
        tmp = runs / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(folder.name)
        tmp.replace(latest)
    return folder


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log (progress bars' carriage returns folded), indented."""
    try:
        text = path.read_bytes()[-64_000:].decode("utf-8", "replace")
    except OSError as exc:
        return f"  (cannot read {path}: {exc.strerror})"
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join("  " + line for line in kept[-lines:] if line.strip())


class StatusLine:
    """One line of progress, redrawn in place on a terminal; elsewhere only its last
    state is printed, once."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._shown = False

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._shown = True

    def done(self, text: str) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = False


class LocalRun:
    """The services one ``spar up`` started, each in its own session."""

    def __init__(self, folder: Path, verbose: bool = False) -> None:
        self.folder = folder
        self.verbose = verbose
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, role: str) -> Path:
        return self.folder / f"{role}.log"

    def start(self, role: str, cmd: Sequence[str], env: Mapping[str, str]) -> None:
        if self.verbose:
            out: IO[bytes] | None = None
        else:
            out = self.log(role).open("ab")
        try:
            self.children[role] = subprocess.Popen(
                list(cmd), env=dict(env), start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT if out else None,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()  # the child holds its own copy

    def exited(self) -> dict[str, int]:
        """Services that are no longer running, with their exit codes."""
        return {r: c.returncode for r, c in self.children.items() if c.poll() is not None}

    def describe_exit(self, role: str, code: int) -> str:
        """Which service exited, how, and the end of its log."""
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        if self.verbose:
            return f"the {role} exited ({how}); its output is above"
        return f"the {role} exited ({how}); the end of {self.log(role)}:\n{tail(self.log(role))}"

    def wait_serving(
        self,
        targets: Mapping[str, str],
        timeout: float,
        security: ClientSecurity,
        status: StatusLine,
    ) -> float:
        """Waits until every target reports SERVING; returns the seconds it took."""
        from spar.client import ActorClient

        t0 = time.monotonic()
        pending = dict(targets)
        clients = {r: ActorClient(t, **security) for r, t in targets.items()}
        try:
            while pending:
                if exited := self.exited():
                    role, code = next(iter(exited.items()))
                    raise SparError(
                        f"{self.describe_exit(role, code)}\nspar up: stopped during start-up"
                    )
                for role in list(pending):
                    with contextlib.suppress(SparError):
                        if clients[role].health(timeout=2) == "SERVING":
                            del pending[role]
                waited = time.monotonic() - t0
                if pending and waited > timeout:
                    raise SparError(
                        f"{', '.join(pending)} did not report SERVING within {timeout:.0f} s; "
                        f"see the logs in {self.folder}"
                    )
                if pending:
                    status.update(
                        f"spar up: waiting for {', '.join(pending)} (engines take about a "
                        f"minute on a CPU) … {waited:.0f} s"
                    )
                    time.sleep(1)
        finally:
            for client in clients.values():
                client.close()
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL to every service and its engine processes (a second Ctrl-C)."""
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()

    def stop(self) -> None:
        """SIGTERM to every service, which stops its own engine processes in order (as a
        pod's SIGTERM does); SIGKILL to whatever is left of it after STOP_TIMEOUT_S."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
