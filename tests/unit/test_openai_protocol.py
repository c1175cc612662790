"""The OpenAI chat-completions protocol of the refiner's HTTP endpoint: requests to spar's
messages, replies back, errors named as the HTTP request spells them."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from support import refined_answer

from services.refiner import openai_completions as oc
from services.refiner import openai_protocol as op
from spar.v1 import actor_pb2, common_pb2
from spar.v1 import refiner_pb2 as pb


def request(**fields: Any) -> op.ChatCompletionRequest:
    body = {"model": "spar-refined", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return op.parse_request(body)


def refused(body: Any) -> op.RequestError:
    with pytest.raises(op.RequestError) as info:
        parsed = op.parse_request(body)
        field = parsed.unsupported()
        if field:
            raise op.RequestError(field, field)
        op.answer_request(parsed)
    return info.value


def test_chat_sampling_and_spar_options_map_to_the_answer_request() -> None:
    r = request(
        messages=[
            {"role": "developer", "content": "Answer in lowercase."},
            {"role": "user", "content": [{"type": "text", "text": "Describe"},
                                         {"type": "text", "text": "rain."}]},
            {"role": "assistant", "content": "rain is wet."},
            {"role": "user", "content": "Shorter.", "name": "ann"},
        ],
        max_completion_tokens=40, temperature=0.2, top_p=0.8, stop="\n\n", seed=7,
        spar={
            "constraints": [{"instruction_id": "punctuation:no_comma"},
                            {"instruction_id": "length_constraints:number_words",
                             "kwargs": {"relation": "less than", "num_words": 12}}],
            "judge": "verifier",
            "budget": {"max_nodes": 4, "max_generated_tokens": 900, "max_wall_time_s": 2.5},
            "search": {"strategy": "dfs", "selection": "proportional", "branch": 2,
                       "max_depth": 1, "end_gate": 0.6, "judge_samples": 3},
            "include_trace": True,
        },
    )  # fmt: skip
    a = op.answer_request(r)
    assert [(m.role, m.content) for m in a.messages] == [
        ("system", "Answer in lowercase."),
        ("user", "Describe\nrain."),
        ("assistant", "rain is wet."),
        ("user", "Shorter."),
    ]
    assert not a.prompt
    s = a.sampling
    assert (s.n, s.max_tokens, list(s.stop), s.seed) == (1, 40, ["\n\n"], 7)
    assert s.temperature == pytest.approx(0.2) and s.top_p == pytest.approx(0.8)
    assert [c.instruction_id for c in a.constraints] == [
        "punctuation:no_comma",
        "length_constraints:number_words",
    ]
    assert dict(a.constraints[1].kwargs) == {"relation": "less than", "num_words": 12}
    assert a.judge == common_pb2.JUDGE_KIND_VERIFIER
    assert (a.budget.max_nodes, a.budget.max_generated_tokens) == (4, 900)
    assert a.budget.max_wall_time.ToTimedelta().total_seconds() == 2.5
    o = a.options
    assert (o.strategy, o.selection) == (common_pb2.SEARCH_STRATEGY_DFS,
                                         common_pb2.NODE_SELECTION_PROPORTIONAL)  # fmt: skip
    assert (o.branch, o.max_depth, o.judge_samples) == (2, 1, 3)
    assert o.end_gate == pytest.approx(0.6) and not o.HasField("keep_top")
    assert a.include_trace


def test_unset_sampling_stays_unset_so_server_defaults_apply() -> None:
    a = op.answer_request(request())
    assert not a.sampling.HasField("temperature") and not a.sampling.HasField("top_p")
    assert not a.sampling.HasField("seed") and a.sampling.max_tokens == 0
    assert a.judge == common_pb2.JUDGE_KIND_UNSPECIFIED
    assert not a.HasField("budget") and not a.HasField("options")


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"spar": {"budjet": {}}}, "spar.budjet", "unknown field 'budjet' in spar; known"),
        ({"spar": {"budget": {"nodes": 3}}}, "spar.budget.nodes", "unknown field 'nodes'"),
        ({"spar": {"budget": {"max_nodes": 0}}}, "spar.budget.max_nodes", "greater than"),
        ({"spar": {"budget": {"max_nodes": "5"}}}, "spar.budget.max_nodes", "valid integer"),
        ({"spar": {"search": {"strategy": "mcts"}}}, "spar.search.strategy", "'bfs' or 'dfs'"),
        ({"spar": {"judge": "gpt"}}, "spar.judge", "'llm', 'verifier' or 'hybrid'"),
        ({"spar": {"constraints": [{"id": "x"}]}}, "spar.constraints[0].id", "unknown field"),
        ({"spar": {"constraints": [{}]}}, "spar.constraints[0].instruction_id", "required"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"n": 2}, "n", "one refined answer"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens", "disagree"),
        ({"frobnicate": True}, "frobnicate", "unknown field 'frobnicate'; known fields"),
        ({"logprobs": True}, "logprobs", "logprobs"),
        ({"tools": [{"type": "function"}]}, "tools", "tools"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "Input should"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
            "",
        ),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, Any], param: str, message: str) -> None:
    body = {"model": "spar-refined", "messages": [{"role": "user", "content": "Hi"}], **fields}
    error = refused(body)
    assert error.param is not None and error.param.startswith(param), (error.param, error.message)
    assert message in error.message


def test_neutral_values_of_unsupported_fields_are_accepted() -> None:
    r = request(presence_penalty=0, logprobs=False, tools=[], tool_choice="none",
                response_format={"type": "text"}, user="u1", stream_options=None)  # fmt: skip
    assert r.unsupported() is None


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert "JSON object" in refused([1, 2]).message


def test_spar_options_are_for_the_refined_model_only() -> None:
    r = op.parse_request(
        {"model": "spar-actor", "messages": [{"role": "user", "content": "x"}], "spar": {}}
    )
    with pytest.raises(op.RequestError, match="refined model only"):
        op.actor_request(r)
    plain = op.parse_request(
        {"model": "spar-actor", "messages": [{"role": "user", "content": "x"}], "n": 3}
    )
    chat, sampling = op.actor_request(plain)
    assert chat == [("user", "x")] and sampling.n == 3


def cost() -> common_pb2.SearchCost:
    c = common_pb2.SearchCost(
        nodes_expanded=2,
        judge_samples=9,
        generate=common_pb2.PhaseTokens(prompt_tokens=10, completion_tokens=5, requests=1),
        judge=common_pb2.PhaseTokens(prompt_tokens=300, completion_tokens=120, requests=3),
        refine=common_pb2.PhaseTokens(prompt_tokens=80, completion_tokens=40, requests=1),
        outcome=common_pb2.SEARCH_OUTCOME_REFINED,
    )
    c.wall_time.FromNanoseconds(2_500_000_000)
    return c


def test_usage_counts_every_phase_and_the_extension_breaks_it_down() -> None:
    reply = refined_answer(
        "Rain, which is wet, falls.",
        "Rain falls softly.",
        cost=cost(),
        trace=[pb.SearchNode(id=0, parent_id=-1), pb.SearchNode(id=2, parent_id=0, depth=1)],
    )
    body = oc.answer_completion(reply, "spar-refined", trace=False)
    assert body["object"] == "chat.completion" and body["model"] == "spar-refined"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Rain falls softly."}
    assert body["usage"] == {"prompt_tokens": 390, "completion_tokens": 165, "total_tokens": 555}
    ext = body["spar"]
    assert ext["outcome"] == "refined" and ext["verdict"] == "pass"
    assert ext["nodes_expanded"] == 2 and ext["judge_samples"] == 9
    assert ext["wall_time_s"] == 2.5
    assert ext["original"] == "Rain, which is wet, falls."
    assert set(ext["usage_by_phase"]) == {"generate", "judge", "refine"}
    assert ext["usage_by_phase"]["judge"] == {
        "prompt_tokens": 300, "completion_tokens": 120, "total_tokens": 420, "requests": 3,
    }  # fmt: skip
    assert "trace" not in ext and "answer" not in ext
    traced = oc.answer_completion(reply, "spar-refined", trace=True)["spar"]["trace"]
    assert [(n["id"], n["parent_id"]) for n in traced] == [(0, -1), (2, 0)]


def test_actor_completion_reports_every_sample_and_its_usage() -> None:
    reply = actor_pb2.GenerateResponse(
        completions=[
            actor_pb2.Completion(index=0, text="a", finish_reason=common_pb2.FINISH_REASON_STOP),
            actor_pb2.Completion(index=1, text="b", finish_reason=common_pb2.FINISH_REASON_LENGTH),
        ],
        usage=common_pb2.Usage(prompt_tokens=7, completion_tokens=9),
        adapter="actor-1-0123456789ab",
    )
    body = oc.actor_completion(reply, "spar-actor", 0.5)
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert body["usage"]["total_tokens"] == 16
    assert body["spar"]["actor_adapter"] == "actor-1-0123456789ab"


def test_error_messages_use_the_http_field_names() -> None:
    cases = {
        "budget.max_nodes=5000 exceeds the server limit 64": "spar.budget.max_nodes",
        "budget.max_wall_time=900s exceeds the server limit 600s": "spar.budget.max_wall_time_s",
        "options.branch=99 exceeds the server limit 8": "spar.search.branch",
        "constraints[0]: unknown instruction id": "spar.constraints[0]",
        "constraints[1].kwargs is 5120 characters as JSON": "spar.constraints[1].kwargs",
        "the actor refused the answer request: sampling.max_tokens=5000 exceeds": "max_tokens",
    }
    for message, param in cases.items():
        text, found = op.http_field_names(message)
        assert found == param and param in text, (message, text, found)
    assert op.http_field_names("the search stops here")[1] is None


def test_grpc_codes_map_to_the_http_codes_of_the_issue() -> None:
    s = op.HTTP_STATUS
    assert s[grpc.StatusCode.INVALID_ARGUMENT] == 400
    assert s[grpc.StatusCode.UNAUTHENTICATED] == 401
    assert s[grpc.StatusCode.NOT_FOUND] == 404
    assert s[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429
    assert s[grpc.StatusCode.UNAVAILABLE] == 503
    assert s[grpc.StatusCode.DEADLINE_EXCEEDED] == 504
    body = op.error_body(429, "busy", code="resource_exhausted")
    assert body == {"error": {"message": "busy", "type": "rate_limit_error", "param": None,
                              "code": "resource_exhausted"}}  # fmt: skip


@pytest.mark.parametrize("text", ["", "one", "  lead and trail  ", "a b c d e f g h i j k l m"])
def test_content_pieces_join_back_to_the_answer(text: str) -> None:
    parts = list(oc.pieces(text, words=3))
    assert "".join(parts) == text and all(parts)
