"""The tcmalloc installer on packages built here: ar parsing, extraction, hash and atomicity."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from spar import tcmalloc
from spar.errors import FailedPrecondition


def _ar(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, body in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}".encode() + b"`\n"
        out += header + body + (b"\n" if len(body) % 2 else b"")
    return bytes(out)


def _deb(library: bytes, member: str = tcmalloc.MEMBER) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        info = tarfile.TarInfo("./" + member)
        info.size = len(library)
        tar.addfile(info, io.BytesIO(library))
    return _ar({"debian-binary": b"2.0\n", "control.tar.xz": b"x", "data.tar.xz": buf.getvalue()})


def test_ar_members_are_read_across_odd_sizes() -> None:
    archive = _ar({"a": b"odd", "bb": b"even", "c": b"z"})
    assert tcmalloc.ar_members(archive) == {"a": b"odd", "bb": b"even", "c": b"z"}


@pytest.mark.parametrize("junk", [b"", b"PK\x03\x04zip", b"!<arch>\n" + b"x" * 60])
def test_what_is_not_an_ar_archive_is_refused(junk: bytes) -> None:
    with pytest.raises(ValueError):
        tcmalloc.ar_members(junk)


def test_a_cut_archive_is_refused() -> None:
    with pytest.raises(ValueError, match="cut short"):
        tcmalloc.ar_members(_ar({"a": b"0123456789"})[:-4])


def test_the_library_comes_out_of_the_packages_data_archive() -> None:
    assert tcmalloc.library_from_deb(_deb(b"\x7fELF lib")) == b"\x7fELF lib"
    with pytest.raises(ValueError, match="not in the package"):
        tcmalloc.library_from_deb(_deb(b"x", member="usr/lib/other.so"))
    with pytest.raises(ValueError, match=r"no data\.tar"):
        tcmalloc.library_from_deb(_ar({"debian-binary": b"2.0\n"}))


def test_install_writes_once_and_names_what_vllm_finds(tmp_path: Path) -> None:
    deb = tmp_path / tcmalloc.DEB_FILE
    deb.write_bytes(_deb(b"\x7fELF lib"))
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    libs = tmp_path / "libs"
    path, written = tcmalloc.install(libs, deb, sha256=digest)
    assert written and path == libs / "libtcmalloc_minimal.so.4"
    assert path.read_bytes() == b"\x7fELF lib"
    assert tcmalloc.installed(libs) == path
    assert [p.name for p in libs.iterdir()] == [path.name]  # no staging file left
    assert tcmalloc.install(libs, deb, sha256=digest) == (path, False)


def test_a_package_with_another_hash_writes_nothing(tmp_path: Path) -> None:
    deb = tmp_path / tcmalloc.DEB_FILE
    deb.write_bytes(_deb(b"\x7fELF lib"))
    libs = tmp_path / "libs"
    with pytest.raises(FailedPrecondition, match="refusing to load a library"):
        tcmalloc.install(libs, deb)
    assert not libs.exists()


def test_a_missing_local_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="cannot read --deb"):
        tcmalloc.install(tmp_path / "libs", tmp_path / "missing.deb")
    assert tcmalloc.main(["install", "--dest", str(tmp_path / "l"), "--deb", "/no.deb"]) == 1
