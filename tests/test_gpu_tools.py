"""The GPU tools on a machine without a GPU: the cuda backend and the GPU benchmarks refuse in one line, `gpu-check`
exits at once saying so; and the decode benchmark's byte count at gpt-oss-20b dimensions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptoss.exporter.config import parse_config
from gptoss.exporter.loading import empty_model
from gptoss.runtime import Engine, GptOssError
from gptoss.tools.bench_decode import step_bytes
from gptoss.tools.demo_model import hub_config

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


@needs_no_gpu
@pytest.mark.parametrize(
    "tool, status, message",
    [
        ("gpu_check", 2, "gpu-check: no CUDA GPU visible to torch"),
        ("bench_decode", 1, "bench_decode needs an NVIDIA GPU"),
        ("bench_kernels", 1, "bench_kernels needs an NVIDIA GPU"),
    ],
)
def test_gpu_tools_exit_at_once_without_a_gpu(tool, status, message):
    result = subprocess.run([sys.executable, "-m", f"gptoss.tools.{tool}"], capture_output=True, text=True)
    assert result.returncode == status
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr


@needs_no_gpu
def test_cuda_backend_without_a_gpu_is_a_one_line_error(checkpoint_factory):
    with pytest.raises(GptOssError, match="the cuda backend needs an NVIDIA GPU"):
        Engine.load(checkpoint_factory("demo"), backend="cuda")


def test_decode_bytes_at_gpt_oss_20b_dimensions():
    """A decode step reads the dense weights (2.43 GB: attention 1.27, output projection 1.16), the selected
    experts (13.3 MB each, 4 of 32 per layer for one token, all 32 for a large batch) and the cache."""
    config = parse_config(hub_config("gpt-oss-20b"))
    model = empty_model(config, "causal-lm", torch.bfloat16)
    one, many = step_bytes(model, config, 1, 0), step_bytes(model, config, 1024, 0)
    expert = 13.3e6
    assert one == pytest.approx(2.43e9 + 24 * 4 * expert, rel=0.02)
    assert many - 1024 * config.hidden_size * 2 == pytest.approx(2.43e9 + 24 * 32 * expert, rel=0.02)


ROUTED_MODEL = """
import json, sys
import torch
from conftest import hf_greedy, load_hf
from gptoss.runtime.backends.cuda import CudaBackend
from gptoss.runtime.backends.torch import checkpoint_manifest
from gptoss.runtime.engine import Engine

checkpoint, prompt = sys.argv[1], json.loads(sys.argv[2])
manifest = checkpoint_manifest(checkpoint)
engine = Engine(manifest, CudaBackend(manifest, device="cpu"), None)
tokens = engine.generate(prompt, max_new_tokens=16, stop=[])[0].token_ids
with engine.exclusive_rows(1) as rows:
    logits = torch.from_numpy(rows.step({rows.acquire(): prompt})[0])
hf = load_hf(checkpoint)
with torch.no_grad():
    expected = hf(torch.tensor([prompt])).logits[0, -1]
print(json.dumps({"tokens": tokens, "hf_tokens": hf_greedy(hf, torch.tensor([prompt]), 16)[0],
                  "max_abs": float((logits - expected).abs().max()), "scale": float(expected.abs().max())}))
"""


def test_cuda_backend_routing_runs_the_kernel_source_on_cpu(checkpoint_factory):
    """The cuda backend's path (ops routed to the kernel library, caches updated in place) on CPU tensors, where
    tools/kernels.py runs the host build of the same .cu source: the whole demo model against Hugging Face (in a
    subprocess, so that nothing it loads changes the test process)."""
    checkpoint = checkpoint_factory("demo", expert_format="mxfp4")
    prompt = [5, 17, 300, 42, 9, 77, 12, 480, 33, 21, 8, 64, 100, 3, 250, 19, 7, 90]  # longer than the window of 16
    result = subprocess.run([sys.executable, "-c", ROUTED_MODEL, str(checkpoint), json.dumps(prompt)],
                            capture_output=True, text=True, cwd=Path(__file__).parent)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["tokens"] == measured["hf_tokens"]
    # float32 on both sides; the kernels sum in another order and use exp2: ~1e-6 of the logits (|logits| ~ 10)
    assert measured["max_abs"] <= 1e-4, measured
