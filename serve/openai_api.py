"""The OpenAI endpoints: /v1/chat/completions (harmony), /v1/completions and /v1/models, as JSON or server-sent
events ending in `data: [DONE]`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gptoss.runtime import GptOssError, Increment
from gptoss.runtime.chat import Message, encode_conversation, parse_reply

from .errors import ApiError, bad_request
from .harmony_stream import ChannelStream
from .schemas import ChatMessage, ChatRequest, CompletionRequest
from .service import Generation, GenerationService

log = logging.getLogger(__name__)

COMPLETION_DEFAULT_TOKENS = 16  # the OpenAI API's default max_tokens for /v1/completions


@dataclass
class Choice:
    """One choice's accumulated output."""

    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    channels: ChannelStream = field(default_factory=ChannelStream)


def router(service: GenerationService, model_name: str) -> APIRouter:
    """The /v1 routes of one served model."""
    api = APIRouter(prefix="/v1")
    engine = service.engine

    def check_model(name: str) -> None:
        if name != model_name:
            raise ApiError(
                404, f"the model {name!r} does not exist; this server serves {model_name!r}", param="model",
                code="model_not_found",
            )  # fmt: skip

    @api.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(model_name)]}

    @api.get("/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        check_model(name)
        return _model_card(model_name)

    @api.post("/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Response:
        check_model(body.model)
        body.refuse_unsupported()
        if engine.tokenizer is None:
            raise bad_request("this engine has no tokenizer.json: use /v1/completions with token ids", "messages")
        try:
            ids = encode_conversation(
                engine.tokenizer, [m for message in body.messages for m in _harmony(message)],
                reasoning_effort=body.reasoning_effort,
            )  # fmt: skip
            ends = engine.reply_stop_ids()
        except GptOssError as error:  # the tokenizer lacks a harmony special token
            raise bad_request(f"messages: {error}", "messages") from None
        ids = service.encode(ids, "messages")
        room = service.room(ids)
        options = body.options(body.token_budget(body.requested_tokens(), room, room), ends)
        generation = service.start([ids], options, body.n)
        response = _Response("chatcmpl", "chat.completion", model_name, body.n, len(ids))
        if body.stream:
            return _sse(response.chat_chunks(generation, _include_usage(body)), generation)
        return await _unless_disconnected(request, generation, response.chat_result(generation))

    @api.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_model(body.model)
        body.refuse_unsupported()
        prompts = [service.encode(p, "prompt", i) for i, p in enumerate(body.prompts())]
        budget = min(body.token_budget(body.max_tokens, service.room(p), COMPLETION_DEFAULT_TOKENS) for p in prompts)
        generation = service.start(prompts, body.options(budget, service.default_stop), body.n)
        response = _Response("cmpl", "text_completion", model_name, body.n * len(prompts), sum(map(len, prompts)))
        if body.stream:
            return _sse(response.completion_chunks(generation, _include_usage(body)), generation)
        return await _unless_disconnected(request, generation, response.completion_result(generation))

    return api


def _harmony(message: ChatMessage) -> list[Message]:
    """The harmony messages of one API message. The API's `system` prompt is the developer's instructions in
    harmony (whose own system message carries the model identity and the reasoning effort)."""
    role = "developer" if message.role == "system" else message.role
    analysis = [Message("assistant", message.reasoning_content, "analysis")] if message.reasoning_content else []
    return [*analysis, Message(role, message.text())]


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "gptoss-export"}


def _include_usage(body: ChatRequest | CompletionRequest) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage


class _Response:
    """Builds one request's response objects (whole, or as stream chunks) from its generation's increments."""

    def __init__(self, prefix: str, kind: str, model: str, choices: int, prompt_tokens: int) -> None:
        """`prompt_tokens`: counted once per prompt, however many choices it has (as the OpenAI API does)."""
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.kind = kind
        self.model = model
        self.created = int(time.time())
        self.choices = [Choice() for _ in range(choices)]
        self.prompt_tokens = prompt_tokens

    def usage(self) -> dict[str, int]:
        completion = sum(c.tokens for c in self.choices)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}  # fmt: skip

    def envelope(self, kind: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices,
                **extra}  # fmt: skip

    async def _collect(self, generation: Generation) -> None:
        async for index, increment in generation:
            self._add(index, increment)

    def _add(self, index: int, increment: Increment) -> Choice:
        choice = self.choices[index]
        choice.text += increment.text
        choice.tokens += len(increment.token_ids)
        choice.finish_reason = increment.finish_reason
        return choice

    # ------------------------------------------------------------------ chat

    async def chat_result(self, generation: Generation) -> dict[str, Any]:
        await self._collect(generation)
        choices = []
        for index, choice in enumerate(self.choices):
            reply = parse_reply(choice.text)
            message = {"role": "assistant", "content": reply.final, "reasoning_content": reply.analysis or None}
            choices.append({"index": index, "message": message, "finish_reason": choice.finish_reason,
                            "logprobs": None})  # fmt: skip
        return self.envelope(self.kind, choices, usage=self.usage())

    async def chat_chunks(self, generation: Generation, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        chunk = f"{self.kind}.chunk"
        for index in range(len(self.choices)):
            delta = {"role": "assistant", "content": ""}
            yield self.envelope(chunk, [{"index": index, "delta": delta, "finish_reason": None, "logprobs": None}])
        async for index, increment in generation:
            choice = self._add(index, increment)
            reasoning, content = choice.channels.feed(increment.text, increment.finish_reason is not None)
            delta = {key: value for key, value in (("reasoning_content", reasoning), ("content", content)) if value}
            if delta or choice.finish_reason:
                entry = {"index": index, "delta": delta, "finish_reason": choice.finish_reason, "logprobs": None}
                yield self.envelope(chunk, [entry])
        if include_usage:
            yield self.envelope(chunk, [], usage=self.usage())

    # ------------------------------------------------------------------ completions

    async def completion_result(self, generation: Generation) -> dict[str, Any]:
        await self._collect(generation)
        choices = [
            {"index": index, "text": choice.text, "finish_reason": choice.finish_reason, "logprobs": None}
            for index, choice in enumerate(self.choices)
        ]
        return self.envelope(self.kind, choices, usage=self.usage())

    async def completion_chunks(self, generation: Generation, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        async for index, increment in generation:  # one chunk per token (its text may be held back: "")
            choice = self._add(index, increment)
            entry = {"index": index, "text": increment.text, "finish_reason": choice.finish_reason, "logprobs": None}
            yield self.envelope(self.kind, [entry])
        if include_usage:
            yield self.envelope(self.kind, [], usage=self.usage())


async def _unless_disconnected(
    request: Request, generation: Generation, result: Coroutine[Any, Any, dict[str, Any]]
) -> Response:
    """The JSON response of `result`, unless the client disconnects first: then the generation is cancelled (its
    rows freed) and nobody is answered."""
    disconnect = asyncio.ensure_future(request.receive())  # the body is read: the next message is the disconnect
    work = asyncio.ensure_future(result)
    try:
        await asyncio.wait({disconnect, work}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return JSONResponse(work.result())
        log.info("client disconnected; request cancelled")
        return Response(status_code=499)
    finally:  # also when the server shuts down under this request
        disconnect.cancel()
        if not work.done():
            generation.cancel()
            work.cancel()


def _sse(chunks: AsyncIterator[dict[str, Any]], generation: Generation) -> StreamingResponse:
    """Server-sent events: one `data:` line per chunk, an error object if generation fails midway, then [DONE].
    Leaving early (the client disconnected) cancels the generation, which frees its rows."""

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield _event(chunk)
        except ApiError as error:
            log.warning("stream ended by an error: %s", error.message)
            yield _event(error.body())
        finally:
            generation.cancel()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
