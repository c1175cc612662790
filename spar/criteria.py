"""Criteria packs: the requirements a business sets for answers, as named, checkable criteria.

A pack is one YAML or JSON file (schema: ``docs/criteria-pack.schema.json``, or
``spar criteria schema``)::

    name: support
    description: Replies of our customer-support desk
    criteria:
      - id: greeting
        type: starts_with
        text: ["Hello", "Hi"]
      - id: short
        type: length
        unit: words
        max: 120
      - id: polite
        type: rubric
        text: Polite and warm, but no apology for things that are not our fault.

A constraint names a criterion as ``pack/criterion`` (``support/greeting``) wherever an
IFEval instruction id goes today: Judge, Refine and Answer requests, prompt sets of an
iteration, evaluation. A bare pack name (``support``) stands for all its criteria.

Two kinds of criteria:
- **checkable** ones (``regex``, ``keywords_present``, ``keywords_absent``, ``length``,
  ``json``, ``starts_with``, ``ends_with``, ``language``, ``ifeval``) are decided by
  program: :meth:`CriteriaRegistry.check` returns :class:`spar.ifeval.ConstraintCheck`
  for them (and for plain IFEval ids, through :func:`spar.ifeval.check`), so the
  verifier and the hybrid judge treat them exactly like IFEval's;
- **rubric** criteria are free text that only the LLM judge can decide:
  :meth:`CriteriaRegistry.rubrics` gives their texts, which the judge prompt lists as the
  requirements the LLM must check.

IFEval's 25 instruction ids stay usable as they are, and as the built-in pack ``ifeval``
(``ifeval/punctuation:no_comma``, kwargs from the request).

Servers read packs from a folder (``SPAR_CRITERIA__DIR``; a ConfigMap in the chart) and
reload it when a file changes (checked at most every ``reload_interval_s``, on use). A
pack that does not validate is refused with a message naming the file, the criterion and
the field; at start that stops the server, on a reload the packs loaded before stay in
use and the error is logged.

The criterion types and the pack model are in spar.criterion_types; this module loads
packs and checks constraints against them.

"Loose" results follow IFEval's definition: the criterion holds on some loosened variant
of the response (markdown asterisks removed, first and/or last line dropped).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spar import ifeval
from spar.criteria_packs import folder_signature, load_folder
from spar.criterion_types import (
    IFEVAL_PACK,
    CriteriaPack,
    CriterionBase,
    IfevalCriterion,
    RubricCriterion,
)
from spar.errors import FailedPrecondition, InvalidArgument
from spar.ifeval import Constraint, ConstraintCheck
from spar.metrics import Metrics

log = logging.getLogger(__name__)


# -- the registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """What a constraint id stands for."""

    id: str
    """The id as the request gave it."""
    pack: str
    """Pack name; "" for a plain IFEval id."""
    criterion: CriterionBase | None
    """The pack's criterion; None for IFEval ids (plain or ``ifeval/``)."""
    ifeval_id: str = ""
    """The IFEval instruction id to check, for IFEval ids and ``ifeval`` criteria."""

    @property
    def checkable(self) -> bool:
        return self.criterion is None or self.criterion.checkable


def _loosened(response: str) -> list[str]:
    """IFEval's loose variants of a response: as is, without the first line, without the
    last line, without both, and each without asterisks (empty ones are skipped, as in
    IFEval)."""
    lines = response.split("\n")
    first = "\n".join(lines[1:]).strip()
    last = "\n".join(lines[:-1]).strip()
    both = "\n".join(lines[1:-1]).strip()
    out = [response, first, last, both]
    return out + [v.replace("*", "") for v in out]


class CriteriaRegistry:
    """The packs of one folder plus the built-in ``ifeval`` pack, reloaded when the
    folder changes. :meth:`check` is a CheckFn for the verifier."""

    def __init__(
        self,
        folder: Path | str | None = None,
        *,
        reload_interval_s: float = 2.0,
        on_reload: Callable[[bool, int], None] | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser() if folder else None
        self.reload_interval_s = reload_interval_s
        self.on_reload = on_reload
        """Called after every (re)load attempt with (ok, packs loaded)."""
        self.last_error = ""
        """Why the last reload failed ("" when it worked)."""
        self._packs: dict[str, CriteriaPack] = {}
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def load(self) -> None:
        """Loads the folder now; InvalidArgument (file, criterion, field) when a pack is
        bad. A server calls this at start, so a bad pack stops it there."""
        if self.folder is None:
            return
        if not self.folder.is_dir():
            raise FailedPrecondition(f"criteria folder {self.folder} does not exist")
        with self._lock:
            signature = folder_signature(self.folder)
            try:
                packs = load_folder(self.folder)
            except InvalidArgument as exc:
                self.last_error = exc.message
                self._report(False)
                raise
            self._packs, self._signature, self.last_error = packs, signature, ""
            self._checked_at = time.monotonic()
        self._report(True)

    def _report(self, ok: bool) -> None:
        if self.on_reload is not None:
            self.on_reload(ok, len(self._packs))

    def maybe_reload(self) -> None:
        """Reloads when a file changed (checked at most every reload_interval_s). A bad
        folder keeps the packs loaded before; the error is logged once per change."""
        if self.folder is None:
            return
        now = time.monotonic()
        if now - self._checked_at < self.reload_interval_s:
            return
        with self._lock:
            if now - self._checked_at < self.reload_interval_s:
                return
            self._checked_at = now
            signature = folder_signature(self.folder)
            if signature == self._signature:
                return
            self._signature = signature
            try:
                packs = load_folder(self.folder)
            except InvalidArgument as exc:
                self.last_error = exc.message
                log.error(
                    "criteria packs in %s not reloaded, keeping the %d loaded before: %s",
                    self.folder, len(self._packs), exc.message,
                )  # fmt: skip
                ok = False
            else:
                self._packs, self.last_error, ok = packs, "", True
                log.info("criteria packs reloaded from %s: %s", self.folder, sorted(packs))
        self._report(ok)

    def packs(self) -> dict[str, CriteriaPack]:
        """User packs by name (the built-in ``ifeval`` pack is not among them)."""
        self.maybe_reload()
        return dict(self._packs)

    # -- constraints ---------------------------------------------------------------------

    def resolve(self, instruction_id: str) -> Resolved:
        """What an id stands for; InvalidArgument for unknown packs and criteria."""
        if "/" not in instruction_id:
            return Resolved(instruction_id, "", None, instruction_id)
        pack_name, _, cid = instruction_id.partition("/")
        if pack_name == IFEVAL_PACK:
            return Resolved(instruction_id, IFEVAL_PACK, None, cid)
        pack = self.packs().get(pack_name)
        if pack is None:
            known = ", ".join(sorted([*self._packs, IFEVAL_PACK]))
            raise InvalidArgument(
                f"unknown criteria pack {pack_name!r} in {instruction_id!r}; loaded: {known}"
            )
        criterion = pack.get(cid)
        if criterion is None:
            ids = ", ".join(c.id for c in pack.criteria)
            raise InvalidArgument(f"pack {pack_name!r} has no criterion {cid!r}; it has {ids}")
        iid = criterion.instruction_id if isinstance(criterion, IfevalCriterion) else ""
        return Resolved(instruction_id, pack_name, criterion, iid)

    def expand(self, refs: Iterable[str]) -> list[Constraint]:
        """Constraints of pack references: ``pack`` (every criterion of it) or
        ``pack/criterion``; duplicates are dropped, order kept."""
        out: list[Constraint] = []
        seen: set[str] = set()
        for ref in refs:
            ref = ref.strip()
            if not ref:
                raise InvalidArgument("a criteria reference is empty; use PACK or PACK/CRITERION")
            if "/" in ref:
                self.resolve(ref)
                ids = [ref]
            elif ref == IFEVAL_PACK:
                raise InvalidArgument(
                    "the ifeval pack needs kwargs per instruction; name its ids as constraints "
                    "(e.g. punctuation:no_comma) instead of the whole pack"
                )
            else:
                pack = self.packs().get(ref)
                if pack is None:
                    known = ", ".join(sorted(self._packs)) or "none"
                    raise InvalidArgument(f"unknown criteria pack {ref!r}; loaded: {known}")
                ids = [f"{ref}/{c.id}" for c in pack.criteria]
            for i in ids:
                if i not in seen:
                    seen.add(i)
                    out.append(Constraint(i, {}))
        return out

    def validate(self, constraints: Sequence[Constraint], instruction: str = "") -> list[str]:
        """Descriptions of the constraints; InvalidArgument naming ``constraints[i]``."""
        out: list[str] = []
        for i, c in enumerate(constraints):
            try:
                r = self.resolve(c.instruction_id)
                if r.criterion is None:
                    out.extend(ifeval.validate([Constraint(r.ifeval_id, c.kwargs)], instruction))
                    continue
                if c.kwargs:
                    raise InvalidArgument(
                        f"{c.instruction_id} takes no kwargs (the pack fixes its parameters)"
                    )
                out.append(r.criterion.describe())
            except InvalidArgument as exc:
                message = exc.message.removeprefix("constraints[0]: ")
                raise InvalidArgument(f"constraints[{i}]: {message}") from None
        return out

    def split(self, constraints: Sequence[Constraint]) -> tuple[list[Constraint], list[Constraint]]:
        """(checkable, rubric) constraints, each in the given order."""
        checkable: list[Constraint] = []
        rubric: list[Constraint] = []
        for c in constraints:
            (checkable if self.resolve(c.instruction_id).checkable else rubric).append(c)
        return checkable, rubric

    def rubrics(self, constraints: Sequence[Constraint]) -> list[str]:
        """The rubric texts among constraints: the requirements the LLM judge must check."""
        out = []
        for c in constraints:
            r = self.resolve(c.instruction_id)
            if isinstance(r.criterion, RubricCriterion):
                out.append(r.criterion.text)
        return out

    def check(
        self, instruction: str, response: str, constraints: Sequence[Constraint]
    ) -> list[ConstraintCheck]:
        """Strict and loose results of every checkable constraint, in order (a CheckFn).

        IFEval ids go to :func:`spar.ifeval.check`; pack criteria are checked here. An
        unknown id, or a rubric criterion (only the LLM judge decides those), gives a
        result with ``error`` set (not followed), as an unknown IFEval id does.
        """
        out: list[ConstraintCheck | None] = [None] * len(constraints)
        via_ifeval: list[tuple[int, Constraint]] = []
        for i, c in enumerate(constraints):
            try:
                r = self.resolve(c.instruction_id)
            except InvalidArgument as exc:
                out[i] = ConstraintCheck(c.instruction_id, False, False, error=exc.message)
                continue
            if r.criterion is None or isinstance(r.criterion, IfevalCriterion):
                kwargs = c.kwargs if r.criterion is None else r.criterion.kwargs
                via_ifeval.append((i, Constraint(r.ifeval_id, kwargs)))
                continue
            out[i] = self._check_one(c.instruction_id, r.criterion, instruction, response)
        if via_ifeval:
            checks = ifeval.check(instruction, response, [c for _, c in via_ifeval])
            for (i, _), result in zip(via_ifeval, checks, strict=True):
                criterion = self.resolve(constraints[i].instruction_id).criterion
                out[i] = ConstraintCheck(
                    constraints[i].instruction_id,
                    result.strict,
                    result.loose,
                    criterion.describe()
                    if criterion and criterion.description
                    else result.description,
                    result.error,
                )
        return [c for c in out if c is not None]

    def _check_one(
        self, cid: str, criterion: CriterionBase, instruction: str, response: str
    ) -> ConstraintCheck:
        description = criterion.describe()
        if not criterion.checkable:
            return ConstraintCheck(
                cid, False, False, description, "a rubric criterion: only the LLM judge decides it"
            )
        try:
            strict = criterion.holds(response, instruction)
            loose = strict or any(
                criterion.holds(v, instruction) for v in _loosened(response)[1:] if v.strip()
            )
        except Exception as exc:  # a checker failing on odd text counts as not followed
            return ConstraintCheck(cid, False, False, description, f"checker failed: {exc}")
        if not strict:
            with contextlib.suppress(Exception):
                measured = criterion.measure(response)
                if measured:
                    description = f"{description} ({measured})"
        return ConstraintCheck(cid, strict, loose, description)


def pack_metrics(metrics: Metrics) -> Callable[[bool, int], None]:
    """The criteria families of docs/metrics.md on a server's registry; returns the
    registry's ``on_reload`` callback that keeps them current."""
    service = metrics.service
    loaded = metrics.gauge(
        "spar_criteria_packs_loaded",
        "Criteria packs in use (SPAR_CRITERIA__DIR; the built-in ifeval pack not counted).",
    )
    reloads = metrics.counter(
        "spar_criteria_reloads",
        "Loads of the criteria folder by result (error: a bad pack; the old ones stay).",
        ["result"],
    )
    loaded.labels(service).set(0)
    for result in ("ok", "error"):
        reloads.labels(service, result)

    def on_reload(ok: bool, packs: int) -> None:
        reloads.labels(service, "ok" if ok else "error").inc()
        loaded.labels(service).set(packs)

    return on_reload


# -- the process's registry ------------------------------------------------------------

_registry: CriteriaRegistry | None = None
_registry_lock = threading.Lock()


def configure(
    folder: Path | str | None,
    *,
    reload_interval_s: float = 2.0,
    on_reload: Callable[[bool, int], None] | None = None,
) -> CriteriaRegistry:
    """Sets the process's registry (servers call it at start) and loads the folder;
    InvalidArgument when a pack is bad."""
    global _registry
    reg = CriteriaRegistry(folder, reload_interval_s=reload_interval_s, on_reload=on_reload)
    reg.load()
    with _registry_lock:
        _registry = reg
    return reg


def registry() -> CriteriaRegistry:
    """The process's registry: the configured one, else that of the settings'
    ``criteria.dir`` (``SPAR_CRITERIA__DIR``; none: IFEval ids only)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            from spar.config import Settings

            c = Settings().criteria
            reg = CriteriaRegistry(c.dir or None, reload_interval_s=c.reload_interval_s)
            reg.load()
            _registry = reg
        return _registry


def check(
    instruction: str, response: str, constraints: Sequence[Constraint]
) -> list[ConstraintCheck]:
    """:meth:`CriteriaRegistry.check` of the process's registry (a CheckFn)."""
    return registry().check(instruction, response, constraints)


def rubrics(constraints: Sequence[Constraint]) -> list[str]:
    """:meth:`CriteriaRegistry.rubrics` of the process's registry."""
    return registry().rubrics(constraints)


def describe_pack(pack: CriteriaPack) -> list[str]:
    """Lines describing a pack for people (``spar criteria show``)."""
    lines = [f"{pack.name}: {pack.description}" if pack.description else pack.name]
    for c in pack.criteria:
        kind = "rubric (LLM judge)" if not c.checkable else f"{c.type} (program)"  # type: ignore[attr-defined]
        lines.append(f"  {pack.name}/{c.id:24s} {kind:28s} {c.describe()}")
    return lines
