"""`gptoss-export serve --triton`: the engine in a real Triton Inference Server (PyTriton), driven with
`tritonclient` over HTTP and gRPC (plain and streaming) and with Triton's HTTP `generate_stream`; answers equal the
engine's own, concurrent requests share the scheduler, and a bad request gets an error while the server stays up.

Under numpy 2, Triton's Python-backend stubs run numpy 1 in an environment of their own (`stub_env`) while the infer
functions run here with numpy 2: an echo model checks that tensors of every kind cross that boundary bit for bit."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import httpx
import numpy as np
import pytest

from gptoss.runtime import Engine

pytest.importorskip("pytriton", reason="PyTriton is not installed (pip install -e '.[triton]')")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from gptoss.serve.triton import STREAM_SUFFIX, server_environment, start_triton, stub_env  # noqa: E402

MODEL = "demo"
TOKENS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def engine(engines) -> Engine:
    return Engine.load(engines["causal"])  # max_batch 4


@pytest.fixture(scope="module")
def ports(engine):
    ports = {"http": _free_port(), "grpc": _free_port(), "metrics": _free_port()}
    with start_triton(engine, MODEL, "127.0.0.1", ports["http"], ports["grpc"], ports["metrics"]):
        yield ports


def _inputs(module, prompt: str, max_tokens: int = TOKENS) -> list:
    text = module.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=object))
    tokens = module.InferInput("max_tokens", [1], "INT32")
    tokens.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    return [text, tokens]


def _answer(result) -> tuple[str, str, int]:
    return (result.as_numpy("text_output")[0].decode(), result.as_numpy("finish_reason")[0].decode(),
            int(result.as_numpy("completion_tokens")[0]))  # fmt: skip


def _expected(engine: Engine, prompt: str) -> tuple[str, str, int]:
    result = engine.generate(prompt, max_new_tokens=TOKENS)[0]
    return result.text, result.finish_reason, len(result.token_ids)


PROMPTS = ["Hello world", "GPT-OSS is", "The sky is blue because", "One, two, three,"]


def test_http_and_grpc_infer_equal_engine_generate(engine, ports):
    http = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
    try:
        assert http.is_model_ready(MODEL) and grpc.is_model_ready(MODEL + STREAM_SUFFIX)
        for prompt in PROMPTS[:2]:
            expected = _expected(engine, prompt)
            assert _answer(http.infer(MODEL, _inputs(httpclient, prompt))) == expected
            assert _answer(grpc.infer(MODEL, _inputs(grpcclient, prompt))) == expected
    finally:
        http.close()
        grpc.close()


def test_grpc_stream_equals_engine_generate(engine, ports):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
    responses: queue.SimpleQueue = queue.SimpleQueue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer(MODEL + STREAM_SUFFIX, _inputs(grpcclient, PROMPTS[2]))
        pieces, reason, tokens = [], "", 0
        while not reason:
            result, error = responses.get(timeout=60)
            assert error is None
            text, reason, count = _answer(result)
            pieces.append(text)
            tokens += count
    finally:
        client.stop_stream()
        client.close()
    assert len(pieces) == tokens  # one response per token
    assert ("".join(pieces), reason, tokens) == _expected(engine, PROMPTS[2])


def test_http_generate_stream_of_the_decoupled_model(engine, ports):
    """Triton's own HTTP streaming endpoint (server-sent events) on the decoupled model."""
    body = {"text_input": PROMPTS[3], "max_tokens": TOKENS}
    url = f"http://127.0.0.1:{ports['http']}/v2/models/{MODEL}{STREAM_SUFFIX}/generate_stream"
    with httpx.stream("POST", url, json=body, timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert "".join(event["text_output"] for event in events) == _expected(engine, PROMPTS[3])[0]


def test_concurrent_requests_equal_each_alone(engine, ports):
    expected = [_expected(engine, prompt) for prompt in PROMPTS * 2]

    def ask(prompt: str) -> tuple[str, str, int]:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}")
        try:
            return _answer(client.infer(MODEL, _inputs(httpclient, prompt)))
        finally:
            client.close()

    start = threading.Barrier(len(expected))
    with ThreadPoolExecutor(len(expected)) as pool:
        together = list(pool.map(lambda p: (start.wait(), ask(p))[1], PROMPTS * 2))
    assert together == expected


def test_a_bad_request_gets_an_error_and_the_server_stays_up(engine, ports):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}")
    try:
        with pytest.raises(InferenceServerException, match="maximum sequence is 256"):
            client.infer(MODEL, _inputs(httpclient, "hi " * 300))
        with pytest.raises(InferenceServerException, match="max_new_tokens must be an integer >= 1"):
            client.infer(MODEL, _inputs(httpclient, "hi", max_tokens=0))
        assert client.is_server_live()
        assert _answer(client.infer(MODEL, _inputs(httpclient, PROMPTS[0]))) == _expected(engine, PROMPTS[0])
    finally:
        client.close()


def test_a_bad_streaming_request_gets_its_message_alone(ports):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
    responses: queue.SimpleQueue = queue.SimpleQueue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer(MODEL + STREAM_SUFFIX, _inputs(grpcclient, "hi " * 300))
        _, error = responses.get(timeout=60)
    finally:
        client.stop_stream()
        client.close()
    assert "maximum sequence is 256" in str(error)
    assert "Traceback" not in str(error)


# Every dtype the stub relays, with the values most likely to go wrong: extremes, signed zeros, NaN and infinities,
# subnormals, byte strings with NUL and non-UTF-8 bytes; each a [2, 3] tensor, so that shape and order matter too.
ECHO = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "INT8": np.array([[-128, -1, 0], [1, 2, 127]], dtype=np.int8),
    "UINT8": np.array([[0, 1, 2], [127, 128, 255]], dtype=np.uint8),
    "INT16": np.array([[-32768, -1, 0], [1, 300, 32767]], dtype=np.int16),
    "UINT16": np.array([[0, 1, 256], [32768, 65534, 65535]], dtype=np.uint16),
    "INT32": np.array([[-(2**31), -1, 0], [1, 2, 2**31 - 1]], dtype=np.int32),
    "UINT32": np.array([[0, 1, 2], [2**31, 2**32 - 2, 2**32 - 1]], dtype=np.uint32),
    "INT64": np.array([[-(2**63), -1, 0], [1, 2**40 + 3, 2**63 - 1]], dtype=np.int64),
    "UINT64": np.array([[0, 1, 2], [2**63, 2**64 - 2, 2**64 - 1]], dtype=np.uint64),
    "FP16": np.array([[-0.0, 6e-8, 65504], [np.nan, -np.inf, 0.1]], dtype=np.float16),
    "FP32": np.array([[-0.0, 1e-45, 3.4e38], [np.nan, np.inf, 0.1]], dtype=np.float32),
    "FP64": np.array([[-0.0, 5e-324, 1.7e308], [np.nan, -np.inf, 0.1]], dtype=np.float64),
    "BYTES": np.array([[b"", b"\x00", b"a\x00b"], [b"\xff\xfe", "é".encode(), b"x" * 1000]], dtype=object),
}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and dtypes, and equal bits (NaN payloads and the sign of zero included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return a.tolist() == b.tolist() if a.dtype == object else a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def echo():
    """A Triton with an identity model over every dtype, started as `start_triton` starts ours; yields its ports and
    the tensors its infer function last received (in this process, with numpy 2)."""
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    received = {}

    def identity(requests):
        received.clear()
        received.update(requests[0].data)
        return [dict(request.data) for request in requests]

    dtypes = {name: (bytes if name == "BYTES" else values.dtype.type) for name, values in ECHO.items()}
    ports = {"http": _free_port(), "grpc": _free_port(), "metrics": _free_port()}
    config = TritonConfig(http_address="127.0.0.1", http_port=ports["http"], grpc_address="127.0.0.1",
                          grpc_port=ports["grpc"], metrics_address="127.0.0.1", metrics_port=ports["metrics"],
                          exit_timeout_secs=5)  # fmt: skip
    triton = Triton(config=config)
    triton.bind("echo", identity, [Tensor(name=n, dtype=t, shape=(2, 3)) for n, t in dtypes.items()],
                [Tensor(name=n, dtype=t, shape=(2, 3)) for n, t in dtypes.items()],
                config=ModelConfig(batching=False))  # fmt: skip
    with server_environment(stub_env()):
        triton.run()
    with triton:  # stops it at the end
        yield ports, received


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tensors_cross_between_the_numpy_1_stub_and_numpy_2_here_exactly(echo, protocol):
    ports, received = echo
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(f"127.0.0.1:{ports[protocol]}")
    try:
        inputs = []
        for name, values in ECHO.items():
            tensor = module.InferInput(name, list(values.shape), name)
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
        result = client.infer("echo", inputs)
    finally:
        client.close()
    for name, values in ECHO.items():
        assert _same(received[name], values), f"{name} into the infer function: {received[name]!r}"
        assert _same(result.as_numpy(name), values), f"{name} back to the client: {result.as_numpy(name)!r}"


def test_the_stubs_run_numpy_1_and_this_process_numpy_2(echo):
    """What the test above relies on: under numpy 2 here, each stub of this server has numpy 1 loaded."""
    env = stub_env()
    if env is None:
        pytest.skip(f"numpy {np.__version__} here: the stubs share this environment")
    parents = _parents()
    servers = [pid for pid, parent in parents.items() if parent == os.getpid() and _program(pid) == "tritonserver"]
    stubs = [pid for pid in parents if _program(pid) == "triton_python_backend_stub" and _under(pid, servers, parents)]
    assert stubs
    for pid in stubs:
        numpy_libraries = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                           if "_multiarray_umath" in line}  # fmt: skip
        assert len(numpy_libraries) == 1
        library = Path(numpy_libraries.pop())
        assert library.is_relative_to(env) and library.parent.name == "core"  # numpy 2 has it in numpy/_core
    assert int(np.__version__.split(".")[0]) >= 2


def _parents() -> dict[int, int]:
    """Each process's parent (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):  # a process that is gone meanwhile
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    return parents


def _program(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name
    except OSError:
        return ""


def _under(pid: int, ancestors: list[int], parents: dict[int, int]) -> bool:
    while pid in parents and pid not in ancestors:
        pid = parents[pid]
    return pid in ancestors
