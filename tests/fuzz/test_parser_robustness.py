"""Model outputs that break every parser never crash a search: no verdict line, no
[[start]]/[[end]], unbalanced markers, megabytes of text, binary junk. The search returns
a result (often without improvement) and never raises. Scripted engine, no model."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.refiner.cost import Budget, Meter
from services.refiner.judge import Judge, JudgeConfig
from services.refiner.search import SearchConfig, TreeSearch
from spar.engine.protocol import FinishReason, GenerationRequest, GenerationResult, Sample, Usage
from spar.refine_templates import parse_judgement, parse_refinement
from tests.fuzz.fuzz_support import CASES, FUZZ
from tests.unit.refiner_script import PROMPTS

# Over a megabyte: far past any answer a model writes, and big enough that a quadratic
# step in a parser or the search would take minutes. Each case scans it a few dozen
# times (diffs, guardrails), so twice the size only doubles the time the cases take.
MEGABYTES = "lorem ipsum " * 100_000  # 1.2 MB
JUNK = [
    "",
    " \n\t ",
    "The response is fine I think",  # no verdict line
    "Final Judgement:",  # a verdict line without a verdict
    "Final Judgement: Maybe",
    "Final Judgement: Yes No Yes",
    "[[start]]",  # unbalanced markers
    "[[end]] text [[start]]",
    "[[start]] [[end]]",
    "Final Refined Output: [[start]]",
    "Final Refined Output:",
    "[[start]][[start]][[start]] x",
    "[[ END ]] only an end",
    MEGABYTES,
    MEGABYTES + "\nFinal Judgement: No",
    "[[start]]" + MEGABYTES,
    "\x00\x01\x02\ufffd\udc80".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    bytes(range(256)).decode("latin-1"),
    "\u202e\u200b\ufeff" * 1000,
    "🙂" * 100_000,
]


class JunkEngine:
    """Answers every judge request with judge_text and every refine request with
    refine_text, finishing with finish (stop or length)."""

    def __init__(self, judge_text: str, refine_text: str, finish: str = "stop") -> None:
        self.judge_text = judge_text
        self.refine_text = refine_text
        self.finish = finish
        self.calls = 0

    async def __call__(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        refine = len(request.messages) > 1
        text = self.refine_text if refine else self.judge_text
        samples = [Sample(i, text, self.finish, 3) for i in range(request.n)]  # type: ignore[arg-type]
        return GenerationResult(samples, Usage(prompt_tokens=10, completion_tokens=3 * request.n))


async def run_search(engine: JunkEngine, strategy: str = "bfs") -> None:
    meter = Meter(engine, Budget(max_nodes=6, max_generated_tokens=10_000, max_wall_time_s=30))
    judge = Judge(
        "llm", "inst", (), prompts=PROMPTS,
        config=JudgeConfig(samples=3, max_tokens=8, tie_resample_rounds=1),
        generate=meter.for_phase("judge"), check=lambda _i, _r, _c: [],
    )  # fmt: skip
    search = TreeSearch(
        "inst", "original response", judge=judge, meter=meter, prompts=PROMPTS,
        config=SearchConfig(strategy=strategy, max_depth=2, refine_max_tokens=8),  # type: ignore[arg-type]
    )  # fmt: skip
    result = await search.run()
    CASES["parsers"] += 1
    assert result.outcome in (
        "already_passing", "refined", "unchanged", "exhausted", "budget", "deadline"
    )  # fmt: skip
    assert result.best is not None
    assert isinstance(result.best.response, str)
    if result.outcome != "refined":  # never worse: nothing passed, so the original stays
        assert result.best.response == "original response" and result.best.id == 0


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
async def test_junk_judge_and_refine_outputs_never_crash_a_search(junk: str) -> None:
    await run_search(JunkEngine(junk, junk))


@pytest.mark.parametrize("junk", JUNK[:13], ids=range(13))
async def test_junk_refinements_after_a_clear_no(junk: str) -> None:
    engine = JunkEngine("bad\nFinal Judgement: No", junk)
    await run_search(engine, "dfs")
    assert engine.calls >= 2  # the root was judged, and refinement was tried


async def test_cut_off_refinements_are_unusable_not_fatal() -> None:
    engine = JunkEngine("Final Judgement: No", "Final Refined Output: [[start]] x", "length")
    await run_search(engine)


@FUZZ
@given(text=st.text(max_size=2000), finish=st.sampled_from(get_args(FinishReason)))
def test_parsers_accept_any_text(text: str, finish: str) -> None:
    CASES["parsers"] += 1
    assert parse_judgement(text) in (True, False, None)
    r = parse_refinement(text, finish)
    assert r is None or (r.response.strip() and r.response == r.response.strip())
    assert r is None or finish not in ("length", "repetition")  # an unfinished text is unusable


@FUZZ
@given(
    judge_text=st.one_of(st.text(max_size=300), st.sampled_from(JUNK[:13])),
    refine_text=st.one_of(st.text(max_size=300), st.sampled_from(JUNK[:13])),
)
async def test_searches_survive_any_model_text(judge_text: str, refine_text: str) -> None:
    await run_search(JunkEngine(judge_text, refine_text))
