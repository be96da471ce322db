"""The OpenAI-compatible server (`gptoss-export serve`), driven over loopback with the official `openai` client and
raw HTTP: its answers equal the engine's own, concurrent requests batch without changing greedy results, a client
that disconnects frees its row, and every bad request gets a 4xx JSON error while the server keeps answering."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from gptoss.runtime import Engine
from gptoss.runtime.chat import Message, parse_reply
from gptoss.serve.harmony_stream import ChannelStream
from gptoss.serve.server import serve_in_background

MODEL = "demo"
WAIT = 60.0  # seconds: only a bound on waiting for the server to settle, never a measured result


@pytest.fixture(scope="module")
def engine(engines) -> Engine:
    """The reference: an engine of its own beside the served one, so each of its calls runs alone."""
    return Engine.load(engines["causal"])  # max_batch 4, max_seq_len 256


@pytest.fixture(scope="module")
def url(engines):
    with serve_in_background(Engine.load(engines["causal"]), MODEL) as base:
        yield base


@pytest.fixture(scope="module")
def client(url) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def _settle(url: str) -> None:
    """Wait until no request runs or waits in the engine."""
    event = threading.Event()
    for _ in range(int(WAIT / 0.02)):
        if _metric(url, "gptoss_running_requests") == 0 and _metric(url, "gptoss_queue_depth") == 0:
            return
        event.wait(0.02)
    raise AssertionError("the server did not settle")


def test_models_health_and_metrics(client, url):
    assert [model.id for model in client.models.list()] == [MODEL]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 200
    for name in ("gptoss_requests_total", "gptoss_queue_depth", "gptoss_time_to_first_token_seconds_bucket",
                 "gptoss_inter_token_latency_seconds_bucket", "gptoss_generated_tokens_total"):  # fmt: skip
        assert name in metrics.text


CONVERSATION = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is GPT-OSS?"}]


def _alone(engine: Engine, conversation: list[dict], tokens: int, effort: str = "low"):
    """What `Engine.chat` answers by itself (the API's system prompt is harmony's developer message)."""
    messages = [Message("developer" if m["role"] == "system" else m["role"], m["content"]) for m in conversation]
    return engine.chat(messages, reasoning_effort=effort, max_new_tokens=tokens)


def test_chat_equals_engine_chat_streamed_or_not(client, engine):
    expected = _alone(engine, CONVERSATION, 24)
    options = dict(model=MODEL, messages=CONVERSATION, temperature=0, max_tokens=24, reasoning_effort="low")
    whole = client.chat.completions.create(**options)
    message = whole.choices[0].message
    assert message.content == expected.final
    assert (message.reasoning_content or "") == expected.analysis
    assert whole.usage.completion_tokens == 24 or whole.choices[0].finish_reason == "stop"

    content, reasoning, reasons, usage = [], [], [], None
    for chunk in client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
            reasons.append(choice.finish_reason)
    assert "".join(content) == expected.final
    assert "".join(reasoning) == expected.analysis
    assert reasons[-1] == whole.choices[0].finish_reason
    assert usage.model_dump() == whole.usage.model_dump()


def test_completions_equal_engine_generate(client, engine):
    for prompt in ("Hello world", [5, 17, 99, 230]):
        expected = engine.generate(prompt, max_new_tokens=12)[0]
        result = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=12)
        assert result.choices[0].text == expected.text
        assert result.choices[0].finish_reason == expected.finish_reason
        assert result.usage.prompt_tokens == len(expected.prompt_ids)
        assert result.usage.completion_tokens == len(expected.token_ids)
        stream = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=12, stream=True)
        assert "".join(chunk.choices[0].text for chunk in stream) == expected.text


def test_sampled_choices_follow_their_seeds(client, engine):
    """`n` choices with a seed: choice i samples like `Engine.generate` with seed + i; and stop strings apply."""
    options = dict(do_sample=True, temperature=0.8, top_p=0.9, max_new_tokens=10)
    expected = [engine.generate("GPT-OSS is", seed=7 + i, **options)[0].text for i in range(3)]
    result = client.completions.create(
        model=MODEL, prompt="GPT-OSS is", n=3, seed=7, temperature=0.8, top_p=0.9, max_tokens=10
    )
    assert [choice.text for choice in sorted(result.choices, key=lambda c: c.index)] == expected
    stop = expected[0][3:5]
    stopped = client.completions.create(model=MODEL, prompt="GPT-OSS is", seed=7, temperature=0.8, top_p=0.9,
                                        max_tokens=10, stop=[stop])  # fmt: skip
    assert stopped.choices[0].text == expected[0][: expected[0].find(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_sixteen_concurrent_greedy_chats_equal_each_alone(client, engine, url):
    conversations = [[{"role": "user", "content": f"Question {i}: why is the sky {'blue' * (1 + i % 3)}?"}]
                     for i in range(16)]  # fmt: skip
    alone = [_alone(engine, conversation, 16, "medium") for conversation in conversations]
    start = threading.Barrier(16)

    def ask(conversation: list[dict]):
        start.wait()  # all sixteen at once: they queue for the engine's 4 rows and share them
        return client.chat.completions.create(model=MODEL, messages=conversation, temperature=0, max_tokens=16)

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, conversations))
    for reply, result in zip(alone, together, strict=True):
        assert result.choices[0].message.content == reply.final
        assert (result.choices[0].message.reasoning_content or "") == reply.analysis
    _settle(url)
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_client_leaving_mid_stream_frees_its_row(client, engine, url):
    _settle(url)
    before = _metric(url, "gptoss_generated_tokens_total")
    prompt = [11, 12, 13, 14]
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 240, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body) as response:
        events = (line for line in response.iter_lines() if line.startswith("data: "))
        received = [json.loads(next(events)[6:]) for _ in range(3)]
    assert all(event["choices"][0]["finish_reason"] is None for event in received)
    _settle(url)  # the row was released...
    assert _metric(url, "gptoss_generated_tokens_total") - before < 240  # ...long before its 240 tokens
    expected = engine.generate(prompt, max_new_tokens=8, stop=[])[0]
    again = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=8, extra_body={
        "ignore_eos": True})  # fmt: skip
    assert again.choices[0].text == expected.text


def test_a_client_leaving_before_its_answer_frees_its_row(url):
    """The same for a request that is not streamed: the server notices the closed connection."""
    import socket

    _settle(url)
    before = _metric(url, "gptoss_generated_tokens_total")
    body = json.dumps({"model": MODEL, "prompt": [21, 22, 23, 24], "max_tokens": 250, "temperature": 0,
                       "ignore_eos": True}).encode()  # fmt: skip
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        event = threading.Event()
        for _ in range(int(WAIT / 0.005)):
            if _metric(url, "gptoss_running_requests"):  # admitted: now leave
                break
            event.wait(0.005)
    _settle(url)
    assert _metric(url, "gptoss_generated_tokens_total") - before < 250


BAD_REQUESTS = [
    ("/v1/chat/completions", b'{"model": "demo", "messages": [', 400, "invalid_json"),
    ("/v1/completions", b"not json at all", 400, "invalid_json"),
    ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404,
     "model_not_found"),
    ("/v1/completions", {"model": "nope", "prompt": "hi"}, 404, "model_not_found"),
    ("/v1/chat/completions", {"model": "demo", "messages": []}, 400, "invalid_value"),
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": "wizard", "content": "hi"}]}, 400,
     "invalid_value"),
    ("/v1/completions", {"model": "demo", "prompt": "hi", "temperature": -1}, 400, "invalid_value"),
    ("/v1/completions", {"model": "demo", "prompt": "hi", "top_p": 0}, 400, "invalid_value"),
    ("/v1/completions", {"model": "demo", "prompt": "hi", "max_tokens": 0}, 400, "invalid_value"),
    ("/v1/completions", {"model": "demo", "prompt": "hi", "n": "many"}, 400, "invalid_value"),
    ("/v1/completions", {"model": "demo", "prompt": "hi", "logprobs": 2}, 400, "unsupported_parameter"),
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "tools": [{}]}, 400,
     "unsupported_parameter"),
    ("/v1/completions", {"model": "demo", "prompt": [1, 2, 100000]}, 400, None),
    ("/v1/completions", {"model": "demo", "prompt": []}, 400, None),
    ("/v1/completions", {"model": "demo", "prompt": "broken \ud800 text"}, 400, None),
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": "user", "content": "\udfff"}]}, 400,
     "invalid_value"),
    ("/v1/completions", {"model": "demo", "prompt": "hi " * 300}, 400, "context_length_exceeded"),
    ("/v1/completions", {"model": "demo", "prompt": "hi", "max_tokens": 1000}, 400, "context_length_exceeded"),
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": "user", "content": "hi " * 300}]}, 400,
     "context_length_exceeded"),
    ("/v1/nothing", {"model": "demo"}, 404, None),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "code"), BAD_REQUESTS)
def test_bad_requests_get_4xx_json_and_the_server_stays_up(url, path, body, status, code):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{url}{path}", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "Traceback" not in error["message"] and error["message"]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_a_full_queue_answers_429(engines):
    """With every row busy and the queue full, the next request gets 429; the others still complete."""
    engine = Engine.load(engines["batch2"])  # max_batch 2
    gate, step = threading.Event(), engine.backend.step
    engine.backend.step = lambda *args: (gate.wait(), step(*args))[1]  # hold the engine until released
    body = {"model": MODEL, "prompt": [7, 8, 9], "max_tokens": 3, "temperature": 0}
    with serve_in_background(engine, MODEL, max_queue=1) as base, ThreadPoolExecutor(3) as pool:
        admitted = [pool.submit(httpx.post, f"{base}/v1/completions", json=body, timeout=WAIT) for _ in range(3)]
        waiting = threading.Event()
        for _ in range(int(WAIT / 0.02)):  # until all three are admitted (two running, one queued)
            if _metric(base, "gptoss_running_requests") + _metric(base, "gptoss_queue_depth") == 3:
                break
            waiting.wait(0.02)
        refused = httpx.post(f"{base}/v1/completions", json=body)
        gate.set()
        answers = [future.result() for future in admitted]
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert len({answer.json()["choices"][0]["text"] for answer in answers}) == 1
        assert httpx.post(f"{base}/v1/completions", json=body).status_code == 200


def test_channel_stream_adds_up_to_parse_reply():
    """Streaming deltas of a harmony reply, cut anywhere, add up to what parse_reply makes of the whole."""
    replies = [
        "<|channel|>analysis<|message|>Think <|end|> twice.<|end|><|start|>assistant<|channel|>final<|message|>Yes.",
        "plain text without markup",
        "<|channel|>final<|message|>a < b and <|en",
    ]
    for text in replies:
        whole = parse_reply(text)
        for cut in range(1, len(text)):
            stream = ChannelStream()
            parts = [stream.feed(text[:cut], False), stream.feed(text[cut:], True)]
            assert "".join(p[0] for p in parts) == whole.analysis
            assert "".join(p[1] for p in parts) == whole.final


def test_cli_serves_until_stopped(engines, tmp_path):
    """`gptoss-export serve` on a free port answers a completion, then stops cleanly on Ctrl-C (SIGINT)."""
    import signal
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "gptoss.exporter", "serve", str(engines["causal"]), "--port", str(port),
               "--model-name", MODEL]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parent)
    try:
        for line in process.stderr:
            if "serving" in line:
                break
        response = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=WAIT,
                              json={"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0})  # fmt: skip
        assert response.status_code == 200
        assert response.json()["usage"]["completion_tokens"] == 4
    finally:
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=WAIT)[1]
    # uvicorn shuts down gracefully, then raises the SIGINT again; asyncio turns that into KeyboardInterrupt (status
    # 130, the convention for Ctrl-C) when it cancels the main task before the task ends, and under load the task can
    # end first (status 0): both are a clean stop, which is what this test is about.
    assert process.returncode in (0, 128 + signal.SIGINT)
    assert "Traceback" not in rest


def test_triton_where_pytriton_cannot_run_is_a_one_line_error(engines):
    """Without an environment for Triton's Python-backend stub (here: one named that does not exist), `serve --triton`
    says so in one line."""
    environment = {**os.environ, "GPTOSS_TRITON_STUB_ENV": "/nonexistent"}
    result = subprocess.run([sys.executable, "-m", "gptoss.exporter", "serve", str(engines["causal"]), "--triton"],
                            capture_output=True, text=True, timeout=WAIT, env=environment)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: --triton needs ") and result.stderr.count("\n") == 1
