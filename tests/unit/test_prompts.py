"""Prompt sources: loaders and their errors, and synthesis of verifiable prompts."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from spar import ifeval, prompt_sets, prompt_synthesis, prompt_tasks
from spar.errors import InvalidArgument
from spar.prompt_sets import PromptRecord
from spar.prompt_tasks import BaseTask
from spar_cli.main import main as spar_main

SAMPLE = Path(__file__).parents[1] / "data" / "ifeval_sample.jsonl"


def _write(tmp_path: Path, name: str, lines: list[Any]) -> Path:
    path = tmp_path / name
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def _ifeval(key: Any = 1, prompt: str = "Say hi.", ids: Any = None, kwargs: Any = None) -> Any:
    return {
        "key": key,
        "prompt": prompt,
        "instruction_id_list": ["punctuation:no_comma"] if ids is None else ids,
        "kwargs": [{}] if kwargs is None else kwargs,
    }


# -- loading -------------------------------------------------------------------------


def test_sample_file_loads_in_the_official_format() -> None:
    records = prompt_sets.load_ifeval(SAMPLE)
    assert len(records) == 8
    assert len({i for r in records for i in r.instruction_id_list}) >= 8
    r = next(r for r in records if r.key == 1002)
    words = {"num_words": 40, "relation": "less than"}
    assert r.constraints == (
        ifeval.Constraint("length_constraints:number_words", words),
        ifeval.Constraint("punctuation:no_comma", {}),
    )
    # Written back, a record is the line it came from.
    first = SAMPLE.read_text().splitlines()[0]
    assert json.loads(prompt_sets.to_jsonl([records[0]])) == json.loads(first)


def test_hugging_face_nulls_are_dropped(tmp_path: Path) -> None:
    # google/IFEval on the Hub lists every kwarg of every type, unused ones null.
    line = _ifeval(
        ids=["length_constraints:number_words"],
        kwargs=[{"num_words": 30, "relation": "less than", "keywords": None, "language": None}],
    )
    [r] = prompt_sets.load_ifeval(_write(tmp_path, "hf.jsonl", [line]))
    assert dict(r.kwargs[0]) == {"num_words": 30, "relation": "less than"}


def test_plain_prompt_lists(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("Name a colour.\n\n  Describe rain.  \n", encoding="utf-8")
    assert prompt_sets.load_prompts(txt) == [
        PromptRecord(1, "Name a colour."),
        PromptRecord(3, "Describe rain."),
    ]
    mixed = _write(tmp_path, "p.jsonl", [{"prompt": "Say hi."}, "", _ifeval(key="k9")])
    a, b = prompt_sets.load_prompts(mixed)
    assert (a.key, a.prompt, a.instruction_id_list) == (1, "Say hi.", ())
    assert (b.key, b.instruction_id_list) == ("k9", ("punctuation:no_comma",))


BAD_LINES: list[tuple[list[Any], str]] = [
    ([_ifeval(), "{not json"], "bad.jsonl:2: not valid JSON"),
    ([["a list"]], "bad.jsonl:1: expected a JSON object, got list"),
    ([{"key": 1, "prompt": "x", "instruction_id_list": []}], "bad.jsonl:1: missing field 'kwargs'"),
    ([_ifeval(ids=["punctuation:no_comma", "detectable_format:title"])],
     "bad.jsonl:1: instruction_id_list has 2 ids but kwargs has 1 objects"),
    ([_ifeval(ids="punctuation:no_comma")], "bad.jsonl:1: instruction_id_list must be a list"),
    ([_ifeval(kwargs=["x"])], "bad.jsonl:1: kwargs must be a list of objects"),
    (["", _ifeval(ids=["keywords:nope"])],
     "bad.jsonl:2: constraints[0]: unknown instruction id 'keywords:nope'"),
    ([_ifeval(kwargs=[{"num_words": 5}])],
     "bad.jsonl:1: constraints[0]: punctuation:no_comma takes"),
    ([_ifeval(ids=["length_constraints:number_words"], kwargs=[{"relation": "less than"}])],
     "bad.jsonl:1: constraints[0]: length_constraints:number_words needs non-empty kwargs"),
    ([_ifeval(ids=["length_constraints:number_words"],
              kwargs=[{"num_words": 5, "relation": "about"}])], "bad.jsonl:1: constraints[0]"),
    ([_ifeval(key=7), _ifeval(key=8), _ifeval(key=7)], "bad.jsonl:3: key 7 repeats line 1"),
    ([_ifeval(prompt="  ")], "bad.jsonl:1: prompt must be a non-empty string"),
    ([_ifeval(key=True)], "bad.jsonl:1: key must be an integer or a non-empty string"),
    ([{"text": "hi"}], "bad.jsonl:1: missing field 'prompt'"),
    (["", "  "], "bad.jsonl: no prompts in the file"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "message"), BAD_LINES, ids=[m for _, m in BAD_LINES])
def test_bad_records_name_file_and_line(tmp_path: Path, lines: list[Any], message: str) -> None:
    path = _write(tmp_path, "bad.jsonl", lines)
    with pytest.raises(InvalidArgument) as err:
        prompt_sets.load_prompts(path)
    assert err.value.message.startswith(str(tmp_path / message)), err.value.message


def test_evaluation_files_need_constraints(tmp_path: Path) -> None:
    plain = _write(tmp_path, "e.jsonl", [_ifeval(), {"prompt": "Say hi."}])
    with pytest.raises(InvalidArgument, match=r"e\.jsonl:2: missing field 'key', "):
        prompt_sets.load_ifeval(plain)
    empty = _write(tmp_path, "f.jsonl", [_ifeval(ids=[], kwargs=[])])
    with pytest.raises(InvalidArgument, match=r"f\.jsonl:1: instruction_id_list is empty"):
        prompt_sets.load_ifeval(empty)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no such file"):
        prompt_sets.load_prompts(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(InvalidArgument, match=r"latin1\.txt: not UTF-8 text \(byte 3\)"):
        prompt_sets.load_prompts(tmp_path / "latin1.txt")


# -- synthesis -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def many() -> list[PromptRecord]:
    return [r for seed in (0, 1, 2) for r in prompt_synthesis.synthesize(250, seed)]


def test_same_seed_same_bytes_other_seed_other_prompts() -> None:
    a, b = (
        prompt_sets.to_jsonl(prompt_synthesis.synthesize(40, 11)),
        prompt_sets.to_jsonl(prompt_synthesis.synthesize(40, 11)),
    )
    assert a == b
    assert prompt_sets.to_jsonl(prompt_synthesis.synthesize(40, 12)) != a
    assert [json.loads(x)["key"] for x in a.splitlines()] == list(range(1, 41))


def test_every_synthesized_record_validates_and_round_trips(many: list[PromptRecord]) -> None:
    for r in many:
        ifeval.validate(r.constraints, r.prompt)
    assert prompt_sets.parse_jsonl(prompt_sets.to_jsonl(many[:250]).splitlines(), "x") == many[:250]


def test_no_conflicting_instructions(many: list[PromptRecord]) -> None:
    from lm_eval.tasks.ifeval import instructions_registry as reg  # type: ignore[import-untyped]

    ifeval_conflicts = reg.conflict_make(copy.deepcopy(reg.INSTRUCTION_CONFLICTS))
    for r in many:
        ids = r.instruction_id_list
        assert len(set(ids)) == len(ids)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                assert b not in ifeval_conflicts[a], (a, b, r.prompt)
                assert (a, b) not in prompt_tasks.EXTRA_CONFLICTS and (
                    b,
                    a,
                ) not in prompt_tasks.EXTRA_CONFLICTS
    # Our table contains IFEval's whole table.
    for a, bs in ifeval_conflicts.items():
        assert bs <= prompt_tasks.CONFLICTS[a], a


def _stated(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value).rstrip(".")]


def test_constraints_are_stated_in_the_prompt(many: list[PromptRecord]) -> None:
    languages = {"de": "German", "fr": "French", "ru": "Russian", "ko": "Korean"}
    for r in many:
        for iid, kw in zip(r.instruction_id_list, r.kwargs, strict=True):
            for name, value in kw.items():
                if name == "language":
                    assert "response should be in" in r.prompt
                    if value in languages:
                        assert languages[value] in r.prompt
                    continue
                for text in _stated(value):
                    assert text in r.prompt, (iid, name, value, r.prompt)


def test_repeat_prompt_is_the_request_before_it(many: list[PromptRecord]) -> None:
    repeats = [r for r in many if "combination:repeat_prompt" in r.instruction_id_list]
    assert repeats
    for r in repeats:
        assert r.instruction_id_list[-1] == "combination:repeat_prompt"
        request = r.kwargs[-1]["prompt_to_repeat"]
        assert r.prompt.startswith(request) and "First repeat the request" not in request
        [ok] = ifeval.check(r.prompt, f"{request} Here is my answer.", [r.constraints[-1]])
        assert ok.strict


def test_variety(many: list[PromptRecord]) -> None:
    assert len(prompt_tasks.BASE_TASKS) >= 60
    assert len({prompt_sets.normalize(r.prompt) for r in many}) > 0.95 * len(many)
    ids = Counter(i for r in many for i in r.instruction_id_list)
    assert set(ids) == set(ifeval.INSTRUCTION_IDS), set(ifeval.INSTRUCTION_IDS) - set(ids)
    assert Counter(len(r.instruction_id_list) for r in many).keys() == {1, 2, 3}
    tasks = {t.text for t in prompt_tasks.BASE_TASKS}
    used = {next(t for t in tasks if r.prompt.startswith(t)) for r in many}
    assert len(used) >= 55
    words = {
        kw["num_words"]
        for r in many
        for iid, kw in zip(r.instruction_id_list, r.kwargs, strict=True)
        if iid == "length_constraints:number_words"
    }
    assert len(words) >= 10


def test_constrained_response_only_for_yes_no_questions(many: list[PromptRecord]) -> None:
    questions = {t.text for t in prompt_tasks.BASE_TASKS if t.yes_no}
    constrained = [
        r for r in many if "detectable_format:constrained_response" in r.instruction_id_list
    ]
    assert constrained
    for r in constrained:
        assert r.instruction_id_list == ("detectable_format:constrained_response",)
        assert any(r.prompt.startswith(q) for q in questions)


def test_exclusion_is_whitespace_and_case_blind() -> None:
    base = prompt_synthesis.synthesize(30, 5)
    # The evaluation file holds a third of those prompts, spaced and cased differently.
    held_out = [" ".join(r.prompt.upper().split()).replace(" ", "  \n") for r in base[::3]]
    out = prompt_synthesis.synthesize(30, 5, exclude=held_out)
    assert len(out) == 30
    banned = {prompt_sets.normalize(p) for p in held_out}
    assert not banned & {prompt_sets.normalize(r.prompt) for r in out}
    # The prompts that were not excluded are still drawn; the excluded ones are replaced.
    assert {r.prompt for r in base} - {base[i].prompt for i in range(0, 30, 3)} <= {
        r.prompt for r in out
    }


def test_fails_clearly_when_n_distinct_prompts_are_impossible() -> None:
    one = [BaseTask("Describe rain.", ("rain",))]
    only = prompt_synthesis.synthesize(1, 0, tasks=one, instruction_ids=["punctuation:no_comma"])
    assert only[0].prompt == (
        "Describe rain. In your entire response, refrain from the use of any commas."
    )
    with pytest.raises(InvalidArgument, match="could synthesize only 1 of 2 distinct prompts"):
        prompt_synthesis.synthesize(2, 0, tasks=one, instruction_ids=["punctuation:no_comma"])
    with pytest.raises(InvalidArgument, match="only 0 of 1"):
        prompt_synthesis.synthesize(
            1, 0, [only[0].prompt.lower()], tasks=one, instruction_ids=["punctuation:no_comma"]
        )
    with pytest.raises(InvalidArgument, match="are not IFEval ids"):
        prompt_synthesis.synthesize(1, 0, instruction_ids=["keywords:nope"])


def test_cli_synth_writes_what_the_library_synthesizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train.jsonl"
    assert spar_main(["prompts", "synth", "--n", "12", "--seed", "4", "--exclude", str(SAMPLE),
                      "--out", str(out)]) == 0  # fmt: skip
    held_out = [r.prompt for r in prompt_sets.load_ifeval(SAMPLE)]
    assert out.read_text(encoding="utf-8") == prompt_sets.to_jsonl(
        prompt_synthesis.synthesize(12, 4, held_out)
    )
    capsys.readouterr()
    assert spar_main(["prompts", "synth", "--n", "3", "--seed", "4"]) == 0
    assert capsys.readouterr().out == prompt_sets.to_jsonl(prompt_synthesis.synthesize(3, 4))
    bad = _write(tmp_path, "bad.jsonl", [_ifeval(ids=["keywords:nope"])])
    assert spar_main(["prompts", "synth", "--n", "3", "--seed", "4", "--exclude", str(bad)]) == 1
    assert f"{bad}:1: constraints[0]: unknown instruction id" in capsys.readouterr().err


# -- the held-out split ----------------------------------------------------------------


def test_split_holds_out_tasks_of_both_kinds_and_is_fixed_by_its_seed() -> None:
    split = prompt_synthesis.Split(1_000_003)
    held = split.held_out_tasks()
    assert (
        held
        == prompt_synthesis.Split(1_000_003).held_out_tasks()
        != prompt_synthesis.Split(5).held_out_tasks()
    )
    assert 0.2 <= len(held) / len(prompt_tasks.BASE_TASKS) <= 0.3
    assert any(t.yes_no for t in held) and any(t.yes_no for t in split.tasks("train"))
    assert set(held).isdisjoint(split.tasks("train"))
    assert set(held) | set(split.tasks("train")) == set(prompt_tasks.BASE_TASKS)


def test_training_and_held_out_prompts_share_no_task_and_no_combination() -> None:
    from services.coordinator import inputs
    from spar.config import CoordinatorSettings

    c = CoordinatorSettings(num_prompts=300, eval_prompts=120)
    held = inputs.eval_prompts(c)
    train = inputs.train_prompts(c, 1, "", held)  # runs check_split itself
    assert len(held) == 120 and len(train) == 300
    held_tasks = {t.text for t in inputs.SPLIT.held_out_tasks()}
    assert all(prompt_synthesis.task_of(r.prompt).text in held_tasks for r in held)  # type: ignore[union-attr]
    assert not any(prompt_synthesis.task_of(r.prompt).text in held_tasks for r in train)  # type: ignore[union-attr]
    train_combos = {prompt_synthesis.combination(r.instruction_id_list) for r in train}
    assert not any(
        prompt_synthesis.combination(r.instruction_id_list) in train_combos for r in held
    )
    assert all(inputs.SPLIT.combination_held_out(r.instruction_id_list) for r in held)
    # Single constraints are combinations too: some types are held out alone.
    assert any(len(r.instruction_id_list) == 1 for r in held)


def test_check_split_refuses_a_leak_of_task_or_combination() -> None:
    split = prompt_synthesis.Split(1_000_003)
    held = split.synthesize("held_out", 20, 3)
    train = split.synthesize("train", 50, 4)
    prompt_synthesis.check_split(train, held, split)
    leak = held[0]
    # A training prompt on a held-out task (but a training combination).
    same_task = next(
        r
        for r in prompt_synthesis.synthesize(400, 9, tasks=[prompt_synthesis.task_of(leak.prompt)])  # type: ignore[list-item]
        if not split.combination_held_out(r.instruction_id_list)
    )
    with pytest.raises(InvalidArgument, match="uses the base task"):
        prompt_synthesis.check_split([*train, same_task], held, split)
    # A training prompt with a held-out combination (on a training task).
    same_combo = prompt_sets.PromptRecord(
        "x", train[0].prompt, leak.instruction_id_list, leak.kwargs
    )
    with pytest.raises(InvalidArgument, match="constraint combination"):
        prompt_synthesis.check_split([*train, same_combo], held, split)
    # A held-out prompt that is on the training side of the split.
    with pytest.raises(InvalidArgument, match="not built on a held-out base task"):
        prompt_synthesis.check_split([], [train[0]], split)
