"""Fetching an adapter version from an ArtifactStore over gRPC, verified byte for byte.

Replicas never trust the transfer: the manifest's file list must hash to the version
digest, the name must be the one that digest gives, every file must arrive in order, at
its offsets, with its size and sha256. A corrupted or truncated transfer is discarded and
retried a bounded number of times; a version the store does not have is not retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Unpack

import grpc

from spar.adapter_files import FileDigest, digest_of, version_name
from spar.errors import DataLoss, FailedPrecondition, from_status
from spar.security import ClientSecurity, open_aio_channel
from spar.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)

FETCH_ATTEMPTS = 3
"""Tries per fetch: a corrupted or truncated transfer is retried this many times in all."""
MAX_FILE_BYTES = 8 * 1024**3
MAX_FILES = 64
#: Status codes after which a fetch is not retried: asking again gives the same answer.
FINAL_CODES = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
)
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
FETCH_PREFIX = ".fetch-"
"""Folders of transfers in progress start with this; a replica removes its leftovers at
start (spar.adapter_cache)."""


class CorruptTransfer(Exception):
    """The bytes that arrived are not the version's; the fetch is retried."""


@dataclass(frozen=True)
class FetchedVersion:
    """A version fetched from the artifact store and verified against its manifest."""

    path: Path
    """The folder its files were written to."""
    name: str
    digest: str
    role: str
    """actor or refiner, as the manifest says."""
    iteration: int
    """The iteration that trained it."""


def check_relative_path(path: str) -> str:
    """A manifest file path: relative, forward slashes, no '..', no hidden tricks."""
    pure = PurePosixPath(path)
    if (
        not path
        or len(path) > 255
        or "\\" in path
        or "\0" in path
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise CorruptTransfer(f"the manifest lists an unsafe file path {path[:80]!r}")
    return path


def check_manifest(
    manifest: trainer_pb2.AdapterManifest, name: str, expected_digest: str
) -> list[FileDigest]:
    """The manifest's files, once it is shown to describe exactly the version asked for."""
    v = manifest.version
    if v.name != name:
        raise CorruptTransfer(f"the store sent version {v.name[:80]!r} for {name!r}")
    if not manifest.files or len(manifest.files) > MAX_FILES:
        raise CorruptTransfer(f"the manifest lists {len(manifest.files)} files")
    files = []
    for f in manifest.files:
        check_relative_path(f.path)
        if f.size > MAX_FILE_BYTES or len(f.sha256) != 64:
            raise CorruptTransfer(f"the manifest entry of {f.path!r} is malformed")
        files.append(FileDigest(f.path, f.size, f.sha256))
    if len({f.path for f in files}) != len(files):
        raise CorruptTransfer("the manifest lists a file twice")
    digest = digest_of(files)
    if digest != v.digest:
        raise CorruptTransfer(
            f"the manifest's files hash to {digest[:12]}, not its digest {v.digest[:12]}"
        )
    if version_name(v.role, v.iteration, digest) != name:
        raise CorruptTransfer(f"name {name!r} does not match the content digest {digest[:12]}")
    if expected_digest and digest != expected_digest:
        # The store holds this name with other content than the caller expects: asking
        # again would give the same answer.
        raise FailedPrecondition(
            f"version {name!r} in the store has digest {digest[:12]}, not the expected "
            f"{expected_digest[:12]}"
        )
    return files


class _Receiver:
    """Writes the chunk stream into a folder, checking order, offsets, sizes and hashes."""

    def __init__(self, folder: Path, files: list[FileDigest]) -> None:
        self.folder = folder
        self.files = files
        self.index = -1
        self.written = 0
        self.hash = hashlib.sha256()
        self._out: BinaryIO | None = None

    def _open_next(self) -> None:
        self._close_current()
        self.index += 1
        entry = self.files[self.index]
        path = self.folder / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = path.open("wb")
        self.written = 0
        self.hash = hashlib.sha256()

    def _close_current(self) -> None:
        if self._out is None:
            return
        self._out.close()
        self._out = None
        entry = self.files[self.index]
        if self.written != entry.size:
            raise CorruptTransfer(
                f"{entry.path}: received {self.written} of {entry.size} bytes (truncated)"
            )
        if self.hash.hexdigest() != entry.sha256:
            raise CorruptTransfer(f"{entry.path}: sha256 mismatch (the bytes were corrupted)")

    def chunk(self, chunk: trainer_pb2.FileChunk) -> None:
        current = self.files[self.index] if self.index >= 0 else None
        while current is None or chunk.path != current.path:
            # Files come in manifest order; empty files have no chunks.
            if self.index + 1 >= len(self.files):
                raise CorruptTransfer(f"unexpected chunk for {chunk.path[:80]!r}")
            self._open_next()
            current = self.files[self.index]
        if chunk.offset != self.written:
            raise CorruptTransfer(
                f"{current.path}: chunk at offset {chunk.offset}, expected {self.written}"
            )
        if self.written + len(chunk.data) > current.size:
            raise CorruptTransfer(f"{current.path}: more bytes than the manifest's {current.size}")
        assert self._out is not None
        self._out.write(chunk.data)
        self.hash.update(chunk.data)
        self.written += len(chunk.data)

    def finish(self) -> None:
        while self.index + 1 < len(self.files):
            self._open_next()
        self._close_current()


async def _fetch_once(
    target: str,
    name: str,
    expected_digest: str,
    folder: Path,
    timeout: float | None,
    security: ClientSecurity,
) -> FetchedVersion:
    async with open_aio_channel(target, CHANNEL_OPTIONS, **security) as channel:
        stub = trainer_pb2_grpc.ArtifactStoreStub(channel)
        stream = stub.FetchAdapter(trainer_pb2.FetchAdapterRequest(name=name), timeout=timeout)
        receiver: _Receiver | None = None
        manifest = None
        async for message in stream:
            part = message.WhichOneof("part")
            if receiver is None:
                if part != "manifest":
                    raise CorruptTransfer("the stream did not start with the manifest")
                manifest = message.manifest
                receiver = _Receiver(folder, check_manifest(manifest, name, expected_digest))
            elif part == "chunk":
                receiver.chunk(message.chunk)
            else:
                raise CorruptTransfer("a second manifest arrived in the stream")
        if receiver is None or manifest is None:
            raise CorruptTransfer("the stream ended before the manifest")
        receiver.finish()
        v = manifest.version
        return FetchedVersion(folder, v.name, v.digest, v.role, v.iteration)


async def fetch_adapter(
    target: str,
    name: str,
    into: Path,
    *,
    expected_digest: str = "",
    attempts: int = FETCH_ATTEMPTS,
    timeout: float | None = 600.0,
    **security: Unpack[ClientSecurity],
) -> FetchedVersion:
    """Fetches version ``name`` from the ArtifactStore at ``target`` into a new folder under
    ``into``; returns it verified. Raises DataLoss when every attempt arrived corrupted.
    ``security``: TLS and token of the channel (spar.security.client_security)."""
    into.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(1, attempts + 1):
        folder = into / f"{FETCH_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        try:
            return await _fetch_once(target, name, expected_digest, folder, timeout, security)
        except CorruptTransfer as exc:
            last = str(exc)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code in FINAL_CODES:
                shutil.rmtree(folder, ignore_errors=True)
                raise from_status(code, f"artifact store {target}: {details}") from None
            last = f"{code.name}: {details}"
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)
        log.warning(
            "fetch of %s from %s failed (attempt %d/%d): %s", name, target, attempt, attempts, last
        )
        if attempt < attempts:
            await asyncio.sleep(0.2 * attempt)
    raise DataLoss(
        f"adapter {name!r} from {target}: every one of {attempts} transfers failed "
        f"verification; last: {last}"
    )
