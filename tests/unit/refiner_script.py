"""A deterministic scripted engine for the refiner's pure logic (no model, no I/O).

Prompts use tiny templates so the script can read them: the judge prompt is
``JUDGE|<instruction>|<response>``; a paper-style refine request is the judge conversation
plus a ``REFINE`` turn, a direct one is ``REFINE|<instruction>|<response>|<critique>``. A
refinement of ``p`` is named ``p.k`` (k counts per parent), so tree shapes are readable in
assertions. A scripted refinement starting with ``<cut>`` comes back cut at max_tokens, one
starting with ``<loop>`` stopped in a loop (finish reason ``repetition``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from spar.engine.protocol import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    Sample,
    Usage,
)
from spar.refine_templates import Prompts

PROMPTS = Prompts(judge="JUDGE|{instruction}|{response}|{notes}", refine="REFINE", style="paper")
DIRECT = Prompts(
    judge="JUDGE|{instruction}|{response}|{notes}",
    refine="REFINE|{instruction}|{response}|{critique}",
)


def yes(text: str = "ok") -> str:
    return f"{text}\nFinal Judgement: Yes"


def no(text: str = "misses a requirement") -> str:
    return f"{text}\nFinal Judgement: No"


@dataclass
class Call:
    kind: str  # "judge" or "refine"
    subject: str  # the judged response, or the parent of a refinement
    n: int
    max_tokens: int
    started: float
    in_flight_at_start: int
    request: GenerationRequest


@dataclass
class Script:
    """Judge samples per response and refinement texts per parent, all scripted.

    ``judge``: response -> list of sample texts, cycled (default: all "No").
    ``refine``: parent -> callable(k) giving the raw refine output of the k-th child
    (default: a well-formed refinement named ``parent.k``).
    """

    judge: dict[str, list[str]] = field(default_factory=dict)
    refine: dict[str, Callable[[int], str]] = field(default_factory=dict)
    delay: float = 0.01
    delays: dict[str, float] = field(default_factory=dict)
    """Per subject (the judged response, or the parent of a refinement): its calls' delay."""
    tokens_per_sample: int = 4
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    generated: int = 0
    _children: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _judge_pos: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def __call__(self, request: GenerationRequest) -> GenerationResult:
        first = request.messages[0].content
        direct = first.startswith("REFINE|")
        _, _instruction, response = first.split("|", 3)[:3]
        kind = "refine" if direct or len(request.messages) > 1 else "judge"
        loop = asyncio.get_running_loop()
        self.calls.append(
            Call(
                kind, response, request.n, request.max_tokens, loop.time(), self.in_flight, request
            )
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delays.get(response, self.delay))
        finally:
            self.in_flight -= 1
        samples = []
        for i in range(request.n):
            if kind == "judge":
                texts = self.judge.get(response, [no()])
                text = texts[self._judge_pos[response] % len(texts)]
                self._judge_pos[response] += 1
            else:
                self._children[response] += 1
                k = self._children[response]
                make = self.refine.get(response)
                if make:
                    text = make(k)
                elif direct:
                    text = f"{response}.{k}"
                else:
                    text = f"fix it\nFinal Refined Output: [[start]] {response}.{k} "
            tokens = min(self.tokens_per_sample, request.max_tokens)
            reason: FinishReason = "stop"
            for marker, why in (("<cut>", "length"), ("<loop>", "repetition")):
                if text.startswith(marker):
                    text, reason = text.removeprefix(marker), why
            samples.append(Sample(i, text, reason, tokens))
        used = sum(s.completion_tokens for s in samples)
        self.generated += used
        return GenerationResult(samples, Usage(prompt_tokens=len(first), completion_tokens=used))

    def judged(self) -> list[str]:
        return [c.subject for c in self.calls if c.kind == "judge"]

    def refined(self) -> list[str]:
        return [c.subject for c in self.calls if c.kind == "refine"]
