"""GPT-OSS's harmony chat format: render a conversation into tokens, parse a reply into its channels.

A message is `<|start|>{role}[<|channel|>{channel}]<|message|>{content}<|end|>`; the model answers after
`<|start|>assistant`, usually `<|channel|>analysis<|message|>...<|end|>` then
`<|start|>assistant<|channel|>final<|message|>...<|return|>` (tool calls end with `<|call|>`).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import GptOssError
from .tokenizer import Tokenizer

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
REASONING_EFFORTS = ("low", "medium", "high")
ROLES = ("system", "developer", "user", "assistant", "tool")
REPLY_STOP_TOKENS = ("<|return|>", "<|call|>")  # the assistant's turn is over


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    channel: str | None = None  # assistant messages: analysis, commentary or final


@dataclass
class Reply:
    """The channels of one assistant reply, in order; `final` and `analysis` for convenience."""

    messages: list[Message] = field(default_factory=list)

    @property
    def final(self) -> str:
        return "".join(m.content for m in self.messages if m.channel == "final")

    @property
    def analysis(self) -> str:
        return "".join(m.content for m in self.messages if m.channel == "analysis")


def system_message(reasoning_effort: str = "medium", date: datetime.date | None = None) -> str:
    if reasoning_effort not in REASONING_EFFORTS:
        raise GptOssError(f"reasoning effort {reasoning_effort!r}, expected one of {', '.join(REASONING_EFFORTS)}")
    today = (date or datetime.date.today()).isoformat()
    return (
        f"{MODEL_IDENTITY}\nKnowledge cutoff: 2024-06\nCurrent date: {today}\n\n"
        f"Reasoning: {reasoning_effort}\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message."
    )


def render(
    messages: Sequence[Message],
    *,
    reasoning_effort: str = "medium",
    date: datetime.date | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """The harmony text of a conversation. A system message is added unless one is given; `developer`
    content becomes `# Instructions`; earlier assistant analysis is dropped once a final answer follows."""
    for message in messages:
        if message.role not in ROLES:
            raise GptOssError(f"message role {message.role!r}, expected one of {', '.join(ROLES)}")
    parts = []
    if not messages or messages[0].role != "system":
        parts.append(_message("system", system_message(reasoning_effort, date)))
    last_final = max((i for i, m in enumerate(messages) if m.role == "assistant" and m.channel == "final"), default=-1)
    for i, message in enumerate(messages):
        if message.role == "assistant" and message.channel == "analysis" and i < last_final:
            continue
        content = f"# Instructions\n\n{message.content}" if message.role == "developer" else message.content
        channel = message.channel or ("final" if message.role == "assistant" else None)
        parts.append(_message(message.role, content, channel))
    if add_generation_prompt:
        parts.append("<|start|>assistant")
    return "".join(parts)


def _message(role: str, content: str, channel: str | None = None) -> str:
    header = role + (f"<|channel|>{channel}" if channel else "")
    return f"<|start|>{header}<|message|>{content}<|end|>"


def encode_conversation(tokenizer: Tokenizer, messages: Sequence[Message], **options) -> list[int]:
    """Token ids of `render(messages)`; the special tokens must exist in the tokenizer."""
    for token in ("<|start|>", "<|message|>", "<|end|>", "<|channel|>"):
        tokenizer.special_id(token)
    return tokenizer.encode(render(messages, **options))


_SEGMENT = re.compile(
    r"(?:<\|start\|>assistant)?(?:<\|channel\|>(?P<channel>[^<]*?))?(?:\s*to=\S+)?(?:\s*<\|constrain\|>\S+)?"
    r"<\|message\|>(?P<content>.*?)(?:<\|end\|>|<\|return\|>|<\|call\|>|$)",
    re.DOTALL,
)


def parse_reply(text: str) -> Reply:
    """Split generated text (decoded with special tokens, starting after `<|start|>assistant`) into messages."""
    reply = Reply()
    for match in _SEGMENT.finditer(text):
        channel = (match.group("channel") or "final").strip()
        reply.messages.append(Message("assistant", match.group("content"), channel))
    if not reply.messages and text:
        reply.messages.append(Message("assistant", text, "final"))  # no harmony markup: treat as the answer
    return reply
