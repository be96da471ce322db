"""Generation requests: a prompt is fed whole (prefill), then one chosen token per step (decode), until a stop
token, a stop string, `max_new_tokens` or the end of the cache. The scheduler (scheduler.py) runs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .sampling import SamplingParams, choose_token


@dataclass
class Increment:
    """What one request gained in one step (`stream=True` yields these)."""

    index: int  # position of the prompt in the call
    token_ids: list[int]
    text: str
    finish_reason: str | None = None  # "stop", "length" or None while running


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str


@dataclass(frozen=True)
class StopCriteria:
    token_ids: frozenset[int] = frozenset()
    strings: tuple[str, ...] = ()


@dataclass
class GenerationRequest:
    """One prompt being continued (a `scheduler.Request`): fed its prompt, then each token it chooses."""

    index: int  # position of the prompt in its call
    prompt: list[int]
    max_new_tokens: int
    params: SamplingParams
    stop: StopCriteria
    decode: Callable[[list[int]], str]
    generated: list[int] = field(default_factory=list)
    text: str = ""

    def __post_init__(self) -> None:
        # Its own generator, seeded by the call's seed alone: the same prompt and seed give the same tokens
        # wherever the prompt sits in its call and whatever runs beside it.
        self.rng = np.random.default_rng(self.params.seed)

    def advance(self, logits: np.ndarray, room: int) -> tuple[Increment, list[int] | None]:
        """Choose the next token from this row's logits; `room`: cache slots left (the token takes the next)."""
        token = choose_token(logits, self.params, self.rng)
        self.generated.append(token)
        text = self.decode(self.generated)
        reason = "stop" if token in self.stop.token_ids else None
        hits = [h for h in (text.find(s) for s in self.stop.strings) if h >= 0]
        if hits:
            text, reason = text[: min(hits)], "stop"
        elif reason is None and (len(self.generated) >= self.max_new_tokens or room <= 1):
            reason = "length"
        if reason is None:
            text = _withhold(text, self.stop.strings)
        new_text = text[len(self.text) :]
        self.text = text
        return Increment(self.index, [token], new_text, reason), None if reason else [token]


def _withhold(text: str, stop_strings: tuple[str, ...]) -> str:
    """Text safe to show while running: no incomplete UTF-8 character, no possible start of a stop string."""
    if text.endswith("\ufffd"):
        text = text.rstrip("\ufffd")
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                return text[:-size]
    return text


def collect(increments: Iterator[Increment], prompts: Sequence[list[int]]) -> list[GenerationResult]:
    """Gather a stream into one result per prompt, in prompt order."""
    results = [GenerationResult(list(p), [], "", "") for p in prompts]
    for increment in increments:
        result = results[increment.index]
        result.token_ids += increment.token_ids
        result.text += increment.text
        result.finish_reason = increment.finish_reason or result.finish_reason
    return results
