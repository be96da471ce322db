"""ONNX export: graph structure, packed MXFP4, ONNX Runtime against the PyTorch model, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import hf_greedy, load_hf, random_ids

from gptoss.exporter import load_model
from gptoss.exporter.build import BuildOptions, build
from gptoss.exporter.errors import GptOssError
from gptoss.exporter.onnx_schemas import register_schemas
from gptoss.runtime.backends.onnxruntime import OnnxRuntimeBackend
from gptoss.runtime.manifest import read_manifest

# ONNX Runtime runs the same float32 math as PyTorch through different kernels (MatMul blocking, the
# function bodies' summation order): observed differences are ~2e-5 on logits of magnitude ~10.
ATOL = 1e-4


@pytest.fixture(scope="session")
def engine_factory(checkpoint_factory, tmp_path_factory):
    """`engine_factory(name, expert_format, head, all_positions)` -> (checkpoint dir, engine dir)."""
    cache = {}

    def make(name="demo", expert_format="mxfp4", head="causal-lm", all_positions=False):
        key = (name, expert_format, head, all_positions)
        if key not in cache:
            checkpoint = checkpoint_factory(name, expert_format=expert_format, head=head)
            out = tmp_path_factory.mktemp("engine") / "_".join(map(str, key))
            build(checkpoint, out, BuildOptions(head=head, all_positions=all_positions, max_seq_len=256))
            cache[key] = (checkpoint, out)
        return cache[key]

    return make


def backend(engine_dir) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(read_manifest(engine_dir))


@pytest.mark.parametrize("expert_format", ["mxfp4", "bf16"])
def test_checker_passes_and_graph_has_the_custom_nodes(engine_factory, expert_format):
    _, engine = engine_factory(expert_format=expert_format)
    register_schemas()
    onnx.checker.check_model(str(engine / "model.onnx"), full_check=True)
    model = onnx.load(str(engine / "model.onnx"), load_external_data=False)
    custom = [n for n in model.graph.node if n.domain == "gptoss"]
    assert sorted({n.op_type for n in custom}) == ["MoE", "SinkAttention"]
    assert len(custom) == 2 * 4  # one of each per layer
    for node in custom:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["plugin_version"] == b"1" and attributes["plugin_namespace"] == b""
    windows = [
        onnx.helper.get_attribute_value(a)
        for n in custom
        if n.op_type == "SinkAttention"
        for a in n.attribute
        if a.name == "sliding_window"
    ]
    assert windows == [16, 0, 16, 0]
    moe_formats = {onnx.helper.get_attribute_value(a) for n in custom for a in n.attribute if a.name == "weight_format"}
    assert moe_formats == {b"mxfp4" if expert_format == "mxfp4" else b"float"}
    assert {(f.domain, f.name) for f in model.functions} >= {("gptoss", "SinkAttention"), ("gptoss", "MoE")}
    assert [i.name for i in model.graph.input][:4] == ["input_ids", "past_len", "new_len", "kv_cache.0"]
    assert [o.name for o in model.graph.output][:2] == ["logits", "kv_cache_out.0"]


def test_mxfp4_experts_stay_packed(engine_factory):
    _, engine = engine_factory(expert_format="mxfp4")
    model = onnx.load(str(engine / "model.onnx"), load_external_data=False)
    shapes = {
        i.name: (onnx.helper.tensor_dtype_to_np_dtype(i.data_type), tuple(i.dims)) for i in model.graph.initializer
    }
    experts = {name: v for name, v in shapes.items() if ".experts." in name}
    weights = {name: v for name, v in experts.items() if "bias" not in name}
    assert len(weights) == 4 * 4  # blocks and scales of gate_up and down, 4 layers
    assert all(dtype == np.uint8 for dtype, _ in weights.values())
    assert shapes["model.model.layers.0.mlp.experts.gate_up_weight"][1] == (8, 256, 4, 16)
    # No float tensor anywhere has the size of a dequantized expert stack.
    dense = 8 * 256 * 128
    assert not [n for n, (d, s) in shapes.items() if d != np.uint8 and np.prod(s) >= dense]


def test_onnxruntime_inlines_the_local_functions(engine_factory, tmp_path):
    _, engine = engine_factory()
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    onnxruntime.InferenceSession(str(engine / "model.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"), load_external_data=False)
    assert not [n for n in optimized.graph.node if n.domain == "gptoss"]
    assert {"Softmax", "ScatterElements", "BitShift"} <= {n.op_type for n in optimized.graph.node}


def padded_prompts(lengths: list[int], vocab: int = 512, seed: int = 31) -> tuple[torch.Tensor, torch.Tensor]:
    ids = random_ids(len(lengths), max(lengths), vocab, seed=seed)
    for row, length in enumerate(lengths):
        ids[row, length:] = 1
    return ids, torch.tensor(lengths, dtype=torch.int32)


@pytest.mark.parametrize(("name", "expert_format"), [("demo", "mxfp4"), ("demo", "bf16"), ("odd", "mxfp4")])
def test_prefill_and_20_decode_steps_match_pytorch(engine_factory, name, expert_format):
    checkpoint, engine = engine_factory(name, expert_format)
    model = load_model(checkpoint)
    ort = backend(engine)
    ids, lengths = padded_prompts([25, 9, 17])  # rows longer and shorter than the window, right-padded
    torch_caches = model.model.allocate_kv_caches(3, 64)
    ort.allocate(3, 64)
    past = torch.zeros(3, dtype=torch.int32)
    new = lengths
    tokens = ids
    for step in range(21):
        with torch.no_grad():
            expected, torch_caches = model.step(tokens, past, new, torch_caches)
        expected = expected[torch.arange(3), (new - 1).long()]
        logits = ort.step(tokens.numpy(), past.numpy(), new.numpy())
        assert logits.shape == (3, 512)
        assert np.abs(logits - expected.numpy()).max() < ATOL, f"step {step}"
        past, new = past + new, torch.ones(3, dtype=torch.int32)
        tokens = random_ids(3, 1, seed=100 + step)


def test_all_positions_output(engine_factory):
    checkpoint, engine = engine_factory(all_positions=True)
    ids, lengths = padded_prompts([30, 12])
    ort = backend(engine)
    ort.allocate(2, 256)
    logits = ort.step(ids.numpy(), np.zeros(2, np.int32), lengths.numpy())
    expected = load_model(checkpoint)(ids, attention_mask=(torch.arange(30) < lengths[:, None]).int())
    assert logits.shape == (2, 30, 512)
    valid = (torch.arange(30) < lengths[:, None]).numpy()
    assert np.abs(logits[valid] - expected.detach().numpy()[valid]).max() < ATOL


@pytest.mark.parametrize("head", ["sequence-classification", "token-classification"])
def test_classification_heads_match_pytorch(engine_factory, head):
    checkpoint, engine = engine_factory(expert_format="bf16", head=head)
    ids, lengths = padded_prompts([33, 20, 5])
    mask = (torch.arange(33) < lengths[:, None]).int()
    ort = backend(engine)
    ort.allocate(3, 64)
    scores = ort.step(ids.numpy(), np.zeros(3, np.int32), lengths.numpy())
    expected = load_model(checkpoint, head=head)(ids, attention_mask=mask).detach().numpy()
    if head == "token-classification":
        valid = mask.bool().numpy()
        scores, expected = scores[valid], expected[valid]
    assert scores.shape == expected.shape
    assert np.abs(scores - expected).max() < ATOL


def test_greedy_generation_through_onnxruntime_equals_hf_generate(engine_factory):
    checkpoint, engine = engine_factory()
    prompt = random_ids(1, 11, seed=41)
    ort = backend(engine)
    ort.allocate(1, 64)
    tokens, past, new, generated = prompt.numpy(), np.zeros(1, np.int32), np.array([11], np.int32), []
    for _ in range(32):
        logits = ort.step(tokens, past, new)
        tokens = logits.argmax(-1).reshape(1, 1)
        generated.append(int(tokens[0, 0]))
        past, new = past + new, np.ones(1, np.int32)
    assert generated == hf_greedy(load_hf(checkpoint), prompt, 32)[0]


def test_manifest_describes_the_contract(engine_factory):
    _, engine = engine_factory()
    manifest = read_manifest(engine)
    manifest.verify_files()
    assert list(manifest.io.inputs["kv_cache.0"].shape) == ["batch", 2, 2, 16, 32]
    assert list(manifest.io.inputs["kv_cache.1"].shape) == ["batch", 2, 2, "max_seq_len", 32]
    assert list(manifest.io.outputs["logits"].shape) == ["batch", 512]
    assert manifest.ops["plugin_version"] == "1" and manifest.chat_format == "harmony"
    assert set(manifest.files) == {"onnx", "onnx_data", "tokenizer"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptoss.exporter", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--head", "regression"], "--head 'regression' is unknown"),
        (["--precision", "int8"], "--precision 'int8' is not supported"),
        (["--target", "tflite"], "--target 'tflite' is not supported"),
        (["--max-seq-len", "99999"], "exceeds the model's max_position_embeddings 4096"),
    ],
)
def test_bad_build_options_are_one_line_errors(checkpoint_factory, tmp_path, args, message):
    result = cli("build", str(checkpoint_factory("demo")), "--out", str(tmp_path / "engine"), *args)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip().removeprefix('error: ')}"]
    assert message in result.stderr
    assert not (tmp_path / "engine" / "manifest.json").exists()


def test_unwritable_output_directory(checkpoint_factory, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(GptOssError, match="cannot write the engine directory"):
        build(checkpoint_factory("demo"), blocker / "engine")


def test_a_failing_trace_stops_the_weight_writer(checkpoint_factory, tmp_path, monkeypatch):
    import gptoss.exporter.build as build_module

    def failing_trace(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "export_step_graph", failing_trace)
    out = tmp_path / "engine"
    with pytest.raises(KeyboardInterrupt):  # the trace's error, not the writer's "stopped"
        build(checkpoint_factory("demo"), out)
    assert list(tmp_path.iterdir()) == []  # no engine, no staging directory
