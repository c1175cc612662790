"""Criteria packs: every checkable kind, rubrics, errors that name file, criterion and
field, the folder registry with reload, the published schema and the example pack."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from spar.criteria import CriteriaRegistry
from spar.criteria_packs import load_pack, parse_pack
from spar.criterion_types import count_units, detect_language, json_schema
from spar.errors import InvalidArgument
from spar.ifeval import Constraint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "criteria" / "support.yaml"
SCHEMA = ROOT / "docs" / "criteria-pack.schema.json"


def registry_with(tmp_path: Path, *packs: str) -> CriteriaRegistry:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(packs):
        (tmp_path / f"pack{i}.yaml").write_text(text)
    reg = CriteriaRegistry(tmp_path, reload_interval_s=0)
    reg.load()
    return reg


def one(kind: str, **fields: object) -> str:
    """A pack with a single criterion ``t/c`` of the given kind."""
    return json.dumps({"name": "t", "criteria": [{"id": "c", "type": kind, **fields}]})


def check(tmp_path: Path, pack: str, response: str, instruction: str = "Reply.") -> tuple:
    reg = registry_with(tmp_path, pack)
    (result,) = reg.check(instruction, response, [Constraint("t/c")])
    assert result.instruction_id == "t/c" and result.error == ""
    return result.strict, result.loose


# -- checkable kinds ---------------------------------------------------------------------


def test_regex_must_and_must_not_match(tmp_path: Path) -> None:
    must = one("regex", pattern=r"case \d{4,}", ignore_case=True)
    assert check(tmp_path / "a", must, "About CASE 48213: done.") == (True, True)
    assert check(tmp_path / "b", must, "About your case: done.") == (False, False)
    never = one("regex", pattern=r"\bINT-\d+", must_match=False)
    assert check(tmp_path / "c", never, "Fixed.") == (True, True)
    assert check(tmp_path / "d", never, "See INT-4411.") == (False, False)


def test_keywords_present_with_counts(tmp_path: Path) -> None:
    pack = one("keywords_present", keywords=["refund", "order"], min_count=2, max_count=3)
    ok = "Your refund for the order: the refund covers the whole order."
    assert check(tmp_path / "a", pack, ok)[0]
    assert not check(tmp_path / "b", pack, "Your refund for the order.")[0]
    four = "refund " * 4 + "order order"
    assert not check(tmp_path / "c", pack, four)[0], "more than max_count"
    anyone = one("keywords_present", keywords=["refund", "voucher"], match="any")
    assert check(tmp_path / "d", anyone, "Here is a voucher.")[0]
    whole = one("keywords_present", keywords=["cat"])
    assert not check(tmp_path / "e", whole, "A category.")[0], "whole words only"
    part = one("keywords_present", keywords=["thank"], whole_words=False)
    assert check(tmp_path / "f", part, "Thanks a lot!")[0], "case-insensitive substring"


def test_keywords_absent(tmp_path: Path) -> None:
    pack = one("keywords_absent", keywords=["your fault", "obviously"])
    assert check(tmp_path / "a", pack, "We will fix it.")[0]
    assert not check(tmp_path / "b", pack, "Obviously, it was your fault.")[0]


def test_length_in_words_sentences_and_paragraphs(tmp_path: Path) -> None:
    text = "Hello there. We fixed it! Does it work now?\n\nBest regards, Ann's team."
    assert count_units(text, "words") == 13
    assert count_units(text, "sentences") == 4
    assert count_units(text, "paragraphs") == 2
    assert check(tmp_path / "a", one("length", unit="words", max=13), text)[0]
    assert not check(tmp_path / "b", one("length", unit="words", max=12), text)[0]
    assert check(tmp_path / "c", one("length", unit="sentences", min=2, max=4), text)[0]
    assert not check(tmp_path / "d", one("length", unit="paragraphs", min=3), text)[0]


def test_json_against_a_schema(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "required": ["status", "eta_days"],
        "properties": {"status": {"enum": ["open", "closed"]}, "eta_days": {"type": "integer"}},
    }
    pack = one("json", schema=schema)
    assert check(tmp_path / "a", pack, '{"status": "open", "eta_days": 2}') == (True, True)
    fenced = '```json\n{"status": "closed", "eta_days": 0}\n```'
    assert check(tmp_path / "b", pack, fenced)[0]
    reg = registry_with(tmp_path / "c", pack)
    (bad,) = reg.check("x", '{"status": "lost", "eta_days": 2}', [Constraint("t/c")])
    assert not bad.strict and "status" in bad.description and "lost" in bad.description
    (broken,) = reg.check("x", "{status: open}", [Constraint("t/c")])
    assert not broken.strict and "not valid JSON" in broken.description
    no_fence = one("json", allow_code_fence=False)
    assert not check(tmp_path / "d", no_fence, fenced)[0]


def test_starts_and_ends_with(tmp_path: Path) -> None:
    starts = one("starts_with", text=["Hello", "Hi"])
    assert check(tmp_path / "a", starts, "  hi Sam, thanks.")[0], "case-insensitive by default"
    assert not check(tmp_path / "b", starts, "Dear Sam")[0]
    exact = one("starts_with", text="Hello", case_sensitive=True)
    assert not check(tmp_path / "c", exact, "hello Sam")[0]
    ends = one("ends_with", text="Best regards, Support")
    assert check(tmp_path / "d", ends, "Done.\nBest regards, Support\n")[0]
    assert not check(tmp_path / "e", ends, "Done.")[0]


def test_loose_drops_a_first_or_last_line_as_ifeval_does(tmp_path: Path) -> None:
    ends = one("ends_with", text="Best regards")
    assert check(tmp_path, ends, "Done.\nBest regards\nP.S. ignore") == (False, True)


def test_language(tmp_path: Path) -> None:
    german = one("language", language="de")
    text = "Vielen Dank für Ihre Nachricht. Wir kümmern uns sofort um Ihre Bestellung."
    assert check(tmp_path / "a", german, text)[0]
    english = "Thank you for your message. We will look after your order right away."
    assert not check(tmp_path / "b", german, english)[0]
    assert detect_language(english) == "en"


def test_ifeval_checkers_inside_a_pack(tmp_path: Path) -> None:
    pack = one("ifeval", instruction_id="punctuation:no_comma")
    assert check(tmp_path / "a", pack, "No commas here.")[0]
    assert not check(tmp_path / "b", pack, "Commas, here.")[0]


# -- rubrics and the CheckFn --------------------------------------------------------------


def test_example_pack_splits_into_checked_and_rubric(tmp_path: Path) -> None:
    (tmp_path / "support.yaml").write_text(EXAMPLE.read_text())
    reg = CriteriaRegistry(tmp_path)
    reg.load()
    constraints = reg.expand(["support"])
    assert [c.instruction_id for c in constraints][:2] == [
        "support/greeting",
        "support/case_number",
    ]
    checkable, rubric = reg.split(constraints)
    assert [c.instruction_id for c in rubric] == ["support/polite_no_apology", "support/next_step"]
    assert reg.rubrics(constraints) == [
        "Polite and warm, but it does not apologise for things that are not the company's fault.",
        "Tells the customer exactly what happens next, or what they should do next.",
    ]
    good = (
        "Hello Sam,\n\nThank you for writing about case 48213. A replacement ships today and "
        "arrives before Friday.\n\nBest regards, the support team"
    )
    results = reg.check("Customer email, case 48213 ...", good, checkable)
    assert [r.instruction_id for r in results] == [c.instruction_id for c in checkable]
    assert all(r.strict for r in results), [r for r in results if not r.strict]
    bad = "Obviously you should have read the manual. See INT-77."
    failed = {r.instruction_id for r in reg.check("x", bad, checkable) if not r.strict}
    assert {"support/greeting", "support/case_number", "support/no_blame",
            "support/no_internal_ids", "support/thanks"} <= failed  # fmt: skip


def test_check_dispatches_ifeval_ids_and_keeps_order(tmp_path: Path) -> None:
    reg = registry_with(tmp_path, one("length", unit="words", max=3))
    results = reg.check(
        "Say hi.",
        "Hi, you.",
        [
            Constraint("punctuation:no_comma"),
            Constraint("t/c"),
            Constraint("ifeval/punctuation:no_comma"),
            Constraint("nope/c"),
        ],
    )
    assert [r.instruction_id for r in results] == [
        "punctuation:no_comma", "t/c", "ifeval/punctuation:no_comma", "nope/c",
    ]  # fmt: skip
    assert [r.strict for r in results] == [False, True, False, False]
    assert "unknown criteria pack 'nope'" in results[3].error


def test_a_rubric_given_to_the_program_is_an_error_not_a_pass(tmp_path: Path) -> None:
    reg = registry_with(tmp_path, one("rubric", text="Cites the manual's section number."))
    (result,) = reg.check("x", "y", [Constraint("t/c")])
    assert not result.strict and "only the LLM judge" in result.error


def test_validate_names_the_constraint(tmp_path: Path) -> None:
    reg = registry_with(tmp_path, one("length", unit="words", max=3))
    assert reg.validate([Constraint("t/c")]) == ["Use at most 3 words."]
    with pytest.raises(InvalidArgument, match=r"constraints\[1\]: pack 't' has no criterion 'x'"):
        reg.validate([Constraint("t/c"), Constraint("t/x")])
    with pytest.raises(InvalidArgument, match=r"constraints\[0\]: t/c takes no kwargs"):
        reg.validate([Constraint("t/c", {"n": 1})])
    with pytest.raises(InvalidArgument, match=r"constraints\[0\]: .*unknown instruction id"):
        reg.validate([Constraint("ifeval/nope:nope")])


def test_expand_whole_packs_and_single_criteria(tmp_path: Path) -> None:
    (tmp_path / "support.yaml").write_text(EXAMPLE.read_text())
    reg = CriteriaRegistry(tmp_path)
    reg.load()
    ids = [c.instruction_id for c in reg.expand(["support/short", "support"])]
    assert ids[0] == "support/short" and ids.count("support/short") == 1 and len(ids) == 10
    with pytest.raises(InvalidArgument, match="unknown criteria pack 'billing'; loaded: support"):
        reg.expand(["billing"])
    with pytest.raises(InvalidArgument, match="needs kwargs"):
        reg.expand(["ifeval"])


# -- errors name the file, the criterion and the field ---------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            one("keywords_present", keywords=["a"], min_count=0),
            "bad.yaml: criterion 'c' (criteria[0]): field min_count: Input should be greater",
        ),
        (
            one("length", unit="words"),
            "bad.yaml: criterion 'c' (criteria[0]): set min, max or both",
        ),
        (
            one("length", unit="lines", max=3),
            "bad.yaml: criterion 'c' (criteria[0]): field unit: Input should be 'words'",
        ),
        (
            one("regex", pattern="(unclosed"),
            "bad.yaml: criterion 'c' (criteria[0]): field pattern: not a valid regular expression",
        ),
        (
            one("json", schema={"type": "objekt"}),
            "bad.yaml: criterion 'c' (criteria[0]): field schema: not a valid JSON Schema",
        ),
        (
            one("sentiment", text="x"),
            "bad.yaml: criterion 'c' (criteria[0]): field type: unknown type; use one of regex",
        ),
        (
            json.dumps({"name": "t", "criteria": [{"id": "c"}]}),
            "bad.yaml: criterion 'c' (criteria[0]): field type: missing type",
        ),
        (
            one("starts_with", text="Hi", colour="red"),
            "bad.yaml: criterion 'c' (criteria[0]): field colour: Extra inputs are not permitted",
        ),
        (
            one("ifeval", instruction_id="keywords:frequency"),
            "bad.yaml: criterion 'c' (criteria[0]): field kwargs: keywords:frequency needs",
        ),
        (
            json.dumps({"name": "Bad Name!", "criteria": [{"id": "c", "type": "rubric"}]}),
            "bad.yaml: field name: String should match pattern",
        ),
        (
            json.dumps({"name": "t", "criteria": [
                {"id": "c", "type": "rubric", "text": "x"},
                {"id": "c", "type": "rubric", "text": "y"},
            ]}),
            "bad.yaml: criteria[1]: id 'c' is used twice",
        ),
        ("name: t\ncriteria:\n  - id: c\n    type: [unclosed\n", "bad.yaml:5:1: not valid YAML"),
        ("- just\n- a list\n", "bad.yaml: a pack is a mapping"),
    ],
)  # fmt: skip
def test_bad_packs_name_file_criterion_and_field(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_pack(text, "bad.yaml")
    assert message in err.value.message, err.value.message


def test_the_second_criterion_is_named_by_its_id() -> None:
    text = json.dumps({"name": "t", "criteria": [
        {"id": "fine", "type": "rubric", "text": "x"},
        {"id": "short", "type": "length", "unit": "words", "max": -1},
    ]})  # fmt: skip
    with pytest.raises(InvalidArgument, match=r"criterion 'short' \(criteria\[1\]\): field max"):
        parse_pack(text, "p.json")


# -- the folder: load, reload, ConfigMap layout ----------------------------------------------


def test_two_files_with_one_pack_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(one("rubric", text="x"))
    (tmp_path / "b.json").write_text(one("rubric", text="y"))
    with pytest.raises(InvalidArgument, match=r"b.json: pack name 't' is already used by .*a.yaml"):
        CriteriaRegistry(tmp_path).load()


def test_reload_on_change_and_a_bad_edit_keeps_the_old_packs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[bool, int]] = []
    path = tmp_path / "t.yaml"
    path.write_text(one("length", unit="words", max=3))
    reg = CriteriaRegistry(
        tmp_path, reload_interval_s=0, on_reload=lambda ok, n: seen.append((ok, n))
    )
    reg.load()
    assert reg.check("x", "one two three four", [Constraint("t/c")])[0].strict is False
    path.write_text(one("length", unit="words", max=10))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert reg.check("x", "one two three four", [Constraint("t/c")])[0].strict is True
    path.write_text(one("length", unit="words", max=-5))
    os.utime(path, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    assert reg.check("x", "one two three four", [Constraint("t/c")])[0].strict is True
    assert "field max" in reg.last_error and "not reloaded" in caplog.text
    (tmp_path / "u.yaml").write_text(json.dumps({"name": "u", "criteria": [
        {"id": "r", "type": "rubric", "text": "Be kind."}]}))  # fmt: skip
    path.write_text(one("length", unit="words", max=10))
    os.utime(path, ns=(time.time_ns() + 3 * 10**9, time.time_ns() + 3 * 10**9))
    assert sorted(reg.packs()) == ["t", "u"] and reg.last_error == ""
    assert seen == [(True, 1), (True, 1), (False, 1), (True, 2)]


def test_a_configmap_folder_is_read_through_its_links(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as <key> -> ..data/<key>, ..data -> ..<timestamp>; an
    update swaps ..data. Hidden entries are not packs."""
    v1 = tmp_path / "..2026_01_01"
    v1.mkdir()
    (v1 / "t.yaml").write_text(one("length", unit="words", max=3))
    (tmp_path / "..data").symlink_to(v1.name)
    (tmp_path / "t.yaml").symlink_to("..data/t.yaml")
    reg = CriteriaRegistry(tmp_path, reload_interval_s=0)
    reg.load()
    assert list(reg.packs()) == ["t"]
    v2 = tmp_path / "..2026_01_02"
    v2.mkdir()
    (v2 / "t.yaml").write_text(one("length", unit="words", max=300) + "\n")
    (tmp_path / "..data_tmp").symlink_to(v2.name)
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    assert reg.check("x", "one two three four", [Constraint("t/c")])[0].strict


def test_no_folder_means_ifeval_ids_only() -> None:
    reg = CriteriaRegistry(None)
    reg.load()
    assert reg.packs() == {}
    assert reg.check("x", "a, b", [Constraint("punctuation:no_comma")])[0].strict is False
    with pytest.raises(InvalidArgument, match="unknown criteria pack 'support'"):
        reg.resolve("support/greeting")


# -- the published schema and the example pack ----------------------------------------------


def test_the_published_schema_is_current() -> None:
    assert json.loads(SCHEMA.read_text()) == json_schema(), (
        "docs/criteria-pack.schema.json is stale: spar criteria schema > "
        "docs/criteria-pack.schema.json"
    )


def test_the_schema_accepts_the_example_and_refuses_a_bad_pack() -> None:
    import jsonschema
    import yaml

    schema = json_schema()
    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "t", "criteria": [{"id": "c", "type": "nope"}]}, schema)


def test_the_example_pack_loads() -> None:
    pack = load_pack(EXAMPLE)
    assert pack.name == "support" and len(pack.criteria) == 10


def test_a_failed_check_says_what_the_response_has(tmp_path: Path) -> None:
    reg = registry_with(tmp_path, one("length", unit="words", max=3))
    (result,) = reg.check("x", "one two three four five", [Constraint("t/c")])
    assert result.description == "Use at most 3 words. (5 words)"


def test_cli_checks_packs_and_tries_a_response(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spar_cli.main import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(one("length", unit="words", max=-1))
    assert main(["criteria", "check", str(EXAMPLE), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "ok   " in out and "support" in out
    assert f"FAIL {bad}: criterion 'c' (criteria[0]): field max:" in out
    reply = "Hi Sam, thank you for writing about case 48213. A new screen ships today."
    args = ["criteria", "try", "Case 48213", reply, "--criteria", "support"]
    assert main([*args, "--dir", str(EXAMPLE.parent)]) == 0
    out = capsys.readouterr().out
    assert "pass support/greeting" in out and "LLM  (rubric)" in out
    assert main(["criteria", "try", "x", "Obviously.", "--criteria", "support/no_blame",
                 "--dir", str(EXAMPLE.parent)]) == 1  # fmt: skip
    assert "FAIL support/no_blame" in capsys.readouterr().out
    assert main(["criteria", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(SCHEMA.read_text())
