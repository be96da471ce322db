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

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
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
                stop=tuple(sorted(self.service.default_stop)),
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
    stub = check_environment()  # before the Triton object, which imports PyTriton
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
    with server_environment(stub):
        try:
            triton.run()
        except BaseException:  # a server that did not come up still has a process and a workspace to clean
            with suppress(Exception):
                triton.stop()
            raise
    return triton


# PyTriton 0.7's Python-backend stub (the process that tritonserver starts for each model instance; it runs PyTriton's
# proxy model, which relays tensors between Triton and the infer functions in this process) was built against numpy 1:
# under numpy 2 its pybind11 reads arrays wrongly ([1, 2, 3] arrives as [1, 1, 1]). Only the stub needs numpy 1. It
# relays tensors as raw bytes plus a `.npy`-style dtype header (shared memory and ZeroMQ), which reads the same under
# numpy 1 and 2, so this process keeps numpy 2 and the stub runs in a Python environment of its own with numpy 1.
STUB_NUMPY = "1.26.4"
STUB_ENV_VARIABLE = "GPTOSS_TRITON_STUB_ENV"  # a prepared stub environment, instead of the cached one (`stub_env`)


def check_environment() -> Path | None:
    """Fail early, in one line, where PyTriton cannot work here; prepare the stub's environment and return it
    (`stub_env`)."""
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise GptOssError(
            "--triton needs PyTriton: pip install -e '.[serve,triton]' && pip install --no-deps nvidia-pytriton==0.7.0"
        ) from None
    return stub_env()


def stub_env() -> Path | None:
    """The Python environment that Triton's Python-backend stub runs in: `$GPTOSS_TRITON_STUB_ENV` if set; else None
    (the stub shares this environment) where this process has numpy 1; else one made for the stub:

    a virtual environment of this interpreter whose site-packages holds numpy 1 and a `.pth` file naming this
    environment's site-packages (PyTriton, ZeroMQ), which come after it on the stub's `sys.path`. It lives in the user's
    cache and is made on first use (the Makefile's set-up makes it too): built in a temporary directory that is then
    renamed into place, so concurrent first uses and interrupted ones never leave a half-made environment behind."""
    if os.environ.get(STUB_ENV_VARIABLE):
        env = Path(os.environ[STUB_ENV_VARIABLE])
        if not (env / "bin" / "python3").exists():
            raise GptOssError(f"--triton needs a Python environment for Triton's Python-backend stub, and "
                              f"{STUB_ENV_VARIABLE}={env} is none (it has no bin/python3)")  # fmt: skip
        return env
    if int(np.__version__.split(".")[0]) < 2:
        return None
    import pytriton

    sites = list(dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
                                str(Path(pytriton.__file__).parents[1])]))  # fmt: skip
    key = hashlib.sha256("\n".join([sys._base_executable, *sites]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gptoss"
    env = cache / f"triton-stub-{sys.implementation.cache_tag}-numpy{STUB_NUMPY}-{key}"
    if env.is_dir():
        return env
    log.info("making the Python environment of Triton's Python-backend stub (numpy %s): %s", STUB_NUMPY, env)
    try:
        _make_stub_env(env, sites)
    except OSError as error:
        raise GptOssError(f"--triton needs a Python environment for Triton's Python-backend stub, and it cannot be "
                          f"made ({error}); make it yourself and set {STUB_ENV_VARIABLE}") from None  # fmt: skip
    return env


def _make_stub_env(env: Path, sites: list[str]) -> None:
    env.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{env.name}.", suffix=".partial", dir=env.parent))
    try:
        partial.chmod(0o755)
        venv.EnvBuilder(symlinks=True, with_pip=False).create(partial)  # paths inside do not name the directory
        site = Path(sysconfig.get_path("purelib", vars={"base": str(partial), "platbase": str(partial)}))
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                   "--only-binary=:all:", "--target", str(site), f"numpy=={STUB_NUMPY}"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or [f"pip exited with {result.returncode}"])[-1]
            raise GptOssError(
                f"--triton needs numpy {STUB_NUMPY} for Triton's Python-backend stub, and pip could not install it "
                f"({reason}); make that environment yourself and set {STUB_ENV_VARIABLE}"
            )
        (site / "gptoss-triton-stub.pth").write_text("".join(f"{path}\n" for path in sites))
        try:
            partial.rename(env)
        except OSError:  # another process got there first
            if not env.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


@contextmanager
def server_environment(env: Path | None) -> Iterator[None]:
    """While the block runs, `tritonserver` (started by PyTriton's `Triton.run`) gets what its stubs need; afterwards
    everything is as before, so no other child of this process inherits it:
    - the stub's Python environment `env` (`stub_env`; None: this one). PyTriton puts `bin` of "the Python backend's
      environment" first on the server's PATH, and the stub's embedded interpreter finds its `python3`, hence its
      `pyvenv.cfg` and its site-packages, there (it ignores PYTHONPATH);
    - this interpreter's LIBDIR first on LD_LIBRARY_PATH: the stub links libpython3.X.so.1.0, and the loader would
      take the system's, whose built-in modules may not match this interpreter's standard library (pyenv, conda)."""
    from pytriton.server import triton_server

    libdir = _libpython_dir()
    saved_getter, saved_path = triton_server.get_triton_python_backend_python_env, os.environ.get("LD_LIBRARY_PATH")
    if env is not None:
        triton_server.get_triton_python_backend_python_env = lambda: env
    if libdir is not None:
        rest = [p for p in (saved_path or "").split(":") if p and p != str(libdir)]
        os.environ["LD_LIBRARY_PATH"] = ":".join([str(libdir), *rest])
    try:
        yield
    finally:
        triton_server.get_triton_python_backend_python_env = saved_getter
        if saved_path is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved_path


def _libpython_dir() -> Path | None:
    libdir, library = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    return Path(libdir) if libdir and library and (Path(libdir) / library).exists() else None


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
