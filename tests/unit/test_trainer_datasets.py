"""Dataset validation, canonical form, deduplication and digest (no server)."""

from __future__ import annotations

import pytest

from services.trainer.datasets import DatasetBuilder, DatasetLimits, to_trl
from spar.datasets import parse_jsonl
from spar.errors import InvalidArgument

PAIR = {"prompt": "Say hi in lowercase.", "chosen": "hi there", "rejected": "HI THERE"}


def build(kind: str, records: list[dict[str, object]], **limits: int) -> DatasetBuilder:
    builder = DatasetBuilder(kind, DatasetLimits(**limits))  # type: ignore[arg-type]
    for r in records:
        builder.add(r)
    return builder


def test_dedup_and_digest_is_stable() -> None:
    other = {"prompt": "Count to two.", "chosen": "one, two", "rejected": "1 2 3"}
    a = build("dpo", [PAIR, other, dict(PAIR)]).finish()
    assert len(a.records) == 2 and a.duplicates_dropped == 1
    # Key order and duplicates do not change the digest; content and order do.
    b = build("dpo", [dict(reversed(list(PAIR.items()))), other]).finish()
    assert b.digest == a.digest
    c = build("dpo", [other, PAIR]).finish()
    assert c.digest != a.digest
    assert a.canonical.count(b"\n") == 2


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**PAIR, "rejected": PAIR["chosen"]}, "record 2: 'chosen' equals 'rejected'"),
        ({**PAIR, "chosen": "  "}, "record 2: 'chosen' is empty"),
        ({**PAIR, "prompt": ["x"]}, "record 2: 'prompt' must be a string"),
        ({"prompt": "p", "chosen": "c"}, "record 2: 'rejected' must be a string"),
        ({**PAIR, "score": 1}, "record 2: unexpected fields ['score']"),
    ],
)
def test_bad_dpo_records_name_the_record(record: dict[str, object], message: str) -> None:
    builder = build("dpo", [PAIR])
    with pytest.raises(InvalidArgument) as err:
        builder.add(record)
    assert message in err.value.message


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "p"}, "'completion' must be a string"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be the assistant"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "needs a user message"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role='robot'"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
        ({"messages": "hi"}, "'messages' must be a list"),
        (
            {"prompt": "p", "messages": [{"role": "user", "content": "x"}]},
            "either {prompt, completion} or {messages}",
        ),
        ({}, "needs {prompt, completion} or {messages}"),
    ],
)
def test_bad_sft_records(record: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        build("sft", [record])
    assert "record 1" in err.value.message and message in err.value.message


def test_sft_messages_train_the_last_turn() -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Judge this."},
        {"role": "assistant", "content": "Final Judgement: No"},
    ]
    data = build("sft", [{"messages": chat}, {"prompt": "a", "completion": "b"}]).finish()
    trl = to_trl("sft", data.records[0])
    assert trl["prompt"] == chat[:2] and trl["completion"] == chat[2:]
    assert to_trl("sft", data.records[1]) == {
        "prompt": [{"role": "user", "content": "a"}],
        "completion": [{"role": "assistant", "content": "b"}],
    }
    assert to_trl("dpo", PAIR)["chosen"] == [{"role": "assistant", "content": "hi there"}]


def test_limits() -> None:
    with pytest.raises(InvalidArgument, match="per-record limit of 64 bytes"):
        build("dpo", [{**PAIR, "chosen": "x" * 100}], max_record_bytes=64)
    with pytest.raises(InvalidArgument, match="more than 1 records"):
        build("dpo", [PAIR, {**PAIR, "chosen": "other"}], max_records=1)
    with pytest.raises(InvalidArgument, match="exceeds 100 bytes"):
        build("dpo", [PAIR, {**PAIR, "chosen": "other"}], max_bytes=100)
    with pytest.raises(InvalidArgument, match="empty"):
        build("dpo", []).finish()


def test_parse_jsonl_names_the_line() -> None:
    assert parse_jsonl('{"a": 1}\n\n{"b": 2}\n') == [{"a": 1}, {"b": 2}]
    with pytest.raises(InvalidArgument, match=r"data\.jsonl line 2: not valid JSON"):
        parse_jsonl('{"a": 1}\n{oops\n', source="data.jsonl")
    with pytest.raises(InvalidArgument, match="line 1: a record must be a JSON object"):
        parse_jsonl("[1, 2]\n")
