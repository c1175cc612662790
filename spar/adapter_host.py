"""Hosting adapter versions on one actor or refiner replica: stage, activate, retire.

Staging copies the version into the replica's own cache folder (so nobody can change
the bytes behind a loaded name), verifies the digest, and loads it into the engine. A
version can come from a folder on the replica or, by name, from the trainer's
ArtifactStore over gRPC (:mod:`spar.adapter_fetch` verifies and retries the transfer);
both end in the same load path.
Activation only moves the alias in :class:`AdapterRegistry`; requests hold leases, so
the ones in flight finish on their version and a retired version is unloaded when its
last request ends.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from spar.adapter_fetch import FETCH_ATTEMPTS, fetch_adapter
from spar.adapter_files import check_name, copy_adapter, folder_digest, validate_adapter_dir
from spar.adapter_registry import AdapterRegistry, HostedVersion
from spar.engine.protocol import AdapterRef, Engine
from spar.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from spar.metrics import Metrics
from spar.security import ClientSecurity

log = logging.getLogger(__name__)


class AdapterHost:
    def __init__(
        self,
        engine: Engine,
        *,
        role: str,
        cache_dir: Path,
        metrics: Metrics,
        security: ClientSecurity | None = None,
    ) -> None:
        self.engine = engine
        self.security = security or ClientSecurity()
        """TLS and token of the ArtifactStore fetches (spar.security.client_security)."""
        self.role = role
        self.cache_dir = cache_dir
        self.metrics = metrics
        self.registry = AdapterRegistry()
        self._stage_locks: dict[str, asyncio.Lock] = {}
        metrics.set_active_adapter(role, None)
        metrics.adapters_loaded.labels(metrics.service).set(0)

    async def stage_local(
        self, name: str, source: Path, *, digest: str = "", role: str = "", iteration: int = 0
    ) -> tuple[HostedVersion, bool]:
        """Stages a version from a folder on this machine; returns (version, loaded)."""
        self._check_request(name, digest, role)

        async def load() -> HostedVersion:
            return await self._load(name, source, digest, iteration, private=False)

        return await self._stage(name, digest, load)

    async def stage_from_store(
        self,
        name: str,
        store_target: str,
        *,
        digest: str = "",
        role: str = "",
        iteration: int = 0,
        attempts: int = FETCH_ATTEMPTS,
    ) -> tuple[HostedVersion, bool]:
        """Fetches a version from the ArtifactStore at store_target (verified, retried on a
        corrupted transfer) and stages it; returns (version, loaded)."""
        self._check_request(name, digest, role)
        if not store_target or len(store_target) > 512:
            raise InvalidArgument("source.store_target must be the store's HOST:PORT")

        async def load() -> HostedVersion:
            fetched = await fetch_adapter(
                store_target,
                name,
                self.cache_dir,
                expected_digest=digest,
                attempts=attempts,
                **self.security,
            )
            try:
                if fetched.role != self.role:
                    raise FailedPrecondition(
                        f"adapter {name!r} is a {fetched.role} adapter; this replica hosts "
                        f"{self.role} adapters"
                    )
                if iteration and fetched.iteration != iteration:
                    raise FailedPrecondition(
                        f"adapter {name!r} is of iteration {fetched.iteration}, not {iteration}"
                    )
                return await self._load(
                    name, fetched.path, fetched.digest, fetched.iteration, private=True
                )
            finally:
                shutil.rmtree(fetched.path, ignore_errors=True)

        return await self._stage(name, digest, load)

    def _check_request(self, name: str, digest: str, role: str) -> None:
        check_name(name)
        if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise InvalidArgument("version.digest must be 64 lowercase hex characters (sha256)")
        if role and role != self.role:
            raise FailedPrecondition(
                f"adapter {name!r} is a {role} adapter; this replica hosts {self.role} adapters"
            )

    async def _stage(
        self, name: str, digest: str, load: Callable[[], Awaitable[HostedVersion]]
    ) -> tuple[HostedVersion, bool]:
        lock = self._stage_locks.setdefault(name, asyncio.Lock())
        async with lock:
            existing = self.registry.get(name)
            if existing is not None and not existing.retiring:
                if digest and digest != existing.digest:
                    raise AlreadyExists(
                        f"adapter {name!r} is loaded with digest {existing.digest[:12]}, not "
                        f"{digest[:12]}; versions are immutable, use a new name"
                    )
                return existing, False
            try:
                version = await load()
            except Exception:
                self.metrics.adapter_operations.labels(self.metrics.service, "stage", "error").inc()
                raise
        self.metrics.adapter_operations.labels(self.metrics.service, "stage", "ok").inc()
        self._update_gauges()
        log.info("staged adapter %s (digest %s)", name, version.digest[:12])
        return version, True

    async def _load(
        self, name: str, source: Path, digest: str, iteration: int, *, private: bool
    ) -> HostedVersion:
        """Loads a version; a private source (a fresh fetch) is moved, any other copied."""
        max_rank = self.engine.info.max_lora_rank
        await asyncio.to_thread(validate_adapter_dir, source, max_rank)
        engine_id = self.registry.next_engine_id()
        # A fresh folder per load: a retired-then-restaged name never shares files.
        dest = self.cache_dir / f"{name}.{engine_id}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if private:
            await asyncio.to_thread(source.rename, dest)
        else:
            await asyncio.to_thread(copy_adapter, source, dest)
        try:
            actual = await asyncio.to_thread(folder_digest, dest)
            if digest and actual != digest:
                raise FailedPrecondition(
                    f"adapter {name!r}: content digest {actual[:12]} does not match the "
                    f"expected {digest[:12]}; the files are corrupted or not this version"
                )
            ref = AdapterRef(name=name, engine_id=engine_id, path=dest)
            await self.engine.add_adapter(ref)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        version = HostedVersion(ref=ref, digest=actual, role=self.role, iteration=iteration)
        self.registry.add(version)
        return version

    def activate(self, name: str) -> tuple[str | None, str | None]:
        previous, active = self.registry.activate(name)
        self.metrics.set_active_adapter(self.role, active)
        self.metrics.adapter_operations.labels(self.metrics.service, "activate", "ok").inc()
        log.info("active adapter: %s -> %s", previous or "base", active or "base")
        return previous, active

    async def retire(self, name: str) -> bool:
        version = self.registry.get(name)
        if version is None or version.retiring:
            return False
        self.registry.retire(name)
        if version.in_flight == 0:
            await self._unload(version)
        self.metrics.adapter_operations.labels(self.metrics.service, "retire", "ok").inc()
        return True

    async def _unload(self, version: HostedVersion) -> None:
        self.registry.forget(version.name)
        try:
            await self.engine.remove_adapter(version.ref)
        finally:
            shutil.rmtree(version.ref.path, ignore_errors=True)
            self._update_gauges()
        log.info("retired adapter %s", version.name)

    @asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[HostedVersion | None]:
        """The version a request runs on, held until the request ends."""
        version = self.registry.acquire(name)
        try:
            yield version
        finally:
            if self.registry.release(version) and version is not None:
                await self._unload(version)

    def _update_gauges(self) -> None:
        self.metrics.adapters_loaded.labels(self.metrics.service).set(len(self.registry.versions()))
