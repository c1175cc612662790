"""What an Answer request's prompt or chat becomes: the actor's chat and the judged instruction."""

from __future__ import annotations

import pytest

from services.refiner import conversation as core
from services.refiner.service import answer_chat
from spar.config import Limits
from spar.errors import InvalidArgument
from spar.v1 import common_pb2


def conversation(
    prompt: str, messages: list[common_pb2.ChatMessage], limits: Limits
) -> core.Conversation:
    """An Answer request's prompt or messages, as the servicer passes them to the core."""
    chat, field = answer_chat(prompt, messages)
    return core.conversation(chat, limits, field)


def chat(*turns: tuple[str, str]) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role=r, content=c) for r, c in turns]


def test_a_prompt_is_one_user_message_and_the_instruction_itself() -> None:
    c = conversation("Describe rain.", [], Limits())
    assert [(m.role, m.content) for m in c.messages] == [("user", "Describe rain.")]
    assert c.instruction == "Describe rain."


def test_one_user_message_is_judged_as_is() -> None:
    c = conversation("", chat(("user", "Describe rain.")), Limits())
    assert c.instruction == "Describe rain."


def test_a_chat_goes_to_the_actor_as_it_is_and_is_judged_as_a_transcript() -> None:
    turns = chat(
        ("system", "Answer in lowercase."),
        ("user", "Describe rain."),
        ("assistant", "rain falls from clouds, soft and cold."),
        ("user", "Now without commas."),
    )
    c = conversation("", turns, Limits())
    assert [(m.role, m.content) for m in c.messages] == [(m.role, m.content) for m in turns]
    assert "System: Answer in lowercase." in c.instruction
    assert "Assistant: rain falls from clouds" in c.instruction
    assert c.instruction.endswith("the instruction to follow:\n\nNow without commas.")


@pytest.mark.parametrize(
    ("prompt", "turns", "message"),
    [
        ("", [], "prompt is empty"),
        ("x", chat(("user", "y")), "either prompt or messages"),
        ("", chat(("robot", "y")), "messages[0].role is 'robot'"),
        ("", chat(("user", "Describe rain."), ("assistant", "Rain.")), "must be the user's"),
        ("", chat(("system", "Be brief."), ("user", "  ")), "without text"),
    ],
)
def test_bad_conversations_name_what_to_change(
    prompt: str, turns: list[common_pb2.ChatMessage], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        conversation(prompt, turns, Limits())


def test_limits_apply_to_the_whole_chat() -> None:
    limits = Limits(max_messages=2, max_prompt_chars=10)
    with pytest.raises(InvalidArgument, match="3 messages exceed the server limit 2"):
        conversation("", chat(("user", "a"), ("assistant", "b"), ("user", "c")), limits)
    with pytest.raises(InvalidArgument, match="messages is 12 characters; the server limit is 10"):
        conversation("", chat(("system", "abcdef"), ("user", "ghijkl")), limits)
    with pytest.raises(InvalidArgument, match="prompt is 11 characters"):
        conversation("x" * 11, [], limits)
