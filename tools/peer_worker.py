"""One peer runtime's side of `bench`, run in a process of its own so that its peak memory is its own.

Reads `{"runtime", "model", "runs": [{"prompts": [[ids]], "new_tokens": n}, ...]}` as JSON on stdin and prints one
JSON line per run: `{"ttft_s", "decode_s", "peak_mib"}`, where `ttft_s` is the prefill of all prompts together
and `decode_s` the `new_tokens - 1` greedy steps after it. Standalone (numpy and the peer's own package only): the
ONNX Runtime GenAI peer runs it with the Python of its own virtual environment, where gptoss is not installed.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Timed = Callable[[np.ndarray, int], tuple[float, float]]


def huggingface(model_dir: str) -> Timed:
    """Hugging Face transformers' GPT-OSS, float32, eager, its own KV cache."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    model = transformers.GptOssForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def timed(prompts: np.ndarray, new_tokens: int) -> tuple[float, float]:
        with torch.no_grad():
            start = time.perf_counter()
            out = model(torch.from_numpy(prompts).long(), use_cache=True)
            ttft = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(new_tokens - 1):
                out = model(out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
            return ttft, time.perf_counter() - start

    return timed


def ort_genai(model_dir: str) -> Timed:
    """ONNX Runtime GenAI on the model its builder wrote, greedy."""
    import onnxruntime_genai as og

    model = og.Model(model_dir)

    def timed(prompts: np.ndarray, new_tokens: int) -> tuple[float, float]:
        params = og.GeneratorParams(model)
        batch, length = prompts.shape
        params.set_search_options(max_length=length + new_tokens, batch_size=batch, do_sample=False)
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(prompts.astype(np.int32))  # runs the prompt: its logits are ready afterwards
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        generator.generate_next_token()  # picks the first token from the prompt's logits: no model run
        for _ in range(new_tokens - 1):
            generator.generate_next_token()  # runs the model on the last token, then picks the next
        return ttft, time.perf_counter() - start

    return timed


RUNTIMES = {"huggingface": huggingface, "ort-genai": ort_genai}


def main() -> None:
    job = json.load(sys.stdin)
    timed = RUNTIMES[job["runtime"]](job["model"])
    for run in job["runs"]:
        ttft, decode = timed(np.array(run["prompts"], dtype=np.int64), run["new_tokens"])
        print(json.dumps({"ttft_s": ttft, "decode_s": decode, "peak_mib": peak_mib()}), flush=True)


def peak_mib() -> float:
    """This process's peak resident memory. On Linux from VmHWM, which starts afresh at exec: `ru_maxrss` keeps the
    peak of the process that forked this one."""
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
