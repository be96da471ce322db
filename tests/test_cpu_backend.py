"""The cpu backend: the PyTorch model with its ops and small bf16 linears on the native CPU kernels."""

from __future__ import annotations

import dataclasses
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import hf_greedy, load_hf, random_ids

from gptoss.exporter.build import BuildOptions, build
from gptoss.exporter.model import GptOssModel
from gptoss.runtime import Engine, GptOssError, backends
from gptoss.runtime.backends.cpu_decode import NativeDecode
from gptoss.runtime.backends.engine_weights import step_graph_from_engine
from gptoss.runtime.manifest import read_manifest
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


def test_bf16_decode_steps_in_one_call_per_layer_equal_the_models_own(checkpoint_factory, tmp_path):
    """bf16 decode steps run each layer up to its MoE in one native call (runtime/backends/cpu_decode.py); the ops
    and their roundings are the model's, so logits must be bit for bit those of the model's own forward: two rows
    of different lengths, decoded past the sliding window (16) so that its ring wraps."""
    build_cpu_kernels()
    checkpoint = checkpoint_factory("demo", expert_format="mxfp4")
    engine_dir = build(checkpoint, tmp_path / "engine", BuildOptions(precision="bf16", max_seq_len=64)).engine_dir
    engine = Engine.load(engine_dir, backend="cpu")
    model = next(m for m in engine.backend.graph.modules() if isinstance(m, GptOssModel))
    native = model.forward.__self__
    assert isinstance(native, NativeDecode)

    def decode(forward) -> list[np.ndarray]:
        model.forward = forward
        with engine.exclusive_rows(2) as rows:
            first, second = rows.acquire(), rows.acquire()
            logits = rows.step({first: PROMPT, second: PROMPT[:9]})
            steps = []
            for _ in range(20):
                steps.append(np.stack([logits[first], logits[second]]))
                logits = rows.step({row: [int(logits[row].argmax())] for row in (first, second)})
        return steps

    assert all(np.array_equal(a, b) for a, b in zip(decode(native.forward), decode(native._model_forward), strict=True))


def test_engine_runs_from_its_own_weights_without_the_checkpoint(checkpoint_factory, tmp_path):
    """An ONNX engine directory is all the cpu backend needs: its parameters are mapped from model.onnx.data."""
    build_cpu_kernels()
    source = checkpoint_factory("demo", expert_format="mxfp4")
    copy = shutil.copytree(source, tmp_path / "checkpoint")
    engine_dir = build(copy, tmp_path / "engine", BuildOptions(max_seq_len=64)).engine_dir
    shutil.rmtree(copy)
    engine = Engine.load(engine_dir)  # no GPU here and the library is built: cpu is the default
    assert engine.backend.name == "cpu"
    with torch.no_grad():
        expected = load_hf(source)(torch.tensor([PROMPT])).logits[0, -1]
    # float32 weights, bit for bit those of the checkpoint; only the summation order differs (as above)
    assert float((_last_logits(engine) - expected).abs().max()) <= 1e-4


def test_engine_weights_that_do_not_fit_the_model_fail_in_one_line(small_engine):
    manifest = read_manifest(small_engine)
    with pytest.raises(GptOssError, match=r"model\.onnx: initializer 'model\.[^']+' should hold .* bfloat16"):
        step_graph_from_engine(dataclasses.replace(manifest, precision="bf16"))


@pytest.mark.parametrize(
    ("target", "precision", "files", "gpu", "built", "expected"),
    [
        ("onnx", "fp32", {"onnx": {}}, False, True, "cpu"),
        ("onnx", "bf16", {"onnx": {}}, False, True, "cpu"),
        ("onnx", "fp16", {"onnx": {}}, False, True, "onnxruntime"),  # the kernels compute in fp32 or bf16
        ("onnx", "fp32", {"onnx": {}}, True, True, "onnxruntime"),  # ONNX Runtime's CUDA provider
        ("onnx", "fp32", {"onnx": {}}, False, False, "onnxruntime"),  # library not built
        ("onnx", "fp32", {}, False, True, "cpu"),  # a checkpoint
        ("onnx", "fp32", {}, False, False, "torch"),
        ("tensorrt-rtx", "bf16", {"engine": {}}, False, True, "tensorrt-rtx"),
    ],
)
def test_default_backend(monkeypatch, tmp_path, target, precision, files, gpu, built, expected):
    library = tmp_path / "libgptoss_cpu_kernels.so"
    if built:
        library.touch()
    monkeypatch.setattr(backends, "CPU_KERNELS_LIBRARY", library)
    monkeypatch.setattr(backends, "has_nvidia_gpu", lambda: gpu)
    manifest = SimpleNamespace(target=target, precision=precision, files=files)
    assert backends.default_backend(manifest) == expected
