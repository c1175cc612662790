"""The coordinator's state directory: desired versions per role and every iteration.

<state_dir>/versions.json            desired (active) and previous version per role
<state_dir>/iterations/0001/         one folder per iteration:
    iteration.json                   the iteration record (iteration_record.py's schema)
    prompts.jsonl samples.jsonl ...  stage outputs (journals, see journal.py)

A coordinator that starts on an existing folder continues from it: the desired versions
are what replicas reconcile to, the next iteration gets the next number, an unfinished
one resumes; temporary files of writes a killed coordinator did not finish are removed,
and a damaged file is a DataLoss error that names it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from services.coordinator.iteration_messages import record_from_protobuf_json
from services.coordinator.iteration_record import IterationRecord
from services.coordinator.journal import read_json, remove_unfinished_writes, write_json
from services.coordinator.rollout import Version
from spar.config import Settings
from spar.errors import DataLoss

ROLES = ("actor", "refiner")


def version_from(doc: dict[str, Any] | None) -> Version | None:
    return Version(**doc) if doc else None


def check_versions(doc: Any, path: Path) -> dict[str, Any]:
    """versions.json, checked: role → {active, previous} of Version fields or null."""
    try:
        if not isinstance(doc, dict):
            raise TypeError("not an object")
        for role, entry in doc.items():
            if role not in ROLES or not isinstance(entry, dict):
                raise TypeError(f"unexpected entry {role[:40]!r}")
            for key in ("active", "previous"):
                version = version_from(entry.get(key))
                if version is not None and not (
                    isinstance(version.name, str) and isinstance(version.digest, str)
                ):
                    raise TypeError(f"{role}.{key} is malformed")
    except TypeError as exc:
        raise DataLoss(
            f"{path} is damaged ({exc}); it names the versions replicas must serve: restore "
            "it from a backup, or move it away and roll the versions out again"
        ) from None
    return doc


def state_root(settings: Settings) -> Path:
    """The coordinator's state directory (``SPAR_COORDINATOR__STATE_DIR``, else the cache's)."""
    c = settings.coordinator
    return Path(c.state_dir).expanduser() if c.state_dir else settings.cache_dir / "coordinator"


class StateStore:
    """The coordinator's state folder (see the module docstring): desired versions per role and
    the iterations' records and folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        remove_unfinished_writes(root)

    # -- desired versions ---------------------------------------------------------------

    def _versions(self) -> dict[str, Any]:
        path = self.root / "versions.json"
        return check_versions(read_json(path, {}), path)

    def desired(self, role: str) -> tuple[Version | None, Version | None]:
        doc = self._versions().get(role, {})
        return version_from(doc.get("active")), version_from(doc.get("previous"))

    def manages(self, role: str) -> bool:
        """True once the coordinator has set the role's version (base counts)."""
        return role in self._versions()

    def set_desired(self, role: str, active: Version | None, previous: Version | None) -> None:
        doc = self._versions()
        doc[role] = {
            "active": asdict(active) if active else None,
            "previous": asdict(previous) if previous else None,
        }
        write_json(self.root / "versions.json", doc)

    # -- iterations ---------------------------------------------------------------------

    def iteration_dir(self, number: int) -> Path:
        return self.root / "iterations" / f"{number:04d}"

    def save_iteration(self, it: IterationRecord) -> None:
        write_json(self.iteration_dir(it.number) / "iteration.json", it.to_json())

    def load_iteration(self, number: int) -> IterationRecord | None:
        """The iteration's record; one an older coordinator wrote (protobuf JSON, no
        ``schema`` field) is migrated as it is read."""
        doc = read_json(self.iteration_dir(number) / "iteration.json")
        if doc is None:
            return None
        try:
            if not isinstance(doc, dict):
                raise TypeError("not a JSON object")
            if "schema" not in doc:
                return record_from_protobuf_json(doc)
            return IterationRecord.from_json(doc)
        except (json_format.ParseError, ValueError, TypeError, KeyError) as exc:
            raise DataLoss(
                f"{self.iteration_dir(number) / 'iteration.json'} is damaged ({exc}); restore "
                "it from a backup, or move the iteration's folder away"
            ) from None

    def iterations(self) -> list[IterationRecord]:
        folder = self.root / "iterations"
        if not folder.is_dir():
            return []
        out = []
        for d in sorted(folder.iterdir()):
            if d.name.isdigit() and (it := self.load_iteration(int(d.name))) is not None:
                out.append(it)
        return out

    def last_number(self) -> int:
        its = self.iterations()
        return its[-1].number if its else 0
