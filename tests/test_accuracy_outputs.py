"""Accuracy builds (`build --accuracy-outputs router,hidden`) and what `compare` makes of them: perplexity over a
text and per-layer expert-routing agreement, on the demo engine and on one whose expert bytes were changed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from test_onnx_export import padded_prompts

from gptoss.exporter import load_model
from gptoss.exporter.build import BuildOptions, build
from gptoss.runtime import Engine, GptOssError, contract
from gptoss.runtime.manifest import file_entry, read_manifest
from gptoss.runtime.tokenizer import Tokenizer
from gptoss.tools import text_accuracy
from gptoss.tools.compare import compare, read_text

ACCURACY = ("router", "hidden")
# ONNX Runtime against the PyTorch model in float32 (docs/accuracy.md): ~2e-5 observed on values of order 1-100.
TOLERANCE = 1e-4
CORRUPTED_LAYER = 1
ORT = "onnxruntime"  # the backend that runs the engine's own graph (and weights) on this CPU
SHORT_TEXT = "A harbour town at dawn: boats, nets, gulls and 42 lanterns on the quay.\n"  # ~50 tokens, for speed
QUICK = dict(prompts=["Hello world!"], greedy_tokens=2, backend=ORT)  # the text metrics are what is tested here


@pytest.fixture(scope="module")
def accuracy_engine(checkpoint_factory, tmp_path_factory):
    """The demo model (MXFP4 experts, fp32) built with every accuracy output."""
    checkpoint = checkpoint_factory("demo", expert_format="mxfp4")
    out = tmp_path_factory.mktemp("accuracy") / "engine"
    return build(checkpoint, out, BuildOptions(max_seq_len=128, accuracy_outputs=ACCURACY))


@pytest.fixture(scope="module")
def changed_expert_engine(accuracy_engine, tmp_path_factory):
    """A copy of the accuracy engine whose expert 3 of layer 1 has every byte of its down projection changed (the
    manifest's checksum re-recorded, so only the comparison can tell)."""
    engine_dir = tmp_path_factory.mktemp("changed") / "engine"
    shutil.copytree(accuracy_engine.engine_dir, engine_dir)
    graph = onnx.load(str(engine_dir / "model.onnx"), load_external_data=False).graph
    name = f"model.model.layers.{CORRUPTED_LAYER}.mlp.experts.down_weight"
    tensor = next(t for t in graph.initializer if t.name == name)
    where = {entry.key: int(entry.value) for entry in tensor.external_data if entry.key in ("offset", "length")}
    per_expert = where["length"] // tensor.dims[0]
    data = engine_dir / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    start = where["offset"] + 3 * per_expert
    raw[start : start + per_expert] = b"\x77" * per_expert  # every E2M1 value 6.0: a very different expert
    data.write_bytes(bytes(raw))
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    manifest["files"]["onnx_data"] = file_entry(data)
    (engine_dir / "manifest.json").write_text(json.dumps(manifest))
    return engine_dir


def test_production_graph_has_no_accuracy_outputs(small_engine):
    outputs = [o.name for o in onnx.load(str(small_engine / "model.onnx"), load_external_data=False).graph.output]
    assert outputs == ["logits", *(contract.cache_output(i) for i in range(4))]
    assert read_manifest(small_engine).accuracy_outputs == []


def test_accuracy_outputs_are_the_pytorch_models_routing_and_layer_outputs(accuracy_engine):
    import onnxruntime

    manifest = accuracy_engine
    assert manifest.accuracy_outputs == list(ACCURACY)
    names = list(manifest.io.outputs)
    routers, layers = names[5:9], names[9:]
    assert routers == [f"router_topk.{i}" for i in range(4)] and layers == [f"layer_output.{i}" for i in range(4)]
    ids, lengths = padded_prompts([30, 12])
    feeds = {"input_ids": ids.numpy().astype(np.int32), "past_len": np.zeros(2, np.int32), "new_len": lengths.numpy()}
    feeds |= {spec: np.zeros(s.concrete(batch=2, max_seq_len=64), np.float32)
              for spec, s in manifest.io.inputs.items() if spec.startswith("kv_cache")}  # fmt: skip
    session = onnxruntime.InferenceSession(str(manifest.path("onnx")), providers=["CPUExecutionProvider"])
    outputs = dict(zip(routers + layers, session.run(routers + layers, feeds), strict=True))
    model = load_model(manifest.source_checkpoint)
    with torch.no_grad():
        decoded = model.model(ids, torch.zeros(2, dtype=torch.int32), lengths, model.allocate_kv_caches(2, 64),
                              collect=True)  # fmt: skip
    valid = (torch.arange(30) < lengths[:, None]).numpy()
    for layer, routing in enumerate(decoded.routings):
        ours = np.sort(outputs[routers[layer]], axis=-1)
        expected = np.sort(routing.expert_ids.view(2, 30, -1).numpy(), axis=-1)
        assert ours.dtype == np.int32 and ours.shape == (2, 30, 4)
        np.testing.assert_array_equal(ours[valid], expected[valid])
        state = decoded.layer_states[layer + 1].numpy()
        assert np.abs(outputs[layers[layer]][valid] - state[valid]).max() <= TOLERANCE * np.abs(state).max()


def test_the_runtime_ignores_accuracy_outputs(accuracy_engine, small_engine):
    prompts = ["Hello world", "GPT-OSS is"]
    ours = Engine.load(accuracy_engine.engine_dir, ORT).generate(prompts, max_new_tokens=12, stop=[])
    production = Engine.load(small_engine, ORT).generate(prompts, max_new_tokens=12, stop=[])
    assert [r.token_ids for r in ours] == [r.token_ids for r in production]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BuildOptions(accuracy_outputs=("experts",)), "--accuracy-outputs 'experts' is unknown, expected router or"),
        (BuildOptions(target="tensorrt-rtx", accuracy_outputs=("router",)), "--accuracy-outputs applies to the onnx"),
    ],
)
def test_bad_accuracy_options_are_one_line_errors(checkpoint_factory, tmp_path, options, message):
    with pytest.raises(GptOssError, match=message):
        build(checkpoint_factory("demo"), tmp_path / "engine", options)


def test_manifest_accuracy_outputs_must_match_the_graph(accuracy_engine, tmp_path):
    engine_dir = tmp_path / "engine"
    shutil.copytree(accuracy_engine.engine_dir, engine_dir)
    path = engine_dir / "manifest.json"
    for value, message in ((["router"], "output 'layer_output.0' differs"), (["router", "router"], "distinct kinds")):
        manifest = json.loads(path.read_text())
        manifest["accuracy_outputs"] = value
        path.write_text(json.dumps(manifest))
        with pytest.raises(GptOssError, match=message):
            read_manifest(engine_dir)


def test_compare_on_the_demo_engine_reports_perplexity_ratio_1_and_full_routing_agreement(accuracy_engine):
    report = compare(accuracy_engine.engine_dir, accuracy_engine.source_checkpoint, **QUICK)
    assert report.text_tokens > 100  # the bundled sample
    assert abs(report.perplexity_ratio - 1) <= 1e-4  # float32 engine and reference
    assert report.perplexity == pytest.approx(report.reference_perplexity, rel=1e-4)
    assert report.routing_agreement == 1.0 and report.routing_agreement_per_layer == [1.0] * 4
    assert report.routing_first_mismatch is None and report.passed(1e-4)
    # Layer outputs reach ~100 in the demo: up to ~2e-4 observed (2e-6 relative), within TOLERANCE of that magnitude.
    assert len(report.engine_per_layer_max_abs) == 3 and max(report.engine_per_layer_max_abs) < TOLERANCE * 100


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptoss.exporter", *args], capture_output=True, text=True)


def test_compare_reports_the_routing_drop_and_layer_of_a_changed_expert(
    accuracy_engine, changed_expert_engine, tmp_path
):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    text = tmp_path / "text.txt"
    text.write_text(SHORT_TEXT)
    report_path, plot = tmp_path / "report.json", tmp_path / "report.png"
    result = cli("compare", str(changed_expert_engine), "--reference", accuracy_engine.source_checkpoint,
                 "--text", str(text), "--json", str(report_path), "--plot", str(plot), "-p", "Hello",
                 "--greedy-tokens", "2", "--backend", ORT)  # fmt: skip
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "engine disagrees with the reference" in result.stderr and "routing agreement 0." in result.stderr
    report = json.loads(report_path.read_text())
    per_layer = report["routing_agreement_per_layer"]
    # Layer 1's routing happens before its experts run: the change first shows in layer 2's choices.
    assert per_layer[: CORRUPTED_LAYER + 1] == [1.0] * (CORRUPTED_LAYER + 1)
    assert per_layer[CORRUPTED_LAYER + 1] < 0.95
    assert report["routing_first_mismatch"]["layer"] == CORRUPTED_LAYER + 1
    assert report["routing_agreement"] == pytest.approx(np.mean(per_layer)) and report["routing_agreement"] < 1
    assert abs(report["perplexity_ratio"] - 1) > 1e-2
    # The changed layer's own output is where the hidden states part: layer 0 agrees, layer 1 does not.
    layer_errors = report["engine_per_layer_max_abs"]
    assert layer_errors[0] < TOLERANCE * 100 and layer_errors[CORRUPTED_LAYER] > 1
    assert report["text_tokens"] == len(Tokenizer(changed_expert_engine / "tokenizer.json").encode(SHORT_TEXT))
    assert f"first mismatch: layer {CORRUPTED_LAYER + 1}, token " in result.stdout
    assert all(row in result.stdout for row in ("perplexity ratio", "routing per layer", "layer outputs max abs"))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unreadable_text_file_is_a_one_line_error(tmp_path):
    with pytest.raises(GptOssError, match=r"--text .*none: cannot be read as UTF-8 text"):
        read_text(tmp_path / "none")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(GptOssError, match="cannot be read as UTF-8"):
        read_text(binary)


def test_backends_that_run_the_pytorch_model_report_routing_without_router_outputs(
    accuracy_engine, changed_expert_engine, small_engine
):
    torch_engine = Engine.load(changed_expert_engine, "torch")  # runs the engine's own (changed) weights
    ids = torch_engine.encode(SHORT_TEXT)
    _, expected = text_accuracy.reference_outputs(load_model(accuracy_engine.source_checkpoint), ids, 4)
    ours = text_accuracy.engine_layers(torch_engine, ids)
    agreement = text_accuracy.same_experts(ours.routing, expected.routing)
    assert agreement.shape == (4, len(ids))
    assert agreement[: CORRUPTED_LAYER + 1].all() and not agreement[CORRUPTED_LAYER + 1].all()
    assert ours.outputs.shape == (4, len(ids), 128) and expected.outputs.shape == (3, len(ids), 128)
    production = text_accuracy.engine_layers(Engine.load(small_engine, ORT), ids)
    assert production.routing is None and production.outputs is None  # no accuracy outputs to read
