"""What an Answer request asks: the conversation the actor continues and the instruction
the judge and the search hold the answer to. Pure logic.

An Answer request carries a single ``prompt`` or a whole chat (``messages``: system and
earlier turns, then the user's last message). The actor gets the chat as it is. The judge
and the refiner need one instruction text: for a single user message it is that
message, unchanged; for a longer chat it is the transcript with the last user message
marked as the instruction to follow, so a follow-up ("make it shorter") is judged in the
context that gives it its meaning, and a system prompt's requirements count too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spar.config import Limits
from spar.engine.protocol import Message
from spar.errors import InvalidArgument
from spar.sampling import check_chat_size

ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class Conversation:
    """The chat the actor continues and the instruction its answer is judged against."""

    messages: list[Message]
    instruction: str


def conversation(chat: Sequence[Message], limits: Limits, field: str = "messages") -> Conversation:
    """Validates the chat (from the request's ``field``, prompt or messages) within the
    request limits."""
    check_chat_size(chat, limits, field)
    last = chat[-1]
    if last.role != "user" or not last.content.strip():
        raise InvalidArgument(
            f"messages[{len(chat) - 1}] must be the user's instruction (role user, some "
            f"text); it is a {last.role!r} message"
            + ("" if last.content.strip() else " without text")
        )
    return Conversation(list(chat), instruction_text(chat))


def instruction_text(chat: Sequence[Message]) -> str:
    """The instruction to judge: the one user message itself, or the marked transcript."""
    if len(chat) == 1:
        return chat[0].content
    turns = "\n\n".join(f"{ROLE_NAMES[m.role]}: {m.content}" for m in chat[:-1])
    return (
        f"Conversation so far:\n\n{turns}\n\n"
        f"The user's last message, the instruction to follow:\n\n{chat[-1].content}"
    )
