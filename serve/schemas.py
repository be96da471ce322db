"""Request bodies of the OpenAI endpoints (pydantic), checked and turned into `GenerationOptions`.

Fields the API defines and this server cannot honour (tools, logprobs, penalties, ...) are refused with a 400 naming
them unless left at their defaults; unknown fields are ignored, as the OpenAI clients send extra ones. `top_k` and
`ignore_eos` are extensions (as in vLLM).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import bad_request
from .service import GenerationOptions

PositiveInt = Annotated[int, Field(ge=1)]
TokenIds = list[Annotated[int, Field(ge=0)]]


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Generation(BaseModel):
    """What chat and completions requests share."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    seed: Annotated[int, Field(ge=0)] | None = None
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    # Defined by the API, not supported here: refused unless at their defaults.
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None

    unsupported: ClassVar[tuple[str, ...]] = (
        "logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty"
    )  # fmt: skip

    def refuse_unsupported(self) -> None:
        """400 naming the first unsupported field set to something other than its default."""
        for name in self.unsupported:
            if getattr(self, name) not in (None, False, 0, {}, [], "none"):
                raise bad_request(f"{name} is not supported by this server", name, "unsupported_parameter")

    def options(self, max_tokens: int, end_ids: frozenset[int]) -> GenerationOptions:
        """The generation options: stop at the end tokens `end_ids` (unless `ignore_eos`) and at `stop`."""
        strings = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        ends = () if self.ignore_eos else tuple(sorted(end_ids))
        return GenerationOptions(
            max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=self.seed,
            stop=ends + tuple(s for s in strings if s),
        )  # fmt: skip

    def token_budget(self, requested: int | None, room: int, default: int) -> int:
        """Tokens to generate: `requested` (400 if it does not fit beside the prompt), else `default` within room."""
        if requested is None:
            return min(default, room)
        if requested > room:
            raise bad_request(
                f"max_tokens is {requested}, but only {room} tokens fit after the prompt in this engine's sequence "
                "length", "max_tokens", "context_length_exceeded",
            )  # fmt: skip
        return requested


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    reasoning_content: str | None = None  # an earlier assistant turn's analysis

    @field_validator("content", "reasoning_content")
    @classmethod
    def _unicode(cls, value: str | list[TextPart] | None) -> str | list[TextPart] | None:
        texts = [value] if isinstance(value, str) else [part.text for part in value or []]
        for text in texts:
            text.encode("utf-8")  # lone surrogates (from \ud800 escapes) raise: pydantic answers a 400
        return value

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(_Generation):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    reasoning_effort: Literal["low", "medium", "high"] = "medium"
    tools: Any = None
    tool_choice: Any = None
    response_format: Any = None

    unsupported: ClassVar[tuple[str, ...]] = _Generation.unsupported + ("tools", "tool_choice", "response_format")

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Generation):
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    echo: bool = False
    suffix: Any = None
    best_of: Literal[1] | None = None

    unsupported: ClassVar[tuple[str, ...]] = _Generation.unsupported + ("echo", "suffix")

    def prompts(self) -> list[str | list[int]]:
        """The prompts, one per entry: texts or token-id lists."""
        if isinstance(self.prompt, str) or not self.prompt or isinstance(self.prompt[0], int):
            return [self.prompt]  # one prompt (an empty one is refused when encoded)
        return list(self.prompt)
