"""Which adapter versions a replica hosts, which one is active, and who is using them.

Pure state, no I/O: :class:`spar.adapter_host.AdapterHost` does the loading and calls
this. All methods run on the server's event loop, so no locking is needed.

Requests resolve a name to a version once, at start, and hold a lease until they end:
that is how in-flight requests finish on the version they started with while the
active alias moves on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from spar.adapter_files import BASE
from spar.engine.protocol import AdapterRef
from spar.errors import AlreadyExists, FailedPrecondition, NotFound


@dataclass
class HostedVersion:
    """One adapter version loaded in the engine."""

    ref: AdapterRef
    """What the engine knows the version by (its name and engine id)."""
    digest: str
    role: str
    iteration: int
    staged_at: float = field(default_factory=time.time)
    """When it was loaded (time.time())."""
    in_flight: int = 0
    """Requests holding a lease on it; a retiring version is unloaded when none is left."""
    retiring: bool = False
    """Retire was asked for: no new leases; it goes when the last one ends."""

    @property
    def name(self) -> str:
        return self.ref.name


class AdapterRegistry:
    """The versions a replica hosts, the active one, and their leases (see the module
    docstring)."""

    def __init__(self) -> None:
        self._versions: dict[str, HostedVersion] = {}
        self._active: str | None = None
        self._last_engine_id = 0

    def next_engine_id(self) -> int:
        # Engine ids are never reused: a reused id could serve another version's cache.
        self._last_engine_id += 1
        return self._last_engine_id

    @property
    def active(self) -> str | None:
        return self._active

    def versions(self) -> list[HostedVersion]:
        return sorted(self._versions.values(), key=lambda v: v.staged_at)

    def get(self, name: str) -> HostedVersion | None:
        return self._versions.get(name)

    def add(self, version: HostedVersion) -> None:
        existing = self._versions.get(version.name)
        if existing is not None and existing.digest != version.digest:
            raise AlreadyExists(
                f"adapter {version.name!r} is already loaded with digest "
                f"{existing.digest[:12]}; versions are immutable, publish under a new name"
            )
        self._versions[version.name] = version

    def resolve(self, name: str) -> HostedVersion | None:
        """The version a request naming ``name`` runs on (None: the base model)."""
        if name == BASE:
            return None
        if not name:
            return self._versions[self._active] if self._active else None
        version = self._versions.get(name)
        if version is None or version.retiring:
            loaded = ", ".join(sorted(v.name for v in self._versions.values() if not v.retiring))
            raise NotFound(
                f"adapter {name!r} is not loaded on this replica (loaded: {loaded or 'none'}); "
                "stage it first or leave adapter empty to use the active version"
            )
        return version

    def acquire(self, name: str) -> HostedVersion | None:
        version = self.resolve(name)
        if version is not None:
            version.in_flight += 1
        return version

    def release(self, version: HostedVersion | None) -> bool:
        """Ends a lease; True when the version is retiring and now unused (unload it)."""
        if version is None:
            return False
        version.in_flight -= 1
        return version.retiring and version.in_flight == 0

    def activate(self, name: str) -> tuple[str | None, str | None]:
        """Makes name the default; returns (previous, active). BASE activates no adapter."""
        previous = self._active
        if name == BASE:
            self._active = None
            return previous, None
        version = self._versions.get(name)
        if version is None or version.retiring:
            raise FailedPrecondition(
                f"adapter {name!r} is not staged on this replica; call StageAdapter first"
            )
        self._active = name
        return previous, name

    def retire(self, name: str) -> HostedVersion | None:
        """Stops new requests on name. Returns the version when it can be unloaded now."""
        version = self._versions.get(name)
        if version is None or version.retiring:
            return None
        if name == self._active:
            raise FailedPrecondition(
                f"adapter {name!r} is active; activate another version before retiring it"
            )
        version.retiring = True
        return version if version.in_flight == 0 else None

    def forget(self, name: str) -> None:
        self._versions.pop(name, None)
