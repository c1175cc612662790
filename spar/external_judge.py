"""The outside judge: any OpenAI-compatible chat endpoint, as a guard against self-evaluation bias.

A model that judges its own answers shares its own blind spots. spar sends a fixed share
of its judgements (``SPAR_EXTERNAL_JUDGE__SAMPLE_FRACTION``, 5 % by default) to an outside
model as well — OpenAI, a vLLM server with a larger model, anything that speaks
``POST /chat/completions`` — and exports how often the two agree, per criterion
(``spar_external_judge_agreement_total``), so a drop shows on the dashboard and alerts.
The judge kind ``external`` uses the outside model as the judge itself.

The outside judge is asked about every requirement separately and answers in JSON
(``{"requirements": {"<id>": true|false, ...}, "overall": true|false}``), forced by a JSON
Schema where the endpoint supports one (OpenAI, vLLM). Agreement is counted per
requirement against what spar decided on it: the program for checkable constraints, the
LLM's vote for rubric criteria, the verdict for ``overall``.

Sampling is deterministic (a hash of instruction and response), so a resumed iteration
shadows the same judgements. When the outside judge is down or slow, judgements carry on
without it: the failure is counted (``spar_external_judgements_total{result="failed"}``),
``spar_external_judge_up`` drops to 0, one log line says so, and sampled judgements skip
it for ``retry_after_failure_s`` before the next try.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from spar.config import ExternalJudgeSettings
from spar.errors import FailedPrecondition, InvalidArgument, Unavailable
from spar.metrics import Metrics

log = logging.getLogger(__name__)

OVERALL = "overall"
"""The criterion label of the verdict as a whole."""
RESULTS = ("ok", "unreadable", "failed", "skipped_down", "dropped")
"""Outcomes of a sampled judgement's call to the outside judge."""

SYSTEM_PROMPT = (
    "You are a strict, impartial evaluator of AI assistant responses. You check a response "
    "against each listed requirement separately and answer only with JSON."
)


@dataclass(frozen=True)
class Requirement:
    """One thing the outside judge decides: a criterion id and the requirement in words."""

    id: str
    text: str


@dataclass(frozen=True)
class ExternalVerdict:
    """What the outside judge said; ``overall`` is None when its answer was unreadable."""

    overall: bool | None
    requirements: Mapping[str, bool] = field(default_factory=dict)
    text: str = ""
    """The outside judge's raw answer."""
    model: str = ""


@dataclass(frozen=True)
class SelfDecisions:
    """What spar decided: the verdict, and per requirement id (what it decided on)."""

    overall: bool | None
    requirements: Mapping[str, bool] = field(default_factory=dict)


# -- pure parts ----------------------------------------------------------------------


def messages(
    instruction: str, response: str, requirements: Sequence[Requirement]
) -> list[dict[str, str]]:
    """The chat the outside judge gets."""
    if requirements:
        listed = "\n".join(f"- [{r.id}] {r.text}" for r in requirements)
        asked = (
            "Requirements (check each one; the id is in brackets):\n"
            f"{listed}\n\n"
            "Also decide `overall`: true only if the response follows the instruction well "
            "and meets every requirement.\n"
        )
        example = ", ".join(f'"{r.id}": true' for r in requirements[:2])
        shape = f'{{"requirements": {{{example}}}, "overall": true}}'
    else:
        asked = "Decide `overall`: true only if the response follows the instruction well.\n"
        shape = '{"requirements": {}, "overall": true}'
    user = (
        f"Instruction:\n<<<\n{instruction}\n>>>\n\n"
        f"Response:\n<<<\n{response}\n>>>\n\n"
        f"{asked}\n"
        f"Answer with one JSON object shaped like {shape} (false where a requirement is not met)."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def answer_schema(requirements: Sequence[Requirement]) -> dict[str, Any]:
    """The JSON Schema the answer must meet (for endpoints that enforce one)."""
    ids = [r.id for r in requirements]
    return {
        "type": "object",
        "properties": {
            "requirements": {
                "type": "object",
                "properties": {i: {"type": "boolean"} for i in ids},
                "required": ids,
                "additionalProperties": False,
            },
            "overall": {"type": "boolean"},
        },
        "required": ["requirements", "overall"],
        "additionalProperties": False,
    }


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_answer(text: str, requirements: Sequence[Requirement]) -> ExternalVerdict:
    """The verdict in the outside judge's text; overall None when it cannot be read.
    Requirements it did not answer are left out (never guessed)."""
    doc: Any = None
    candidates = [text.strip()]
    found = _OBJECT.search(text)
    if found:
        candidates.append(found.group(0))
    for candidate in candidates:
        try:
            doc = json.loads(candidate)
            break
        except ValueError:
            continue
    if not isinstance(doc, dict) or not isinstance(doc.get(OVERALL), bool):
        return ExternalVerdict(None, {}, text)
    got = doc.get("requirements")
    known = {r.id for r in requirements}
    decided = (
        {k: v for k, v in got.items() if k in known and isinstance(v, bool)}
        if isinstance(got, dict)
        else {}
    )
    return ExternalVerdict(doc[OVERALL], decided, text)


def agreement(own: SelfDecisions, outside: ExternalVerdict) -> dict[str, bool]:
    """Per criterion (and ``overall``) that both decided: True where they agree."""
    out: dict[str, bool] = {}
    if own.overall is not None and outside.overall is not None:
        out[OVERALL] = own.overall == outside.overall
    for rid, mine in own.requirements.items():
        theirs = outside.requirements.get(rid)
        if theirs is not None:
            out[rid] = mine == theirs
    return out


def sampled(fraction: float, *parts: str) -> bool:
    """Whether a judgement is in the sample: deterministic in its parts."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    h = zlib.crc32("\0".join(parts).encode())
    return h < fraction * 2**32


# -- metrics -------------------------------------------------------------------------


class ExternalJudgeMetrics:
    """The outside judge's families (docs/metrics.md) on a server's registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.service = metrics.service
        self.judgements = metrics.counter(
            "spar_external_judgements",
            "Judgements sent to the outside judge, by result.",
            ["result"],
        )
        for result in RESULTS:
            self.judgements.labels(self.service, result)
        self.agreement = metrics.counter(
            "spar_external_judge_agreement",
            "Decisions both judges made, per criterion, by agree/disagree.",
            ["criterion", "agreement"],
        )
        self.up = metrics.gauge(
            "spar_external_judge_up", "1 while the outside judge answers (0 after a failed call)."
        )
        self.latency = metrics.histogram(
            "spar_external_judge_duration_seconds",
            "Latency of the outside judge's answers.",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 40, 80),
        )

    def result(self, result: str) -> None:
        self.judgements.labels(self.service, result).inc()

    def agreed(self, per_criterion: Mapping[str, bool]) -> None:
        for criterion, same in per_criterion.items():
            label = "agree" if same else "disagree"
            self.agreement.labels(self.service, criterion, label).inc()


# -- the client ----------------------------------------------------------------------


class ExternalJudge:
    """Client of one OpenAI-compatible chat endpoint, with sampling and agreement."""

    def __init__(
        self,
        settings: ExternalJudgeSettings,
        metrics: ExternalJudgeMetrics | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not settings.url:
            raise InvalidArgument("the outside judge needs a URL (SPAR_EXTERNAL_JUDGE__URL)")
        if not settings.model:
            raise InvalidArgument(
                "the outside judge needs a model name (SPAR_EXTERNAL_JUDGE__MODEL)"
            )
        self.settings = settings
        self.metrics = metrics
        self.url = settings.url.rstrip("/") + "/chat/completions"
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._down_until = 0.0
        self._in_flight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._key_cache: tuple[float, str] = (0.0, "")
        if metrics is not None:
            metrics.up.labels(metrics.service).set(1)

    @classmethod
    def from_settings(
        cls, settings: ExternalJudgeSettings, metrics: ExternalJudgeMetrics | None = None
    ) -> ExternalJudge | None:
        """The configured outside judge, or None when no URL is set."""
        if not settings.url:
            return None
        return cls(settings, metrics)

    def _api_key(self) -> str:
        path = self.settings.api_key_file
        if not path:
            return self.settings.api_key
        try:
            mtime = Path(path).stat().st_mtime
            if mtime != self._key_cache[0]:
                self._key_cache = (mtime, Path(path).read_text().strip())
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot read the outside judge's API key file {path}: {exc.strerror or exc}"
            ) from None
        return self._key_cache[1]

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout_s), transport=self._transport
            )
        return self._client

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _body(self, instruction: str, response: str, reqs: Sequence[Requirement]) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "model": s.model,
            "messages": messages(instruction, response, reqs),
            "temperature": 0.0,
            "max_tokens": s.max_tokens,
        }
        if s.response_format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judgement", "schema": answer_schema(reqs)},
            }
        elif s.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    async def judge(
        self, instruction: str, response: str, requirements: Sequence[Requirement]
    ) -> ExternalVerdict:
        """Asks the outside judge once. Unavailable when it cannot be reached, answers
        with an error status or times out; FailedPrecondition when it refuses the key."""
        headers = {"Content-Type": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = self._body(instruction, response, requirements)
        start = time.monotonic()
        try:
            reply = await self._http().post(self.url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise Unavailable(
                f"the outside judge at {self.url} did not answer within "
                f"{self.settings.timeout_s:g} s (SPAR_EXTERNAL_JUDGE__TIMEOUT_S)"
            ) from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"the outside judge at {self.url} is unreachable: {exc}") from None
        if self.metrics is not None:
            self.metrics.latency.labels(self.metrics.service).observe(time.monotonic() - start)
        if reply.status_code in (401, 403):
            raise FailedPrecondition(
                f"the outside judge at {self.url} refused the API key (HTTP {reply.status_code}); "
                "check SPAR_EXTERNAL_JUDGE__API_KEY_FILE"
            )
        if reply.status_code != 200:
            raise Unavailable(
                f"the outside judge at {self.url} answered HTTP {reply.status_code}: "
                f"{reply.text[:300]}"
            )
        try:
            doc = reply.json()
            text = doc["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise Unavailable(
                f"the outside judge at {self.url} sent no chat completion: {reply.text[:300]}"
            ) from None
        verdict = parse_answer(text, requirements)
        return ExternalVerdict(
            verdict.overall, verdict.requirements, verdict.text, str(doc.get("model", ""))
        )

    # -- shadowing a sample of spar's own judgements ---------------------------------------

    def wants(self, instruction: str, response: str) -> bool:
        """Whether this judgement is in the sample."""
        return sampled(self.settings.sample_fraction, instruction, response)

    async def compare(
        self,
        instruction: str,
        response: str,
        requirements: Sequence[Requirement],
        own: SelfDecisions,
    ) -> dict[str, bool] | None:
        """Asks the outside judge about a judgement spar made and counts the agreement;
        None when the outside judge was skipped, failed or unreadable (counted too).
        Never raises: judgements carry on without the outside judge."""
        m = self.metrics
        if time.monotonic() < self._down_until:
            self._count("skipped_down")
            return None
        if self._in_flight >= self.settings.max_in_flight:
            self._count("dropped")
            return None
        self._in_flight += 1
        try:
            outside = await self.judge(instruction, response, requirements)
        except (Unavailable, FailedPrecondition) as exc:
            self._down_until = time.monotonic() + self.settings.retry_after_failure_s
            if m is not None:
                m.up.labels(m.service).set(0)
            self._count("failed")
            log.warning(
                "outside judge failed, judgements carry on without it (next try in %g s): %s",
                self.settings.retry_after_failure_s,
                exc.message,
            )
            return None
        finally:
            self._in_flight -= 1
        if m is not None:
            m.up.labels(m.service).set(1)
        if outside.overall is None:
            self._count("unreadable")
            log.info("outside judge answer unreadable: %r", outside.text[:200])
            return None
        self._count("ok")
        agreed = agreement(own, outside)
        if m is not None:
            m.agreed(agreed)
        return agreed

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.result(result)

    def compare_soon(
        self,
        instruction: str,
        response: str,
        requirements: Sequence[Requirement],
        own: SelfDecisions,
    ) -> bool:
        """Schedules :meth:`compare` in the background when the judgement is sampled (the
        caller never waits for the outside judge); True when it was."""
        if not self.wants(instruction, response):
            return False
        task = asyncio.get_running_loop().create_task(
            self.compare(instruction, response, requirements, own)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Waits for the comparisons in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
