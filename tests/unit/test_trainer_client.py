"""The trainer SDK's request building: upload batching and record errors (no server)."""

from __future__ import annotations

import pytest

from spar.client import submit_request, upload_requests
from spar.errors import InvalidArgument
from spar.v1 import trainer_pb2 as pb


def test_upload_batches_stay_under_the_message_limit() -> None:
    big = [{"prompt": f"p{i}", "chosen": "x" * 100_000, "rejected": "y"} for i in range(100)]
    requests = list(upload_requests("dpo", big, name="big"))
    assert requests[0].header.kind == pb.JOB_KIND_DPO and requests[0].header.name == "big"
    batches = [r.batch for r in requests[1:]]
    assert sum(len(b.records) for b in batches) == 100
    assert all(b.ByteSize() <= 4 * 1024 * 1024 + 200_000 for b in batches)
    assert len(batches) > 1


def test_record_errors_name_the_record() -> None:
    with pytest.raises(InvalidArgument, match="record 2: 'prompt' must be a string"):
        list(
            upload_requests("dpo", [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": 1}])
        )
    with pytest.raises(InvalidArgument, match=r"record 1: unexpected fields \['answer'\]"):
        list(upload_requests("sft", [{"prompt": "a", "answer": "b"}]))
    with pytest.raises(InvalidArgument, match="kind must be one of dpo, sft"):
        list(upload_requests("ppo", []))
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    sft = list(upload_requests("sft", [{"messages": chat}]))[1].batch.records[0].sft
    assert [m.role for m in sft.messages] == ["user", "assistant"]


def test_submit_request_sets_only_given_hyperparameters() -> None:
    req = submit_request(
        "sft", "d" * 64, hyperparameters={"lora_rank": 8, "target_modules": ["q_proj"]}
    )
    assert req.hyperparameters.HasField("lora_rank") and not req.hyperparameters.HasField("beta")
    assert list(req.hyperparameters.target_modules) == ["q_proj"]
    with pytest.raises(InvalidArgument, match="unknown hyperparameter 'gamma'"):
        submit_request("dpo", "d" * 64, hyperparameters={"gamma": 1})
