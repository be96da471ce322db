"""`gptoss-export serve --triton`: the engine in a real Triton Inference Server (PyTriton), driven with
`tritonclient` over HTTP and gRPC (plain and streaming) and with Triton's HTTP `generate_stream`; answers equal the
engine's own, concurrent requests share the scheduler, and a bad request gets an error while the server stays up."""

from __future__ import annotations

import json
import queue
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from gptoss.runtime import Engine

pytest.importorskip("pytriton", reason="PyTriton is not installed (pip install -e '.[triton]')")
if int(np.__version__.split(".")[0]) >= 2:
    pytest.skip("PyTriton's Triton Python-backend stub needs numpy < 2", allow_module_level=True)

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from gptoss.serve.triton import STREAM_SUFFIX, start_triton  # noqa: E402

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
