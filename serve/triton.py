"""Triton Inference Server through PyTriton: the engine as two Triton models over one scheduler.

- `MODEL` (non-decoupled): one response per request, for HTTP and gRPC `infer`; as many model instances as the
  engine has cache rows, so concurrent requests run side by side in the scheduler.
- `MODEL_stream` (decoupled): one response per generated increment, for gRPC streaming (and Triton's HTTP
  `generate_stream`); its infer function is asynchronous, so one instance runs any number of requests at once.

Both take `text_input` (BYTES [1]) and optional `max_tokens` (INT32), `temperature` (FP32, 0 = greedy, the default),
`top_p` (FP32), `top_k` (INT32) and `seed` (INT64), each of shape [1]; they answer `text_output` (BYTES [1]: the
whole text, or the increment's), `finish_reason` (BYTES [1]: empty while running) and `completion_tokens` (INT32
[1]). Generation stops at the engine's end tokens.
"""

from __future__ import annotations

import logging
import os
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from gptoss.runtime import Engine, GptOssError

from .errors import ApiError
from .metrics import Metrics
from .service import Generation, GenerationOptions, GenerationService

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 64
STREAM_SUFFIX = "_stream"


class RequestError(Exception):
    """An error answered to the Triton client as its message alone: PyTriton sends the client the formatted
    exception, so this one hides its traceback (the server's log keeps it)."""

    @property
    def __traceback__(self) -> None:  # type: ignore[override]
        return None

    @__traceback__.setter
    def __traceback__(self, _: Any) -> None:
        pass


class TritonModels:
    """The infer functions of both models, over one `GenerationService`."""

    def __init__(self, service: GenerationService) -> None:
        self.service = service

    def _start(self, request: dict[str, np.ndarray]) -> Generation:
        try:
            prompt = _scalar(request, "text_input").decode("utf-8")
            ids = self.service.encode(prompt, "text_input")
            options = GenerationOptions(
                max_tokens=int(_scalar(request, "max_tokens", min(DEFAULT_MAX_TOKENS, self.service.room(ids)))),
                temperature=float(_scalar(request, "temperature", 0.0)), top_p=float(_scalar(request, "top_p", 1.0)),
                top_k=int(_scalar(request, "top_k", 0)), seed=_optional_int(_scalar(request, "seed", None)),
                stop=tuple(sorted(self.service.engine.default_stop_ids())),
            )  # fmt: skip
            if options.temperature < 0:
                raise RequestError(f"temperature must be >= 0, got {options.temperature}")
            return self.service.start([ids], options)
        except ApiError as error:
            raise RequestError(error.message) from None
        except ValueError as error:  # text that is not UTF-8, a number that is not finite
            raise RequestError(f"bad request: {error}") from None

    async def infer(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Non-decoupled: the whole completion of each request."""
        responses = []
        for request in requests:
            text, tokens, reason = [], 0, ""
            try:
                async for _, increment in self._start(request):
                    text.append(increment.text)
                    tokens += len(increment.token_ids)
                    reason = increment.finish_reason or reason
            except ApiError as error:
                raise RequestError(error.message) from None
            responses.append(_outputs("".join(text), reason, tokens))
        return responses

    async def stream(self, requests: list[dict[str, np.ndarray]]) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        """Decoupled: one response per increment of the (single) request."""
        if len(requests) != 1:
            raise RequestError(f"the streaming model takes one request at a time, got {len(requests)}")
        try:
            async for _, increment in self._start(requests[0]):
                yield [_outputs(increment.text, increment.finish_reason or "", len(increment.token_ids))]
        except ApiError as error:
            raise RequestError(error.message) from None


def serve_triton(
    engine: Engine, model_name: str, host: str, http_port: int, grpc_port: int, metrics_port: int, max_queue: int
) -> None:
    """Serve through Triton Inference Server until interrupted."""
    with start_triton(engine, model_name, host, http_port, grpc_port, metrics_port, max_queue) as triton:
        log.info("Triton serving %s and %s%s: HTTP %s:%d, gRPC %s:%d, metrics %s:%d", model_name, model_name,
                 STREAM_SUFFIX, host, http_port, host, grpc_port, host, metrics_port)  # fmt: skip
        triton.serve()


def start_triton(
    engine: Engine, model_name: str, host: str, http_port: int, grpc_port: int, metrics_port: int,
    max_queue: int = 64,
):  # fmt: skip
    """A started `pytriton.triton.Triton` (a context manager) serving both models of `engine`."""
    check_environment()
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    service = GenerationService(engine, max_queue, Metrics(engine.occupancy))
    models = TritonModels(service)
    inputs = [
        Tensor(name="text_input", dtype=bytes, shape=(1,)),
        Tensor(name="max_tokens", dtype=np.int32, shape=(1,), optional=True),
        Tensor(name="temperature", dtype=np.float32, shape=(1,), optional=True),
        Tensor(name="top_p", dtype=np.float32, shape=(1,), optional=True),
        Tensor(name="top_k", dtype=np.int32, shape=(1,), optional=True),
        Tensor(name="seed", dtype=np.int64, shape=(1,), optional=True),
    ]
    outputs = [
        Tensor(name="text_output", dtype=bytes, shape=(1,)),
        Tensor(name="finish_reason", dtype=bytes, shape=(1,)),
        Tensor(name="completion_tokens", dtype=np.int32, shape=(1,)),
    ]
    config = TritonConfig(
        http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port, metrics_address=host,
        metrics_port=metrics_port, exit_timeout_secs=5,
    )  # fmt: skip
    triton = Triton(config=config)
    triton.bind(model_name, [models.infer] * engine.manifest.max_batch, inputs, outputs,
                config=ModelConfig(batching=False))  # fmt: skip
    triton.bind(model_name + STREAM_SUFFIX, models.stream, inputs, outputs,
                config=ModelConfig(batching=False, decoupled=True))  # fmt: skip
    triton.run()
    return triton


def check_environment() -> None:
    """Fail early, in one line, where PyTriton cannot work; let its server find this interpreter's libpython."""
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise GptOssError("--triton needs PyTriton: pip install -e '.[triton]'") from None
    if int(np.__version__.split(".")[0]) >= 2:
        raise GptOssError(
            f"--triton needs numpy < 2 (found {np.__version__}): PyTriton's Triton Python-backend stub is built for "
            "numpy 1 and misreads numpy 2 arrays; pip install 'numpy<2'"
        )
    # Triton's Python backend stub links libpython3.X.so.1.0; the loader would take the system's, whose built-in
    # modules may not match this interpreter's standard library (pyenv, conda). Point it at ours first.
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and (Path(libdir) / library).exists():
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        if libdir not in paths:
            os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def _scalar(request: dict[str, np.ndarray], name: str, default: Any = ...) -> Any:
    """The single value of input `name` (`default` when the client left the optional input out)."""
    if name not in request:
        if default is ...:
            raise RequestError(f"input {name} is required")
        return default
    values = np.asarray(request[name]).reshape(-1)
    if values.size != 1:
        raise RequestError(f"input {name} must hold one value, got {values.size}")
    return values[0]


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _outputs(text: str, finish_reason: str, tokens: int) -> dict[str, np.ndarray]:
    return {
        "text_output": np.array([text.encode("utf-8")], dtype=object),
        "finish_reason": np.array([finish_reason.encode()], dtype=object),
        "completion_tokens": np.array([tokens], dtype=np.int32),
    }
