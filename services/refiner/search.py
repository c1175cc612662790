"""Tree-search refinement (SPaR, DESIGN.md "The iteration", step 3). Pure logic.

The root is the response to refine. Expanding a node asks the model for ``branch``
refinements of it (one engine request, n=branch; ``root_branch`` for the root) from the
node's critique; each usable one becomes a child and is judged.

**Never worse.** The search returns a node other than the original only when that node
passes the end gate (:meth:`Judgement.passes`). Every passing child of a level counts,
not just the top-ranked one. Ranking puts a node that fails any checked constraint or
guardrail below every node that fails none, then orders by the share of constraints
met, then the LLM value (where the LLM voted), then the smaller edit from the original.
When nothing passes, the answer is the original.

- **BFS** (default, the paper's): level by level. All expansions of a level run at
  once, and each child's judge request is sent as soon as its parent's refinements
  arrive, so the engine sees the whole level together and batches it. The search
  stops at the first passing child: once one expansion of a level yields one, the
  level's other expansions are cancelled (their generation aborted) and the best passing
  child judged by then is the answer. Otherwise it keeps the ``keep_top`` best children
  (or a value-proportional sample) and goes on. A node whose children all
  came out worse by the program checks (fewer constraints met, or a guardrail broken
  where it broke none) competes for the next level beside them: refining it again beats
  refining text further from the goal (a small model's rewrites often are).
- **DFS**: expands a node, stops if a child passes, else visits the children in rank
  order (or a value-proportional order) depth first.

Outcomes: ``already_passing`` (the original passes; nothing searched), ``refined``,
``unchanged`` (no refinement was usable, so nothing could be judged), ``exhausted`` (the
whole tree was searched without a pass), ``budget`` (the node or token budget ran out
first), ``deadline`` (the wall-time budget ran out before any node passed; the tree built
so far is reported). A node that passed before the clock ran out, while its level was
still running, is still the answer (``refined``).

A refinement is *unusable* when it was cut at max_tokens, is empty, is identical to its
parent or to another node, or its request cannot fit the model's context even with a
shortened critique and fewer tokens; each is counted by reason and costs no node.

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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from services.refiner.cost import BudgetExhausted, Cost, Meter, UnusableReason
from services.refiner.judge import Judge, Judgement
from spar.edits import normalized_edit_distance
from spar.engine.protocol import GenerationRequest, LoopStop, Message
from spar.errors import InvalidArgument
from spar.refine_templates import Prompts

Strategy = Literal["bfs", "dfs"]
Selection = Literal["greedy", "proportional"]
Outcome = Literal["already_passing", "refined", "unchanged", "exhausted", "budget", "deadline"]
EventKind = Literal["expanded", "judged"]

#: A refinement with less room than this is not worth sending.
MIN_REFINE_TOKENS = 32
#: Room a growth-capped refinement gets beyond refine_growth × its parent's tokens.
GROWTH_MARGIN_TOKENS = 64
#: Checked constraints whose repair may need a much longer response than its parent:
#: at least N words, sentences or paragraphs; two responses; the prompt repeated; and
#: structure the answer must be rebuilt into (N sections, N bullet points). A one-shot
#: measurement found the one success the cap would have cut: a 26-token non-answer whose
#: passing rewrite into two sections took 216 tokens.
_LENGTHENING = (
    "length_constraints:",
    "combination:",
    "detectable_format:multiple_sections",
    "detectable_format:number_bullet_lists",
)
_VERDICT_LINE = re.compile(r"^.*final\s*judg(?:e)?ment.*$", re.IGNORECASE | re.MULTILINE)


class TokenCounter(Protocol):
    """What the search needs of the engine to make its requests fit the context."""

    def prompt_tokens(self, request: GenerationRequest) -> int: ...

    @property
    def max_model_len(self) -> int: ...


@dataclass(frozen=True)
class SearchConfig:
    """How one search explores; budgets are separate (:class:`~services.refiner.cost.Budget`)."""

    strategy: Strategy = "bfs"
    selection: Selection = "greedy"
    branch: int = 3
    """Refinements requested per expanded node."""
    root_branch: int = 0
    """Refinements requested of the original (the root); 0: ``branch``. The original is
    the one node known to be close to the answer asked for (its failures are what the
    critique names); its children are often worse than it. Drawing more of its
    refinements at once costs a level no more wall time on a batching engine."""
    keep_top: int = 2
    """Children a BFS level keeps for the next level."""
    max_depth: int = 3
    end_gate: float = 0.5
    """Where the LLM vote decides, a node passes only with a value above this."""
    refine_temperature: float = 0.7
    refine_top_p: float = 1.0
    refine_max_tokens: int = 320
    """Tokens per refinement: room for a complete rewrite of the response."""
    loop_stop: LoopStop | None = None
    """Ends a refinement early once it loops (unusable: ``loop``); None: never."""
    refine_growth: float = 2.0
    """A refinement of a node whose failures are all program-checked and none asks for
    length may run to at most this many times the node's tokens (plus
    GROWTH_MARGIN_TOKENS, and never below half of refine_max_tokens); 0: no cap. See
    :func:`growth_capped`."""
    parse_retries: int = 1
    """Extra refine requests for refinements that came back unusable."""
    seed: int = 0
    """Seeds the RNG of value-proportional selection (the engine's own sampling is
    seeded by the engine)."""


@dataclass
class Node:
    """One response in the tree; the root (id 0) is the original."""

    id: int
    parent_id: int
    depth: int
    response: str
    reflection: str = ""
    judgement: Judgement | None = None
    expanded: bool = False
    edit_distance: float = 0.0
    """Normalised word edit distance from the original (spar.edits)."""

    @property
    def value(self) -> float:
        return self.judgement.value if self.judgement else 0.0


@dataclass(frozen=True)
class SearchEvent:
    """A node was expanded (its refinement generated) or judged; ``cost`` is a snapshot."""

    kind: EventKind
    node: Node
    cost: Cost


@dataclass(frozen=True)
class SearchResult:
    """What a search found: ``best`` is the original unless a node passed the gate."""

    best: Node
    outcome: Outcome
    cost: Cost
    trace: list[Node]
    tree: list[Node]
    wall_time_s: float

    @property
    def changed(self) -> bool:
        return self.best.id != 0


def rank(node: Node) -> tuple[bool, float, float, float, int]:
    """Higher is better: fails nothing checked, share of constraints met, LLM value,
    smaller edit, earlier node."""
    j = node.judgement
    if j is None:
        return (False, -1.0, -1.0, -node.edit_distance, -node.id)
    llm = j.llm_value if j.llm_value is not None else 0.0
    return (not j.hard_fail, j.constraint_share, llm, -node.edit_distance, -node.id)


def _checked(node: Node) -> tuple[bool, float]:
    """What the program checks say of a judged node: no guardrail broken, share of
    constraints met."""
    j = node.judgement
    assert j is not None
    return (not j.guardrails, j.constraint_share)


def refine_critique(judgement: Judgement) -> str:
    """The critique a refine prompt gets: program complaints first, no verdict line."""
    return _VERDICT_LINE.sub("", judgement.critique).strip() or "The response misses a requirement."


def growth_capped(judgement: Judgement) -> bool:
    """Whether a refinement of a response so judged may be held to ``refine_growth`` ×
    its length.

    Why: a level of the search lasts as long as its longest refinement, and the longest
    are runaway text (rambling, near-loops) that runs to max_tokens and is thrown away;
    a repair of a short answer does not need to be several times its length. Only where
    the program decided every failure (not an LLM vote, whose complaint may be "too
    short") and no failed constraint asks for more length or for a structure the answer
    must be rebuilt into (sections, bullet points).
    """
    if not judgement.hard_fail or judgement.vote_decides:
        return False
    return not any(
        not c.strict and c.instruction_id.startswith(_LENGTHENING) for c in judgement.constraints
    )


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


class TreeSearch:
    """One search over refinements of one response; :meth:`run` once.

    ``judge`` scores each node; ``meter`` makes every engine request and counts it against
    the budget; ``prompts`` are the judge and refine templates; ``config`` is the search's
    shape (strategy, branching, depth, end gate); ``on_event`` hears each node as it is
    expanded and judged; ``clock`` measures the wall-time budget; ``context``, when given,
    counts prompt tokens so that a refine request that would overflow the model's context
    gets a shorter critique or fewer tokens to generate (or is skipped).
    ``nodes`` is the tree, in the order the nodes were made (``root`` first).
    """

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
        context: TokenCounter | None = None,
    ) -> None:
        self.instruction = instruction
        self.judge = judge
        self.meter = meter
        self.prompts = prompts
        self.config = config
        self.on_event = on_event
        self.clock = clock
        self.context = context
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
            edit_distance=normalized_edit_distance(self.root.response, response) if parent else 0.0,
        )
        self.nodes.append(node)
        return node

    def _emit(self, kind: EventKind, node: Node) -> None:
        if self.on_event is not None:
            self.on_event(SearchEvent(kind, dataclasses.replace(node), self.meter.cost.snapshot()))

    def _passes(self, node: Node) -> bool:
        return node.judgement is not None and node.judgement.passes(self.config.end_gate)

    def _unusable(self, reason: UnusableReason) -> None:
        self.meter.cost.count_unusable(reason)

    # -- judging ---------------------------------------------------------------------

    async def _judgement(self, response: str) -> Judgement:
        cached = self._cache.get(response)
        if cached is None:
            cached = asyncio.ensure_future(self._judge_counted(response))
            self._cache[response] = cached
        # Shielded: one waiter's cancellation must not cancel the others' shared result.
        return await asyncio.shield(cached)

    async def _judge_counted(self, response: str) -> Judgement:
        reference = None if response == self.root.response else self.root.response
        judgement = await self.judge.judge(response, reference)
        cost = self.meter.cost
        cost.judgements += 1
        cost.votes_skipped += not judgement.voted
        cost.unparseable_judgements += judgement.vote.unparseable
        for issue in judgement.guardrails:
            cost.guardrail_failures[issue.rule] = cost.guardrail_failures.get(issue.rule, 0) + 1
        return judgement

    async def _judge(self, node: Node) -> None:
        """Judges node in place; leaves it unjudged when the token budget is spent."""
        try:
            node.judgement = await self._judgement(node.response)
        except BudgetExhausted:
            return
        self._emit("judged", node)

    # -- expansion -------------------------------------------------------------------

    def _request(self, parent: Node, n: int) -> GenerationRequest | None:
        """The refine request for parent, made to fit the context; None if it cannot."""
        assert parent.judgement is not None
        c = self.config
        limit = c.refine_max_tokens
        if self.context is not None and c.refine_growth > 0 and growth_capped(parent.judgement):
            grown = int(c.refine_growth * self._tokens(parent.response)) + GROWTH_MARGIN_TOKENS
            limit = min(limit, max(grown, c.refine_max_tokens // 2))
        critique = refine_critique(parent.judgement)
        lines = critique.splitlines()
        # Shorter critiques to fall back on: the first three complaints, then the first.
        critiques = [critique, *("\n".join(lines[:k]) for k in (3, 1) if len(lines) > k)]
        request = GenerationRequest(messages=[], n=n, temperature=c.refine_temperature)
        for text in critiques:
            messages = self.prompts.refine_messages(self.instruction, parent.response, text)
            request = GenerationRequest(
                messages=messages,
                n=n,
                temperature=c.refine_temperature,
                top_p=c.refine_top_p,
                max_tokens=limit,
                stop=self.prompts.stop,
                prefill=self.prompts.prefill,
                loop_stop=c.loop_stop,
            )
            if self.context is None:
                return request
            room = self._room(request)
            if room >= limit:
                return request
        # Still too long with the shortest critique: generate fewer tokens, as long as a
        # complete rewrite of the parent still fits.
        need = max(self._tokens(parent.response) + 16, MIN_REFINE_TOKENS)
        room = self._room(request)
        if room >= need:
            return dataclasses.replace(request, max_tokens=room)
        return None

    def _room(self, request: GenerationRequest) -> int:
        assert self.context is not None
        try:
            return self.context.max_model_len - self.context.prompt_tokens(request)
        except InvalidArgument:  # the prompt alone is longer than the context
            return 0

    def _tokens(self, text: str) -> int:
        assert self.context is not None
        try:
            return self.context.prompt_tokens(
                GenerationRequest(messages=[Message("user", text)], raw=True)
            )
        except InvalidArgument:
            return self.context.max_model_len

    async def _refine(self, parent: Node, wanted: int) -> list[Node]:
        """Up to ``wanted`` usable refinements of parent, within the node budget."""
        pending = self.meter.reserve_nodes(wanted)
        children: list[Node] = []
        c = self.config
        try:
            for _ in range(1 + c.parse_retries):
                if pending == 0:
                    break
                request = self._request(parent, pending)
                if request is None:
                    for _ in range(pending):
                        self._unusable("over_context")
                    break
                parent.expanded = True
                result = await self.meter.generate("refine", request)
                for sample in result.samples:
                    if sample.finish_reason == "length":
                        self._unusable("cut_at_max_tokens")
                        continue
                    if sample.finish_reason == "repetition":
                        self._unusable("loop")
                        continue
                    refinement = self.prompts.parse_refinement(sample.text, sample.finish_reason)
                    if refinement is None:
                        self._unusable("empty")
                        continue
                    if _same(refinement.response, parent.response):
                        self._unusable("identical_to_parent")
                        continue
                    if any(_same(refinement.response, n.response) for n in self.nodes):
                        self._unusable("duplicate")
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
        c = self.config
        wanted = c.root_branch if parent is self.root and c.root_branch > 0 else c.branch
        children = await self._refine(parent, wanted)
        await asyncio.gather(*(self._judge(child) for child in children))
        return [child for child in children if child.judgement is not None]

    def _best_passing(self, children: list[Node]) -> Node | None:
        passing = [c for c in children if self._passes(c)]
        return max(passing, key=rank) if passing else None

    def _select(self, nodes: list[Node], k: int) -> list[Node]:
        """The k nodes to keep (BFS) or all of them in visiting order (DFS, k=len)."""
        if self.config.selection == "greedy":
            return sorted(nodes, key=rank, reverse=True)[:k]
        pool = list(nodes)
        chosen: list[Node] = []
        while pool and len(chosen) < k:
            # A small floor keeps zero-valued nodes reachable, as in the reference code.
            weights = [max(n.value, 0.0) + 1e-3 for n in pool]
            pick = self.rng.choices(range(len(pool)), weights=weights)[0]
            chosen.append(pool.pop(pick))
        return chosen

    # -- strategies ------------------------------------------------------------------

    async def _level(self, frontier: list[Node]) -> list[list[Node]] | None:
        """Expands every node of frontier at once; their judged children, per node.

        Returns None as soon as one expansion yields a passing child (``_found`` is then
        the best passing child judged so far): the level's other expansions are
        cancelled, which aborts their generation in the engine. Waiting for them could
        only trade a passing answer for another passing one with a smaller edit, and it
        would hold the engine (shared with the other searches) and the client for the
        level's slowest refinements, which are mostly runaway text cut at max_tokens.
        """
        first = len(self.nodes)
        tasks = [asyncio.ensure_future(self._expand(p)) for p in frontier]
        try:
            for done in asyncio.as_completed(tasks):
                if any(self._passes(c) for c in await done):
                    self._found = self._best_passing(self.nodes[first:])
                    return None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return [task.result() for task in tasks]

    async def _bfs(self) -> None:
        frontier = [self.root]
        for _ in range(self.config.max_depth):
            levels = await self._level(frontier)
            if levels is None:
                return
            children = [c for level in levels for c in level]
            # A node all of whose children came out worse by the checks stays in the
            # running: the next level may draw new refinements of it, instead of refining
            # text that is further from the goal. (One that got no usable child even with
            # its retries does not: its refine prompt is not working.)
            stay = [
                p for p, level in zip(frontier, levels, strict=True)
                if level and not any(_checked(c) >= _checked(p) for c in level)
            ]  # fmt: skip
            if not children:
                return
            frontier = self._select(children + stay, self.config.keep_top)

    async def _dfs(self, node: Node) -> Node | None:
        if node.depth >= self.config.max_depth:
            return None
        children = await self._expand(node)
        found = self._best_passing(children)
        if found is not None:
            return found
        for child in self._select(children, len(children)):
            found = await self._dfs(child)
            if found is not None:
                return found
        return None

    async def _search(self) -> Outcome:
        await self._judge(self.root)
        if self.root.judgement is None:
            return "budget"
        if self._passes(self.root):
            return "already_passing"
        if self.config.strategy == "bfs":
            await self._bfs()
        else:
            self._found = await self._dfs(self.root)
        if self._found is not None:
            return "refined"
        if len(self.nodes) == 1 and self.meter.cost.unparseable_refinements:
            # Refinements came back and none was usable: that, not a budget that granted
            # fewer than asked (a node budget below the root branch), ended it.
            return "unchanged"
        if self.meter.exhausted:
            return "budget"
        if len(self.nodes) == 1:
            return "unchanged"
        return "exhausted"

    async def run(self) -> SearchResult:
        start = self.clock()
        wall = self.meter.budget.max_wall_time_s
        outcome: Outcome
        try:
            async with asyncio.timeout(wall if math.isfinite(wall) else None):
                outcome = await self._search()
        except TimeoutError:
            # A passing node judged before the clock ran out (its level had not finished)
            # is still a refinement that passed the gate.
            self._found = self._best_passing(self.nodes[1:])
            outcome = "refined" if self._found is not None else "deadline"
        finally:
            for future in self._cache.values():
                future.cancel()
        # Never worse: only a node past the end gate replaces the original.
        best = self._found if outcome == "refined" and self._found is not None else self.root
        return SearchResult(
            best=best,
            outcome=outcome,
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
