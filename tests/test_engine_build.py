"""Engine build with the TensorRT plugins: TensorRT-RTX builds ahead of time on this CPU machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gptoss.exporter.build import BuildOptions, build
from gptoss.exporter.errors import GptOssError
from gptoss.exporter.trt_build import default_plugin_library
from gptoss.runtime.manifest import read_manifest, sha256_file
from gptoss.runtime.tensorrt_import import import_tensorrt

PLUGIN_LIBRARY = default_plugin_library()


def _rtx_available() -> bool:
    try:
        import_tensorrt("tensorrt-rtx")
    except GptOssError:
        return False
    return True


needs_plugins = pytest.mark.skipif(
    not PLUGIN_LIBRARY.is_file(),
    reason=f"{PLUGIN_LIBRARY} not built: TensorRT headers not found (set TENSORRT_ROOT and run `make plugins`)",
)
needs_rtx = pytest.mark.skipif(not _rtx_available(), reason="TensorRT-RTX Python module not installed")


@needs_plugins
@needs_rtx
def test_plugin_library_loads_through_the_registry():
    trt = import_tensorrt("tensorrt-rtx")
    registry = trt.Builder(trt.Logger(trt.Logger.ERROR)).get_plugin_registry()
    assert registry.load_library(str(PLUGIN_LIBRARY)) is not None
    for name in ("SinkAttention", "MoE"):
        assert registry.get_creator(name, "1", "") is not None


@needs_plugins
@needs_rtx
def test_cli_builds_a_tensorrt_rtx_engine_on_cpu(tmp_path):
    out = tmp_path / "engine"
    options = ["--target", "tensorrt-rtx", "--compute-capability", "sm89", "--max-batch", "4", "--max-seq-len", "256"]
    command = [sys.executable, "-m", "gptoss.exporter", "build", *options, "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    manifest.verify_files()
    assert manifest.target == "tensorrt-rtx"
    info = manifest.target_info
    assert info["compute_capability"] == "sm89" and info["strongly_typed"]
    assert info["plugin_layers"] == 2 * manifest.config.num_hidden_layers  # every op became a plugin layer
    prefill, decode = info["profiles"]
    assert prefill["batch"] == [1, 2, 4] and prefill["seq_len"] == [1, 256, 256]  # dynamic batch and sequence
    assert decode["seq_len"] == [1, 1, 1]
    assert (out / "engine.plan").stat().st_size > 0
    assert manifest.files["plugin_library"]["sha256"] == sha256_file(PLUGIN_LIBRARY)
    assert json.loads((out / "manifest.json").read_text())["files"]["engine"]["name"] == "engine.plan"


@needs_plugins
@needs_rtx
def test_plugin_version_mismatch_is_a_clear_error(checkpoint_factory, tmp_path, monkeypatch):
    import gptoss.exporter.trt_build as trt_build

    monkeypatch.setattr(trt_build, "PLUGIN_VERSION", "2")
    with pytest.raises(GptOssError, match="no plugin 'SinkAttention' version '2'"):
        build(checkpoint_factory("demo"), tmp_path / "engine", BuildOptions(target="tensorrt-rtx"))
    assert not (tmp_path / "engine" / "manifest.json").exists()


def test_missing_plugin_library_is_a_clear_error(checkpoint_factory, tmp_path):
    options = BuildOptions(target="tensorrt-rtx", plugin_library=tmp_path / "libnothing.so")
    expected = "plugin library not found" if _rtx_available() else "needs the Python module"
    with pytest.raises(GptOssError, match=expected):
        build(checkpoint_factory("demo"), tmp_path / "engine", options)


def test_missing_tensorrt_is_a_clear_error(checkpoint_factory, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(GptOssError, match="target tensorrt needs the Python module tensorrt"):
        build(checkpoint_factory("demo"), tmp_path / "engine", BuildOptions(target="tensorrt"))


@needs_plugins
@needs_rtx
def test_dimensions_the_kernels_do_not_take_are_rejected_before_export(tmp_path):
    from gptoss.tools.demo_model import write_demo_model

    checkpoint = write_demo_model(tmp_path / "ckpt", expert_format="bf16", head_dim=20)
    with pytest.raises(GptOssError, match="head_dim 20: the plugins need a multiple of 8"):
        build(checkpoint, tmp_path / "engine", BuildOptions(target="tensorrt-rtx"))


@needs_plugins
@needs_rtx
@pytest.mark.parametrize(("expert_format", "bind"), [("mxfp4", "experts"), ("bf16", "experts"), ("mxfp4", "all")])
def test_engines_bind_weights_from_the_data_file(checkpoint_factory, tmp_path, expert_format, bind):
    import onnx

    from gptoss.exporter.trt_build import tensorrt_view
    from gptoss.runtime.mapped_weights import external_initializers

    options = BuildOptions(target="tensorrt-rtx", compute_capability="sm89", max_seq_len=64, bind_weights=bind)
    manifest = build(checkpoint_factory("demo", expert_format=expert_format), tmp_path / "engine", options)
    bound = manifest.target_info["bound_weights"]
    data = {i.name for i in external_initializers(onnx.load(str(manifest.path("onnx")), load_external_data=False))}
    if bind == "all":
        assert set(bound) == data  # the plan holds no weight: each lives once, in model.onnx.data
    else:
        per_layer = 6 if expert_format == "mxfp4" else 4  # blocks+scales or float weights, and the biases
        assert len(bound) == per_layer * manifest.config.num_hidden_layers
        assert all(".mlp.experts." in name for name in bound) and set(bound) <= data
    view, _ = tensorrt_view(manifest.path("onnx"), bind)
    assert set(bound) <= {i.name for i in view.graph.input}
    assert not set(bound) & {i.name for i in view.graph.initializer}


def test_bad_bind_weights_is_a_one_line_error(checkpoint_factory, tmp_path):
    with pytest.raises(GptOssError, match="--bind-weights 'some', expected one of all, experts"):
        build(checkpoint_factory("demo"), tmp_path / "engine", BuildOptions(target="tensorrt-rtx", bind_weights="some"))
