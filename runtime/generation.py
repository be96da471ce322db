"""Generation over `CacheRows`: continuous batching of prompts of any length, prefill then decode.

Rows that finish take the next queued prompt at once (their cache slots are reused), so a batch of
prompts is served in as few steps as the engine's batch size allows. Every step feeds each active row
either its whole prompt or its last token, right-padded to the longest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .cache_rows import CacheRows
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


@dataclass
class _Request:
    index: int
    prompt: list[int]
    max_new_tokens: int
    rng: np.random.Generator
    generated: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None


@dataclass(frozen=True)
class StopCriteria:
    token_ids: frozenset[int] = frozenset()
    strings: tuple[str, ...] = ()


def _rng(params: SamplingParams, index: int) -> np.random.Generator:
    # One generator per prompt, so a seeded result does not depend on how prompts were batched.
    return np.random.default_rng(None if params.seed is None else [params.seed, index])


def stream_generation(
    rows: CacheRows,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    params: SamplingParams,
    stop: StopCriteria,
    decode,
) -> Iterator[Increment]:
    """Yield increments until every prompt has finished. `decode(ids) -> str` renders text."""
    queue = deque(_Request(i, list(p), max_new_tokens, _rng(params, i)) for i, p in enumerate(prompts))
    active: dict[int, _Request] = {}
    feed: dict[int, list[int]] = {}
    while queue or active:
        while queue and not rows.in_use.all():
            request = queue.popleft()
            row = rows.acquire()
            active[row], feed[row] = request, request.prompt
        logits = rows.step(feed)
        feed = {}
        for row, request in list(active.items()):
            token = choose_token(logits[row], params, request.rng)
            # `room`: cache slots left; the token just chosen would take the next one.
            increment = _advance(request, token, stop, decode, room=rows.max_seq_len - int(rows.lengths[row]))
            yield increment
            if request.finish_reason:
                rows.release(row)
                del active[row]
            else:
                feed[row] = [token]


def _advance(request: _Request, token: int, stop: StopCriteria, decode, room: int) -> Increment:
    request.generated.append(token)
    text = decode(request.generated)
    reason = "stop" if token in stop.token_ids else None
    hits = [h for h in (text.find(s) for s in stop.strings) if h >= 0]
    if hits:
        text, reason = text[: min(hits)], "stop"
    elif reason is None and (len(request.generated) >= request.max_new_tokens or room <= 1):
        reason = "length"
    if reason is None:
        text = _withhold(text, stop.strings)
    new_text = text[len(request.text) :]
    request.text, request.finish_reason = text, reason
    return Increment(request.index, [token], new_text, reason)


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
