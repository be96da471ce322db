"""The ASGI application: the OpenAI routes, /health, /metrics, and errors as OpenAI-style JSON (never a traceback)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptoss.runtime import Engine

from .errors import ApiError, server_error
from .metrics import Metrics
from .openai_api import router
from .service import GenerationService

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 64


def create_app(engine: Engine, model_name: str, max_queue: int = DEFAULT_MAX_QUEUE) -> FastAPI:
    """An app serving `engine` as `model_name`; at most max_batch requests run and `max_queue` wait, more get 429."""
    metrics = Metrics(engine.occupancy)
    service = GenerationService(engine, max_queue, metrics)
    app = FastAPI(title="gptoss-export", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router(service, model_name))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return _json(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return _json(_validation_error(error))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return _json(ApiError(error.status_code, str(error.detail), type=kind))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _json(server_error(f"internal error ({type(error).__name__})"))

    app.add_middleware(_CountRequests, metrics=metrics)
    return app


class _CountRequests:
    """ASGI middleware: counts every HTTP response by path and status (404s under `other`, so that unknown paths
    add no labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            endpoint = "other" if status == 404 else scope["path"]
            self.metrics.requests.labels(endpoint, str(status)).inc()


def _json(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _validation_error(error: RequestValidationError) -> ApiError:
    """The first problem pydantic found, as a 400 naming the parameter (malformed JSON included)."""
    first = error.errors()[0]
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "")
        return ApiError(400, f"the request body is not valid JSON ({reason})", code="invalid_json")
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    message = first.get("msg", "invalid request")
    return ApiError(400, f"{param}: {message}" if param else message, param=param, code="invalid_value")
