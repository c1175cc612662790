"""Tree-search refinement (SPaR, DESIGN.md "The iteration", step 3). Pure logic.

The root is the response to refine. Expanding a node asks the model, in the judge
conversation of that node, for ``branch`` refinements (one engine request, n=branch);
each parseable one becomes a child and is judged. Value = the judge's value.

- **BFS** (default, the paper's): level by level. All expansions of a level run at
  once, and each child's judge request is sent as soon as its parent's refinements
  arrive, so the engine sees the whole level together and batches it. The search
  stops at the first level whose best child passes the end gate; otherwise it keeps
  the ``keep_top`` best children (or a value-proportional sample) and goes on.
- **DFS**: expands a node, stops if its best child passes, else visits the children
  in value order (or a value-proportional order) depth first.

Every engine request goes through :class:`~services.refiner.cost.Meter`, which bounds
nodes and generated tokens; the wall-time budget bounds the whole search (work in
flight is cancelled, which aborts it in the engine). Identical responses are judged
once (the judge cache also joins concurrent requests for the same text).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from services.refiner.cost import BudgetExhausted, Cost, Meter
from services.refiner.judge import Judge, Judgement
from services.refiner.prompts import REFINE_STOP, Prompts, parse_refinement
from spar.engine.protocol import GenerationRequest

Strategy = Literal["bfs", "dfs"]
Selection = Literal["greedy", "proportional"]
Outcome = Literal["already_passing", "refined", "exhausted", "deadline"]
EventKind = Literal["expanded", "judged"]


@dataclass(frozen=True)
class SearchConfig:
    strategy: Strategy = "bfs"
    selection: Selection = "greedy"
    branch: int = 3
    keep_top: int = 2
    max_depth: int = 3
    end_gate: float = 0.5
    refine_temperature: float = 0.7
    refine_top_p: float = 1.0
    refine_max_tokens: int = 384
    parse_retries: int = 1
    seed: int = 0
    """Seeds the RNG of value-proportional selection (the engine's own sampling is
    seeded by the engine)."""


@dataclass
class Node:
    id: int
    parent_id: int
    depth: int
    response: str
    reflection: str = ""
    judgement: Judgement | None = None
    expanded: bool = False

    @property
    def value(self) -> float:
        return self.judgement.value if self.judgement else 0.0


@dataclass(frozen=True)
class SearchEvent:
    kind: EventKind
    node: Node
    cost: Cost


@dataclass(frozen=True)
class SearchResult:
    best: Node
    outcome: Outcome
    cost: Cost
    trace: list[Node]
    tree: list[Node]
    wall_time_s: float


def _rank(node: Node) -> tuple[float, float, int]:
    """Higher is better: value, then share of constraints met, then earlier nodes."""
    share = node.judgement.constraint_share if node.judgement else 0.0
    return (node.value, share, -node.id)


class TreeSearch:
    def __init__(
        self,
        instruction: str,
        response: str,
        *,
        judge: Judge,
        meter: Meter,
        prompts: Prompts,
        config: SearchConfig,
        on_event: Callable[[SearchEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instruction = instruction
        self.judge = judge
        self.meter = meter
        self.prompts = prompts
        self.config = config
        self.on_event = on_event
        self.clock = clock
        self.rng = random.Random(config.seed)
        self.nodes: list[Node] = []
        self.root = self._add(None, response, "")
        self._cache: dict[str, asyncio.Future[Judgement]] = {}
        self._found: Node | None = None

    # -- bookkeeping -----------------------------------------------------------------

    def _add(self, parent: Node | None, response: str, reflection: str) -> Node:
        node = Node(
            id=len(self.nodes),
            parent_id=parent.id if parent else -1,
            depth=parent.depth + 1 if parent else 0,
            response=response,
            reflection=reflection,
        )
        self.nodes.append(node)
        return node

    def _emit(self, kind: EventKind, node: Node) -> None:
        if self.on_event is not None:
            self.on_event(SearchEvent(kind, dataclasses.replace(node), self.meter.cost.snapshot()))

    def _passes(self, node: Node) -> bool:
        return node.judgement is not None and node.judgement.passes(self.config.end_gate)

    # -- judging ---------------------------------------------------------------------

    async def _judgement(self, response: str) -> Judgement:
        cached = self._cache.get(response)
        if cached is None:
            cached = asyncio.ensure_future(self._judge_counted(response))
            self._cache[response] = cached
        # Shielded: one waiter's cancellation must not cancel the others' shared result.
        return await asyncio.shield(cached)

    async def _judge_counted(self, response: str) -> Judgement:
        judgement = await self.judge.judge(response)
        self.meter.cost.unparseable_judgements += judgement.vote.unparseable
        return judgement

    async def _judge(self, node: Node) -> None:
        """Judges node in place; leaves it unjudged when the token budget is spent."""
        try:
            node.judgement = await self._judgement(node.response)
        except BudgetExhausted:
            return
        self._emit("judged", node)

    # -- expansion -------------------------------------------------------------------

    async def _refine(self, parent: Node, wanted: int) -> list[Node]:
        """Up to ``wanted`` parseable refinements of parent, within the node budget."""
        pending = self.meter.reserve_nodes(wanted)
        children: list[Node] = []
        assert parent.judgement is not None
        messages = self.prompts.refine_messages(
            self.instruction, parent.response, parent.judgement.critique
        )
        c = self.config
        try:
            for _ in range(1 + c.parse_retries):
                if pending == 0:
                    break
                parent.expanded = True
                result = await self.meter.generate(
                    "refine",
                    GenerationRequest(
                        messages=messages,
                        n=pending,
                        temperature=c.refine_temperature,
                        top_p=c.refine_top_p,
                        max_tokens=c.refine_max_tokens,
                        stop=(REFINE_STOP,),
                    ),
                )
                for sample in result.samples:
                    refinement = parse_refinement(sample.text, sample.finish_reason)
                    if refinement is None:
                        self.meter.cost.unparseable_refinements += 1
                        continue
                    self.meter.use_node()
                    pending -= 1
                    child = self._add(parent, refinement.response, refinement.reflection)
                    children.append(child)
                    self._emit("expanded", child)
        except BudgetExhausted:
            pass
        finally:
            self.meter.release_nodes(pending)
        return children

    async def _expand(self, parent: Node) -> list[Node]:
        """Refines parent and judges its children; returns the judged children."""
        children = await self._refine(parent, self.config.branch)
        await asyncio.gather(*(self._judge(child) for child in children))
        return [child for child in children if child.judgement is not None]

    def _select(self, nodes: list[Node], k: int) -> list[Node]:
        """The k nodes to keep (BFS) or all of them in visiting order (DFS, k=len)."""
        if self.config.selection == "greedy":
            return sorted(nodes, key=_rank, reverse=True)[:k]
        pool = list(nodes)
        chosen: list[Node] = []
        while pool and len(chosen) < k:
            # A small floor keeps zero-valued nodes reachable, as in the reference code.
            weights = [max(n.value, 0.0) + 1e-3 for n in pool]
            pick = self.rng.choices(range(len(pool)), weights=weights)[0]
            chosen.append(pool.pop(pick))
        return chosen

    # -- strategies ------------------------------------------------------------------

    async def _bfs(self) -> None:
        frontier = [self.root]
        for _ in range(self.config.max_depth):
            levels = await asyncio.gather(*(self._expand(p) for p in frontier))
            children = [c for level in levels for c in level]
            if not children:
                return
            best = max(children, key=_rank)
            if self._passes(best):
                self._found = best
                return
            frontier = self._select(children, self.config.keep_top)

    async def _dfs(self, node: Node) -> Node | None:
        if node.depth >= self.config.max_depth:
            return None
        children = await self._expand(node)
        if not children:
            return None
        best = max(children, key=_rank)
        if self._passes(best):
            return best
        for child in self._select(children, len(children)):
            found = await self._dfs(child)
            if found is not None:
                return found
        return None

    async def _search(self) -> Outcome | None:
        await self._judge(self.root)
        if self.root.judgement is None:
            return "exhausted"
        if self.root.judgement.verdict == "pass":
            return "already_passing"
        if self.config.strategy == "bfs":
            await self._bfs()
        else:
            self._found = await self._dfs(self.root)
        return "refined" if self._found is not None else None

    async def run(self) -> SearchResult:
        start = self.clock()
        wall = self.meter.budget.max_wall_time_s
        outcome: Outcome | None
        try:
            async with asyncio.timeout(wall if math.isfinite(wall) else None):
                outcome = await self._search()
        except TimeoutError:
            outcome = "deadline"
        finally:
            for future in self._cache.values():
                future.cancel()
        if outcome == "refined" and self._found is not None:
            best = self._found
        elif outcome == "already_passing":
            best = self.root
        else:
            # Nothing passed: the best judged node, the original on ties.
            judged = [n for n in self.nodes if n.judgement is not None]
            best = max(judged, key=lambda n: (*_rank(n)[:2], n is self.root), default=self.root)
        return SearchResult(
            best=best,
            outcome=outcome or "exhausted",
            cost=self.meter.cost.snapshot(),
            trace=self._path(best),
            tree=list(self.nodes),
            wall_time_s=self.clock() - start,
        )

    def _path(self, node: Node) -> list[Node]:
        path = [node]
        while path[-1].parent_id >= 0:
            path.append(self.nodes[path[-1].parent_id])
        return path[::-1]
