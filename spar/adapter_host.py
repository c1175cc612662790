"""Hosting adapter versions on one actor or refiner replica: stage, activate, retire.

Staging copies the version into the replica's own cache folder (so nobody can change
the bytes behind a loaded name), verifies the digest, and loads it into the engine. A
version can come from a folder on the replica or, by name, from the trainer's
ArtifactStore over gRPC (:mod:`spar.adapter_fetch` verifies and retries the transfer);
both end in the same load path. A restarted replica loads a version it still holds a
verified copy of from its folder, without a fetch (:mod:`spar.adapter_cache`).
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

from spar.adapter_cache import AdapterCache, CachedCopy
from spar.adapter_fetch import FETCH_ATTEMPTS, fetch_adapter
from spar.adapter_files import check_name, copy_adapter, folder_digest, validate_adapter_dir
from spar.adapter_registry import AdapterRegistry, HostedVersion
from spar.engine.protocol import AdapterRef, Engine
from spar.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from spar.metrics import Metrics
from spar.security import ClientSecurity

log = logging.getLogger(__name__)


class AdapterHost:
    """The adapter versions of one replica: stage (copy or fetch, verify, load), activate,
    retire. ``cache_dir`` is the role's folder of local copies; it is taken for the life
    of the host (:meth:`close` gives it back) and its copies from an earlier run are
    reused when they verify."""

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
        self.cache = AdapterCache.open(cache_dir)
        self.cache_dir = self.cache.root
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
            return await self._load(name, source, digest, iteration, owned=False)

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
            copy = await asyncio.to_thread(self.cache.claim, name, digest)
            if copy is not None and iteration and copy.iteration != iteration:
                # The name says one iteration, the caller another: the store decides.
                await asyncio.to_thread(shutil.rmtree, copy.path, ignore_errors=True)
                copy = None
            if copy is not None:
                log.info("%s: using the verified copy %s (no fetch)", name, copy.path.name)
            else:
                copy = await self._fetch(name, store_target, digest, iteration, attempts)
            return await self._load(name, copy.path, copy.digest, copy.iteration, owned=True)

        return await self._stage(name, digest, load)

    async def _fetch(
        self, name: str, store_target: str, digest: str, iteration: int, attempts: int
    ) -> CachedCopy:
        """Fetches a version into a new folder of the cache, verified byte for byte."""
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
            # The one step that makes the copy visible: a new name, so it never lands on
            # a folder an earlier run left.
            dest = self.cache.new_folder(name)
            await asyncio.to_thread(fetched.path.rename, dest)
        finally:
            shutil.rmtree(fetched.path, ignore_errors=True)
        return CachedCopy(dest, fetched.digest, fetched.iteration)

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
        self, name: str, source: Path, digest: str, iteration: int, *, owned: bool
    ) -> HostedVersion:
        """Loads a version. An owned source (a copy in the cache: a fresh fetch or a
        verified copy of an earlier run) is loaded where it lies; any other is copied
        into the cache first. A copy that fails to load is deleted."""
        max_rank = self.engine.info.max_lora_rank
        try:
            await asyncio.to_thread(validate_adapter_dir, source, max_rank)
        except BaseException:
            if owned:
                shutil.rmtree(source, ignore_errors=True)
            raise
        engine_id = self.registry.next_engine_id()
        if owned:
            dest = source
        else:
            # A fresh folder per load: a retired-then-restaged name never shares files.
            dest = self.cache.new_folder(name)
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

    def drop_unclaimed(self) -> list[str]:
        """Deletes the copies of an earlier run that no stage has used (called once the
        replica has reconciled, so the folder holds what is loaded, as before the restart)."""
        return self.cache.drop_unclaimed()

    def close(self) -> None:
        """Gives the cache folder back; the copies stay for the next start."""
        self.cache.close()

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
