"""The coordinator's state directory: desired versions per role and every iteration.

<state_dir>/versions.json            desired (active) and previous version per role
<state_dir>/iterations/0001/         one folder per iteration:
    iteration.json                   the Iteration record (protobuf JSON)
    prompts.jsonl samples.jsonl ...  stage outputs (journals, see journal.py)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from services.coordinator.journal import read_json, write_json
from services.coordinator.rollout import Version
from spar.v1 import common_pb2, coordinator_pb2

ROLES = ("actor", "refiner")


def version_from(doc: dict[str, Any] | None) -> Version | None:
    return Version(**doc) if doc else None


def version_message(v: Version | None) -> common_pb2.AdapterVersion:
    if v is None:
        return common_pb2.AdapterVersion()
    return common_pb2.AdapterVersion(
        name=v.name, digest=v.digest, role=v.role, iteration=v.iteration
    )


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    # -- desired versions ---------------------------------------------------------------

    def _versions(self) -> dict[str, Any]:
        doc: dict[str, Any] = read_json(self.root / "versions.json", {})
        return doc

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

    def save_iteration(self, it: coordinator_pb2.Iteration) -> None:
        doc = json_format.MessageToDict(it, preserving_proto_field_name=True)
        write_json(self.iteration_dir(it.number) / "iteration.json", doc)

    def load_iteration(self, number: int) -> coordinator_pb2.Iteration | None:
        doc = read_json(self.iteration_dir(number) / "iteration.json")
        if doc is None:
            return None
        it: coordinator_pb2.Iteration = json_format.ParseDict(doc, coordinator_pb2.Iteration())
        return it

    def iterations(self) -> list[coordinator_pb2.Iteration]:
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
