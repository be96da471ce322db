"""The cpu backend: the PyTorch model with its ops and small bf16 linears on the native CPU kernels."""

from __future__ import annotations

import torch
from conftest import hf_greedy, load_hf, random_ids

from gptoss.exporter.build import BuildOptions, build
from gptoss.runtime import Engine
from gptoss.tools.cpu_kernels import build as build_cpu_kernels

PROMPT = random_ids(1, 21, seed=3)[0].tolist()  # longer than the window of 16


def _last_logits(engine: Engine) -> torch.Tensor:
    with engine.exclusive_rows(1) as rows:
        return torch.from_numpy(rows.step({rows.acquire(): PROMPT})[0])


def test_float32_checkpoint_matches_hugging_face(checkpoint_factory):
    build_cpu_kernels()
    checkpoint = checkpoint_factory("demo", expert_format="mxfp4")
    engine, hf = Engine.load(checkpoint, backend="cpu"), load_hf(checkpoint)
    with torch.no_grad():
        expected = hf(torch.tensor([PROMPT])).logits[0, -1]
    # float32 on both sides; the kernels sum in another order: ~1e-6 of the logits (|logits| < 10)
    assert float((_last_logits(engine) - expected).abs().max()) <= 1e-4
    tokens = engine.generate(PROMPT, max_new_tokens=24, stop=[])[0].token_ids
    assert tokens == hf_greedy(hf, torch.tensor([PROMPT]), 24)[0]


def test_bf16_engine_matches_the_torch_backend(checkpoint_factory, tmp_path):
    """bf16 weights and activations: the kernels (and our linear for decode) against the reference ops in bf16."""
    build_cpu_kernels()
    checkpoint = checkpoint_factory("demo", expert_format="mxfp4")
    engine_dir = build(checkpoint, tmp_path / "engine", BuildOptions(precision="bf16", max_seq_len=64)).engine_dir
    ours, reference = Engine.load(engine_dir, backend="cpu"), Engine.load(engine_dir, backend="torch")
    expected = _last_logits(reference)
    # bf16 activations round at every layer (eps 2^-8 relative) and the two sides sum in another order, so logits of
    # magnitude ~7 may differ by a few bf16 ulps (0.03 each there; 0.031 measured): 0.25 absolute is 8 ulps
    assert float((_last_logits(ours) - expected).abs().max()) <= 0.25
    assert torch.equal(_last_logits(ours).argmax(), expected.argmax())
