"""The engine for asynchronous callers: admission (a bounded queue), one thread per generation feeding the event
loop, cancellation, and the per-token metrics.

A request's prompts (times `n` choices) each become an `Engine.generate` stream; the engine's scheduler batches them
with every other request's. A thread per stream moves its increments onto the event loop. When the caller stops
reading (a client that disconnects), each thread closes its stream at the next increment, which frees the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gptoss.runtime import Engine, GptOssError, Increment
from gptoss.runtime.errors import ContextLengthError

from .errors import ApiError, bad_request, server_error
from .metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationOptions:
    """What a client asks of each choice. `temperature == 0` is greedy; `stop` holds the strings and token ids that
    end a choice (end tokens included: the caller decides which)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str | int, ...] = ()

    def engine_arguments(self, choice: int) -> dict[str, Any]:
        """`Engine.generate`'s arguments for choice `choice` (with a seed, choice i samples with seed + i)."""
        sample = self.temperature > 0
        return dict(
            max_new_tokens=self.max_tokens, do_sample=sample, temperature=self.temperature if sample else 1.0,
            top_k=self.top_k, top_p=self.top_p, seed=None if self.seed is None else self.seed + choice,
            stop=list(self.stop),
        )  # fmt: skip


class GenerationService:
    """Runs requests on one engine for the event loop, at most `max_batch + max_queue` choices at a time."""

    def __init__(self, engine: Engine, max_queue: int, metrics: Metrics) -> None:
        self.engine = engine
        self.capacity = engine.manifest.max_batch + max_queue
        self.metrics = metrics
        self.default_stop = engine.default_stop_ids()  # fixed for the engine: not rebuilt per request
        self._in_flight = 0  # choices admitted and not yet finished
        self._lock = threading.Lock()  # several event loops may share a service (Triton's model instances)
        engine.reserve_rows(engine.manifest.max_batch)

    def encode(self, prompt: str | Sequence[int], param: str, index: int = 0) -> list[int]:
        """A prompt's token ids, checked against the vocabulary and the engine's sequence length (400 otherwise);
        `index`: the prompt's position in its request, for the message."""
        try:
            return self.engine.encode(prompt, index)
        except GptOssError as error:
            code = "context_length_exceeded" if isinstance(error, ContextLengthError) else None
            raise bad_request(str(error), param, code) from None

    def room(self, prompt: list[int]) -> int:
        """Tokens the engine can still generate after `prompt`."""
        return self.engine.manifest.max_seq_len - len(prompt)

    def start(self, prompts: Sequence[list[int]], options: GenerationOptions, n: int = 1) -> Generation:
        """Admit `n` choices of each (encoded) prompt and start them: 429 when the queue is full, 400 when an option
        is out of range. Choice `k` of prompt `p` has index `p * n + k`."""
        count = len(prompts) * n
        if count > self.capacity:
            raise bad_request(f"{count} choices (prompts times n) exceed what this server holds at once, "
                              f"{self.capacity}", "n")  # fmt: skip
        with self._lock:
            admitted = self._in_flight + count <= self.capacity
            self._in_flight += count if admitted else 0
        if not admitted:
            self.metrics.rejected.inc()
            raise ApiError(
                429, f"the server is at capacity ({self.capacity} requests running or queued); retry later",
                type="requests", code="rate_limit_exceeded",
            )  # fmt: skip
        streams = []
        try:
            for prompt in prompts:
                for choice in range(n):
                    streams.append(self.engine.generate(prompt, stream=True, **options.engine_arguments(choice)))
        except GptOssError as error:
            for stream in streams:
                stream.close()
            with self._lock:
                self._in_flight -= count
            raise bad_request(str(error)) from None
        self.metrics.prompt_tokens.inc(sum(map(len, prompts)) * n)
        return Generation(streams, self)

    def release(self) -> None:
        """One admitted choice has ended."""
        with self._lock:
            self._in_flight -= 1


class Generation:
    """The running choices of one request: iterate for `(choice index, increment)` as they come; `cancel` (or
    leaving the iteration) stops every choice and frees its row."""

    def __init__(self, streams: list[Iterator[Increment]], service: GenerationService) -> None:
        self._service = service
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()
        self._started = time.perf_counter()
        self._running = len(streams)
        for index, stream in enumerate(streams):
            threading.Thread(target=self._pump, args=(index, stream), name="gptoss-serve-stream", daemon=True).start()

    def cancel(self) -> None:
        self._cancelled.set()

    async def __aiter__(self) -> AsyncIterator[tuple[int, Increment]]:
        last_token: dict[int, float] = {}
        try:
            while self._running:
                index, event = await self._events.get()
                if event is None:  # the stream ended
                    self._running -= 1
                    continue
                if isinstance(event, BaseException):
                    raise server_error(f"generation failed: {event}") from event
                now = time.perf_counter()
                if event.token_ids:
                    previous = last_token.get(index)
                    if previous is None:
                        self._service.metrics.time_to_first_token.observe(now - self._started)
                    else:
                        self._service.metrics.inter_token_latency.observe(now - previous)
                    last_token[index] = now
                    self._service.metrics.generated_tokens.inc(len(event.token_ids))
                yield index, event
        finally:
            self.cancel()

    def _pump(self, index: int, stream: Iterator[Increment]) -> None:
        """On its own thread: move one stream's increments onto the event loop until it ends or is cancelled."""
        try:
            for increment in stream:
                self._deliver(index, increment)
                if self._cancelled.is_set():
                    break
        except Exception as error:  # a failed step or sampler (a GptOssError), reported to this request only
            log.warning("generation failed: %s", error)
            self._deliver(index, error)
        finally:
            stream.close()  # frees the row if the stream did not finish
            self._deliver(index, None)
            self._service.release()  # whether or not anyone still reads

    def _deliver(self, index: int, event: Increment | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (the server is shutting down)
            self._loop.call_soon_threadsafe(self._events.put_nowait, (index, event))
