"""The graph contract and the op signatures: one statement each, and the exported graph, the PyTorch ops and the
registered ONNX schemas agree with them; importing the runtime pulls in none of the export stack."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch

from gptoss.exporter.build import BuildOptions, build
from gptoss.exporter.config import load_config
from gptoss.exporter.onnx_schemas import register_schemas
from gptoss.runtime import contract
from gptoss.runtime.op_signatures import PLUGIN_ATTRIBUTES, SIGNATURES


def test_importing_the_runtime_imports_no_export_stack():
    code = "import sys, gptoss.runtime; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("torch", "onnx", "onnxscript", "onnx_ir", "onnxruntime", "transformers"):
        assert f"'{heavy}'" not in loaded


@pytest.mark.parametrize(("precision", "all_positions"), [("fp32", False), ("fp16", True)])
def test_exported_graph_has_the_contract_io(checkpoint_factory, tmp_path, precision, all_positions):
    checkpoint = checkpoint_factory("demo", expert_format="mxfp4")
    options = BuildOptions(precision=precision, all_positions=all_positions, max_seq_len=64)
    manifest = build(checkpoint, tmp_path / "engine", options)
    expected = contract.graph_io(load_config(checkpoint), "causal-lm", all_positions, precision)
    assert manifest.io == expected
    graph = onnx.load(str(manifest.path("onnx")), load_external_data=False).graph
    for values, specs in ((graph.input, expected.inputs), (graph.output, expected.outputs)):
        assert [v.name for v in values] == list(specs)
        for value, spec in zip(values, specs.values(), strict=True):
            dims = [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
            assert len(dims) == len(spec.shape)
            assert [d for d in spec.shape if isinstance(d, int)] == [d for d in dims if isinstance(d, int)]
            elem_type = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
            assert elem_type == contract.ELEMENT_TYPES[spec.dtype].onnx


def test_custom_nodes_carry_every_signature_attribute(checkpoint_factory, tmp_path):
    manifest = build(checkpoint_factory("demo", expert_format="bf16"), tmp_path / "engine", BuildOptions())
    model = onnx.load(str(manifest.path("onnx")), load_external_data=False)
    for signature in SIGNATURES:
        nodes = [n for n in model.graph.node if n.op_type == signature.name]
        assert nodes
        expected = {a.name for a in signature.attributes} | set(PLUGIN_ATTRIBUTES)
        assert all({a.name for a in node.attribute} == expected for node in nodes)
        function = next(f for f in model.functions if f.name == signature.name)
        assert list(function.input) == [t.name for t in signature.inputs]
        assert list(function.output) == [t.name for t in signature.outputs]


def test_torch_ops_and_onnx_schemas_follow_the_signatures():
    register_schemas()
    for signature in SIGNATURES:
        schema = getattr(torch.ops.gptoss, signature.torch_name).default._schema
        assert [a.name for a in schema.arguments] == list(signature.parameters)
        assert len(schema.returns) == len(signature.outputs)
        onnx_schema = onnx.defs.get_schema(signature.name, 1, "gptoss")
        assert [p.name for p in onnx_schema.inputs] == [t.name for t in signature.inputs]
        assert set(onnx_schema.attributes) == {a.name for a in signature.attributes} | set(PLUGIN_ATTRIBUTES)
