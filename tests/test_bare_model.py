"""Bare-model engines (`build --head model`): the graph's `hidden_states` output under ONNX Runtime and through
`Engine.embed` against Hugging Face's `GptOssModel`, and a TensorRT-RTX ahead-of-time build."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import load_hf
from test_engine_build import needs_plugins, needs_rtx
from test_onnx_export import padded_prompts

from gptoss.exporter.build import BuildOptions, build
from gptoss.runtime import Engine, GptOssError
from gptoss.runtime.backends.onnxruntime import OnnxRuntimeBackend
from gptoss.runtime.manifest import read_manifest
from gptoss.tools.compare import compare

# ONNX Runtime against Hugging Face, both float32 from the same weights: only kernels and summation order differ
# (observed ~1e-5 on final hidden states of magnitude ~5); a semantic slip moves them by 1e-2 or more.
ATOL = 1e-4
SETUPS = [("demo", "mxfp4"), ("odd", "bf16")]
ORT = "onnxruntime"  # runs the engine's own graph on this CPU


@pytest.fixture(scope="module")
def bare_engine(checkpoint_factory, tmp_path_factory):
    """`bare_engine(name, expert_format)` -> (causal-LM checkpoint, bare-model engine built from it)."""
    cache = {}

    def make(name: str, expert_format: str):
        if (name, expert_format) not in cache:
            checkpoint = checkpoint_factory(name, expert_format=expert_format)
            out = tmp_path_factory.mktemp("bare") / f"{name}-{expert_format}"
            manifest = build(checkpoint, out, BuildOptions(head="model", max_seq_len=64))
            cache[name, expert_format] = (checkpoint, manifest)
        return cache[name, expert_format]

    return make


@pytest.mark.parametrize(("name", "expert_format"), SETUPS)
def test_hidden_states_output_matches_hf_gpt_oss_model(bare_engine, name, expert_format):
    checkpoint, manifest = bare_engine(name, expert_format)
    hidden = manifest.config.hidden_size
    assert list(manifest.io.outputs)[0] == "hidden_states"
    assert list(manifest.io.outputs["hidden_states"].shape) == ["batch", "seq_len", hidden]
    ids, lengths = padded_prompts([33, 20, 5], vocab=manifest.config.vocab_size)
    ort = OnnxRuntimeBackend(manifest)
    ort.allocate(3, 64)
    states = ort.step(ids.numpy(), np.zeros(3, np.int32), lengths.numpy())
    mask = (torch.arange(33) < lengths[:, None]).int()
    with torch.no_grad():
        expected = load_hf(checkpoint, "model")(ids, attention_mask=mask).last_hidden_state.numpy()
    valid = mask.bool().numpy()
    assert states.shape == (3, 33, hidden)
    assert np.abs(states[valid] - expected[valid]).max() < ATOL


def test_engine_embed_matches_hf_and_other_heads_refuse(bare_engine, checkpoint_factory):
    checkpoint, manifest = bare_engine("demo", "mxfp4")
    engine = Engine.load(manifest.engine_dir, ORT)
    texts = ["The lighthouse keeper counted gulls.", [5, 77, 300, 12]]
    embeddings = engine.embed(texts)
    reference = load_hf(checkpoint, "model")
    for embedding in embeddings:
        with torch.no_grad():
            expected = reference(torch.tensor([embedding.token_ids])).last_hidden_state[0].numpy()
        assert embedding.hidden_states.shape == expected.shape == (len(embedding.token_ids), 128)
        assert np.abs(embedding.hidden_states - expected).max() < ATOL
    assert embeddings[1].token_ids == [5, 77, 300, 12]
    causal = Engine.load(checkpoint, backend="torch")
    with pytest.raises(GptOssError, match="a causal-lm engine has no hidden states"):
        causal.embed("Hello")
    with pytest.raises(GptOssError, match="a model engine cannot generate"):
        engine.generate("Hello")


def test_cli_embed_writes_the_hidden_states(bare_engine, tmp_path):
    _, manifest = bare_engine("demo", "mxfp4")
    out = tmp_path / "states.npz"
    command = [sys.executable, "-m", "gptoss.exporter", "embed", str(manifest.engine_dir), "-t", "Hello world",
               "-t", "GPT-OSS", "--out", str(out), "--backend", ORT]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("last-token norm") == 2
    arrays = np.load(out)
    expected = Engine.load(manifest.engine_dir, ORT).embed(["Hello world", "GPT-OSS"])
    for index, embedding in enumerate(expected):  # rows batched differently round differently (float32)
        assert np.abs(arrays[f"arr_{index}"] - embedding.hidden_states).max() < ATOL


@needs_plugins
@needs_rtx
def test_bare_model_builds_a_tensorrt_rtx_engine_ahead_of_time(checkpoint_factory, tmp_path):
    options = BuildOptions(target="tensorrt-rtx", head="model", compute_capability="sm89", max_seq_len=64, max_batch=2)
    manifest = build(checkpoint_factory("demo", expert_format="mxfp4"), tmp_path / "engine", options)
    read_manifest(manifest.engine_dir).verify_files()
    assert manifest.head == "model" and list(manifest.io.outputs)[0] == "hidden_states"
    assert manifest.target_info["plugin_layers"] == 2 * manifest.config.num_hidden_layers
    assert (manifest.engine_dir / "engine.plan").stat().st_size > 0


def test_compare_checks_a_bare_model_engine_against_hf(bare_engine):
    checkpoint, manifest = bare_engine("demo", "mxfp4")
    prompts = ["Hello world", "GPT-OSS"]
    report = compare(manifest.engine_dir, checkpoint, prompts=prompts, backend=ORT, use_hf=True)
    engine = Engine.load(manifest.engine_dir, ORT)
    assert report.positions == sum(len(engine.encode(p)) for p in prompts)  # every token's hidden state
    assert report.max_abs_error < ATOL and report.passed(ATOL)
    assert report.perplexity is None  # no logits, no perplexity
    with pytest.raises(GptOssError, match="--text: a model engine has no next-token logits"):
        compare(manifest.engine_dir, checkpoint, text="Some text.", backend=ORT)
