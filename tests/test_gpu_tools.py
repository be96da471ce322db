"""The GPU tools on a machine without a GPU: the cuda backend and the GPU benchmarks refuse in one line, `gpu-check`
exits at once saying so; and the decode benchmark's byte count at gpt-oss-20b dimensions."""

from __future__ import annotations

import subprocess
import sys

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
