"""One Engine shared by many threads: every call gets exactly its serial result, and no way of ending a call
(a break, an error in the step or the sampler) leaves the engine unusable."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pytest
from conftest import random_ids

from gptoss.runtime import Engine, GptOssError

THREADS = 16
REPEATS = 3


@dataclass(frozen=True)
class Job:
    """One thread's call: 1-3 prompts, greedy or seeded sampling, plain, streamed, or streamed and left early."""

    prompts: tuple[tuple[int, ...], ...]
    sample: bool
    stream: bool
    stop_after: int | None = None  # increments read before breaking off a stream

    def run(self, engine: Engine) -> list[list[int]]:
        """Tokens per prompt (for a broken-off stream, those received before leaving)."""
        options = dict(max_new_tokens=12, stop=[], do_sample=self.sample, seed=99 if self.sample else None)
        prompts = [list(p) for p in self.prompts]
        if not self.stream:
            return [r.token_ids for r in engine.generate(prompts, **options)]
        tokens: list[list[int]] = [[] for _ in prompts]
        for count, increment in enumerate(engine.generate(prompts, stream=True, **options)):
            if count == self.stop_after:
                break
            tokens[increment.index] += increment.token_ids
        return tokens


def jobs() -> list[Job]:
    rng = np.random.default_rng(0)
    made = []
    for i in range(THREADS):
        count = 1 + i % 3  # mixed batch sizes: 1, 2 and 3 prompts against the engine's 4 rows
        lengths = rng.integers(3, 30, size=count)  # some longer than the window of 16
        prompts = tuple(tuple(random_ids(1, int(n), seed=100 * i + j)[0].tolist()) for j, n in enumerate(lengths))
        stream = i % 4 >= 2
        made.append(Job(prompts, sample=i % 2 == 1, stream=stream, stop_after=5 if i % 4 == 3 else None))
    return made


def _in_threads(engine: Engine, work: list[Job]) -> list[list[list[int]]]:
    start = threading.Barrier(len(work))

    def run(job: Job) -> list[list[int]]:
        start.wait()  # all threads call at once
        return job.run(engine)

    with ThreadPoolExecutor(len(work)) as pool:
        return list(pool.map(run, work))


def test_sixteen_threads_get_their_serial_results(engines):
    engine = Engine.load(engines["causal"])
    work = jobs()
    serial = [job.run(engine) for job in work]
    whole = [replace(job, stop_after=None).run(engine) for job in work]  # what a broken-off stream cut short
    for _ in range(REPEATS):
        together = _in_threads(engine, work)
        for job, alone, complete, concurrent in zip(work, serial, whole, together, strict=True):
            if job.stop_after is None:
                assert concurrent == alone
            else:
                # Which prompt's increments come first depends on when its rows were free; each prompt's tokens
                # are still a prefix of its serial tokens.
                assert sum(map(len, concurrent)) == job.stop_after
                assert all(c == a[: len(c)] for c, a in zip(concurrent, complete, strict=True))
    assert [job.run(engine) for job in work] == serial  # and the engine is as good as new


def test_classifiers_in_threads_match_serial(engines):
    engine = Engine.load(engines["token-classification"])
    texts = [random_ids(1, n, seed=n)[0].tolist() for n in (5, 9, 30, 17, 2, 11)]
    serial = [engine.classify([t])[0] for t in texts]
    with ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(lambda t: engine.classify([t])[0], texts))
    for alone, concurrent in zip(serial, together, strict=True):
        assert concurrent.labels == alone.labels
        # Batched with other inputs, a row goes through matrix kernels of another shape, which may sum in another
        # order: equal to float32 rounding (|scores| ~ 5, so ~1e-6), not bit for bit.
        np.testing.assert_allclose(concurrent.scores, alone.scores, rtol=1e-5, atol=1e-5)


def _expected(engine: Engine) -> list[list[int]]:
    return [r.token_ids for r in engine.generate(_prompts(), max_new_tokens=10, stop=[])]


def _prompts() -> list[list[int]]:
    return [random_ids(1, n, seed=n)[0].tolist() for n in (4, 19, 8, 11)]


@pytest.mark.parametrize("leave", ["break", "close", "drop"])
def test_an_abandoned_stream_releases_its_rows(engines, leave):
    engine = Engine.load(engines["causal"])
    expected = _expected(engine)
    stream = engine.generate(_prompts(), max_new_tokens=30, stream=True, stop=[])
    for count, _ in enumerate(stream):
        if count == 3:
            break
    if leave == "close":
        stream.close()
    elif leave == "drop":
        del stream
        gc.collect()
    else:
        del stream  # a `for ... break` drops the iterator as the loop ends
    assert _expected(engine) == expected


def test_an_error_in_the_sampler_or_the_step_fails_only_that_call(engines, monkeypatch):
    engine = Engine.load(engines["causal"])
    expected = _expected(engine)
    decoded = 0

    def failing_decode(ids: list[int]) -> str:
        nonlocal decoded
        decoded += 1
        if decoded == 5:
            raise RuntimeError("decoder broke")
        return ""

    with monkeypatch.context() as patch:
        patch.setattr(engine, "_decode", failing_decode)
        with pytest.raises(GptOssError, match="decoder broke"):
            engine.generate(_prompts(), max_new_tokens=10, stop=[])
    assert _expected(engine) == expected

    with monkeypatch.context() as patch:
        patch.setattr(engine.backend, "step", lambda *args: (_ for _ in ()).throw(MemoryError("device lost")))
        with pytest.raises(GptOssError, match="device lost"):
            engine.generate(_prompts(), max_new_tokens=10, stop=[])
    assert _expected(engine) == expected


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(do_sample=True, temperature=float("nan")), "temperature must be a positive finite number"),
        (dict(do_sample=True, top_k=2.5), "top_k must be an integer"),
        (dict(do_sample=True, top_p=float("nan")), "top_p must be a number"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(max_new_tokens=True), "max_new_tokens must be an integer"),
    ],
)
def test_bad_sampling_options_are_refused_and_the_engine_goes_on(engines, options, message):
    engine = Engine.load(engines["causal"])
    with pytest.raises(GptOssError, match=message):
        engine.generate(_prompts(), **{"max_new_tokens": 4, **options})
    assert len(engine.generate(_prompts(), max_new_tokens=4)) == 4


def test_seeded_sample_is_the_same_wherever_the_prompt_sits(engines):
    engine = Engine.load(engines["causal"])
    prompt = _prompts()[1]
    options = dict(max_new_tokens=10, do_sample=True, seed=5, stop=[])
    alone = engine.generate([prompt], **options)[0].token_ids
    placed = engine.generate([_prompts()[0], _prompts()[2], prompt], **options)[2].token_ids
    assert placed == alone


@pytest.mark.parametrize("prompt", [np.array([5, 9, 12], dtype=np.int64), [np.int32(5), np.int64(9)]])
def test_numpy_integer_prompts(engines, prompt):
    engine = Engine.load(engines["causal"])
    assert engine.generate(prompt, max_new_tokens=3, stop=[])[0].token_ids == engine.generate(
        [int(t) for t in prompt], max_new_tokens=3, stop=[]
    )[0].token_ids
