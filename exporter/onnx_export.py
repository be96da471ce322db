"""Export the KV-cache step of a GPT-OSS model to ONNX with `gptoss::SinkAttention` / `gptoss::MoE` nodes.

The graph's inputs and outputs are those of the contract (`gptoss.runtime.contract`, docs/graph-contract.md);
the custom nodes and their model-local functions come from the op signatures (`gptoss.runtime.op_signatures`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from itertools import chain
from pathlib import Path

import onnx_ir as ir
import onnxscript.optimizer
import torch

from gptoss.runtime import contract
from gptoss.runtime.op_signatures import MOE, PLUGIN_ATTRIBUTES, SIGNATURES, SINK_ATTENTION, OpSignature

from .errors import GptOssError
from .layer_instances import instantiate_layers
from .loading import empty_model
from .model import STEP_GRAPH_PREFIX, GptOssWithHead, StepGraph
from .onnx_functions import (
    ONNX_OPSET,
    OPSET,
    DequantizeMXFP4,
    MoEExperts,
    MoEFloatBody,
    MoEMxfp4Body,
    SinkAttentionBody,
    local_function,
)
from .onnx_schemas import register_schemas

log = logging.getLogger(__name__)


def _translation(signature: OpSignature) -> Callable:
    """torch custom op -> ONNX node in the `gptoss` domain: every attribute (derived ones computed from the
    inputs' static shapes) plus the plugin attributes."""

    def translate(*args, **kwargs):
        values = signature.bind(args, kwargs)
        tensors = {t.name: values[t.name] for t in signature.inputs}
        attributes = signature.attribute_values(tensors, values)
        return getattr(OPSET, signature.name)(*tensors.values(), **attributes, **PLUGIN_ATTRIBUTES)

    translate.__signature__ = signature.python_signature()  # the exporter inspects it to bind the node's arguments
    return translate


def _translations() -> dict:
    ops = torch.ops.gptoss
    return {getattr(ops, s.torch_name).default: _translation(s) for s in SIGNATURES}


def _local_functions(is_mxfp4: bool) -> list[ir.Function]:
    """The standard-ONNX functions of the two ops (the MoE body of this model's weight format) and their helpers."""
    moe_body = MoEMxfp4Body if is_mxfp4 else MoEFloatBody
    bodies = [SinkAttentionBody, moe_body, MoEExperts] + ([DequantizeMXFP4] if is_mxfp4 else [])
    functions = [local_function(SINK_ATTENTION, SinkAttentionBody), local_function(MOE, moe_body)]
    return functions + [ir.serde.deserialize_function(body.to_function_proto()) for body in bodies]


def export_step_graph(
    model: GptOssWithHead, all_positions: bool, precision_name: str, accuracy_outputs: tuple[str, ...] = ()
) -> ir.Model:
    """The ONNX IR model of `model`'s cache step, with dynamic batch, sequence and cache length, and the per-layer
    `accuracy_outputs` asked for (`contract.ACCURACY_OUTPUTS`). Its weights are placeholders (attach them with
    `external_data.attach_weights`).

    Layers differ only in their window, so one layer of each kind is traced (a template model of one or two layers,
    with no weights) and the graph is instantiated for every layer (`instantiate_layers`): the trace takes the
    same few seconds whatever the model's depth. A graph with accuracy outputs, which each layer gives to the
    graph's outputs, is traced whole instead (slower on deep models, and only built for accuracy work).
    """
    register_schemas()
    c = model.config
    kinds = list(dict.fromkeys(c.layer_types))
    traced = c if accuracy_outputs else replace(c, num_hidden_layers=len(kinds), layer_types=tuple(kinds))
    template = empty_model(traced, model.head, _dtype(model), device="meta")
    batch, seq_len, capacity = 2, 5, max(2 * c.sliding_window, 8) + 3
    example = (
        torch.zeros(batch, seq_len, dtype=torch.int32, device="meta"),
        torch.zeros(batch, dtype=torch.int32, device="meta"),
        torch.full((batch,), seq_len, dtype=torch.int32, device="meta"),
        template.allocate_kv_caches(batch, capacity),
    )
    b, s, m = (torch.export.Dim(name) for name in (contract.BATCH, contract.SEQ_LEN, contract.MAX_SEQ_LEN))
    cache_shapes = [{0: b} if traced.window_of(i) else {0: b, 3: m} for i in range(traced.num_hidden_layers)]
    dynamic_shapes = ({0: b, 1: s}, {0: b}, {0: b}, cache_shapes)
    # torch's exporter logs a warning per missing optional library (torchvision): not ours to show.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            StepGraph(template, all_positions, accuracy_outputs).eval(),
            example,
            dynamo=True,
            opset_version=ONNX_OPSET,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=_translations(),
            optimize=False,
            verbose=False,
        )
    if program is None:
        raise GptOssError("torch.onnx.export returned no program")
    onnx_model = program.model
    if not accuracy_outputs:
        instantiate_layers(onnx_model.graph, [kinds.index(kind) for kind in c.layer_types])
    _name_io(onnx_model, contract.graph_io(c, model.head, all_positions, precision_name, accuracy_outputs))
    for identifier in [i for i in onnx_model.functions if i[0] == OPSET.domain]:
        del onnx_model.functions[identifier]
    # Fold constants (TensorRT needs e.g. ReduceMean's axes as build-time constants) but never an op on a weight or
    # buffer: each stays the checkpoint's tensor (streamed in later, possibly without a value now). The gptoss nodes
    # stay nodes: their functions are attached afterwards, and inlining is off.
    state = [STEP_GRAPH_PREFIX + name for name, _ in chain(model.named_parameters(), model.named_buffers())]
    with _as_graph_inputs(onnx_model.graph, [name for name in state if name in onnx_model.graph.initializers]):
        _fold_constants(onnx_model)
    for function in _local_functions(c.is_mxfp4):
        onnx_model.functions[function.identifier()] = function
    onnx_model.opset_imports[OPSET.domain] = OPSET.version
    onnx_model.producer_name = "gptoss-export"
    return onnx_model


def _fold_constants(onnx_model: ir.Model) -> None:
    """Constant folding and clean-up only: onnxscript's full optimizer also applies its rewrite rules, which take
    longer than the whole trace on deep models and are not needed by ONNX Runtime or TensorRT."""
    onnxscript.optimizer.fold_constants(onnx_model)
    common = ir.passes.common
    ir.passes.Sequential(
        common.RemoveUnusedNodesPass(),
        common.RemoveUnusedFunctionsPass(),
        common.RemoveUnusedOpsetsPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
    )(onnx_model)


@contextmanager
def _as_graph_inputs(graph: ir.Graph, names: list[str]) -> Iterator[None]:
    """Turn the initializers `names` into value-less graph inputs for the duration (so no pass reads or folds
    them), then back into initializers with their values."""
    values = [graph.initializers.pop(name) for name in names]
    saved = [value.const_value for value in values]
    for value in values:
        value.const_value = None
        graph.inputs.append(value)
    try:
        yield
    finally:
        for value, const_value in zip(values, saved, strict=True):
            graph.inputs.remove(value)
            value.const_value = const_value
            graph.register_initializer(value)


def _dtype(model: GptOssWithHead) -> torch.dtype:
    """The model's build precision: the dtype of its dense weights."""
    return model.model.embed_tokens.weight.dtype


def _name_io(onnx_model: ir.Model, io: contract.GraphIO) -> None:
    """Give the traced graph's inputs and outputs their contract names, checking count and element type."""
    graph = onnx_model.graph
    for values, specs in ((graph.inputs, io.inputs), (graph.outputs, io.outputs)):
        if len(values) != len(specs):
            raise GptOssError(f"exported graph has {len(values)} values where the contract has {len(specs)}")
        for value, (name, spec) in zip(values, specs.items(), strict=True):
            expected = ir.DataType[contract.ELEMENT_TYPES[spec.dtype].onnx]
            if value.dtype != expected:
                raise GptOssError(f"exported graph: {name} is {value.dtype}, the contract says {spec.dtype}")
            value.name = name


def save_onnx(onnx_model: ir.Model, path: Path, data_name: str) -> None:
    """Write the graph of `onnx_model` to `path`; its weights are already external tensors in `data_name` beside
    it (`external_data.attach_weights`), only the tracer's small constants stay inline."""
    external = {v.const_value.location for v in onnx_model.graph.initializers.values()
                if isinstance(v.const_value, ir.ExternalTensor)}  # fmt: skip
    if external - {data_name}:
        raise GptOssError(f"{path}: weights in {sorted(external - {data_name})}, expected only {data_name}")
    ir.save(onnx_model, path)
