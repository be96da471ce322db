"""Export the KV-cache step of a GPT-OSS model to ONNX with `gptoss::SinkAttention` / `gptoss::MoE` nodes.

One graph serves prefill and decode (DESIGN.md "Graph I/O contract"):
inputs `input_ids [B,S]`, `past_len [B]`, `new_len [B]` (int32), `kv_cache.{i}`; outputs `logits [B,V]`
(last valid token per row; `[B,S,V]` with `all_positions`) or `scores`, then `kv_cache_out.{i}`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir
import onnxscript.optimizer
import torch

from gptoss.runtime.manifest import PLUGIN_NAMESPACE, PLUGIN_VERSION

from .config import GptOssConfig
from .errors import GptOssError
from .model import GptOssWithHead, StepGraph
from .onnx_functions import ONNX_OPSET, OPSET, DequantizeMXFP4, MoEExperts, MoEFloat, MoEMxfp4, SinkAttention
from .onnx_schemas import register_schemas

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphIO:
    """Names, symbolic shapes and dtypes of the exported graph's inputs and outputs."""

    inputs: dict[str, dict]
    outputs: dict[str, dict]


def output_name(head: str) -> str:
    return "logits" if head == "causal-lm" else "scores"


def graph_io(config: GptOssConfig, head: str, all_positions: bool, dtype_name: str) -> GraphIO:
    """The I/O contract written into the manifest (dimension names: batch, seq_len, max_seq_len)."""
    c = config
    per_token = all_positions or head == "token-classification"
    width = c.vocab_size if head == "causal-lm" else c.num_labels
    out_shape = ["batch", "seq_len", width] if per_token else ["batch", width]
    caches = {
        f"kv_cache.{i}": {
            "shape": ["batch", 2, c.num_key_value_heads, c.window_of(i) or "max_seq_len", c.head_dim],
            "dtype": dtype_name,
        }
        for i in range(c.num_hidden_layers)
    }
    inputs = {
        "input_ids": {"shape": ["batch", "seq_len"], "dtype": "int32"},
        "past_len": {"shape": ["batch"], "dtype": "int32"},
        "new_len": {"shape": ["batch"], "dtype": "int32"},
        **caches,
    }
    outputs = {output_name(head): {"shape": out_shape, "dtype": dtype_name}}
    outputs |= {name.replace("kv_cache", "kv_cache_out"): spec for name, spec in caches.items()}
    return GraphIO(inputs, outputs)


def _translations(config: GptOssConfig) -> dict:
    """torch custom op -> ONNX node in the `gptoss` domain, with the plugin attributes."""
    plugin = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE}

    def sink_attention(q, k, v, sinks, kv_cache, past_len, new_len, num_heads, num_kv_heads, head_dim,
                       sliding_window, scale):  # fmt: skip
        return OPSET.SinkAttention(
            q, k, v, sinks, kv_cache, past_len, new_len, num_heads=num_heads, num_kv_heads=num_kv_heads,
            head_dim=head_dim, sliding_window=sliding_window, scale=scale, **plugin,
        )  # fmt: skip

    def moe(hidden, expert_ids, expert_weights, gate_up_weight, gate_up_scales, gate_up_bias, down_weight,
            down_scales, down_bias, swiglu_alpha, swiglu_limit):  # fmt: skip
        return OPSET.MoE(
            hidden, expert_ids, expert_weights, gate_up_weight, gate_up_scales, gate_up_bias, down_weight,
            down_scales, down_bias, num_experts=config.num_local_experts, top_k=config.num_experts_per_tok,
            hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
            weight_format="mxfp4" if config.is_mxfp4 else "float", swiglu_alpha=swiglu_alpha,
            swiglu_limit=swiglu_limit, **plugin,
        )  # fmt: skip

    return {torch.ops.gptoss.sink_attention.default: sink_attention, torch.ops.gptoss.moe.default: moe}


def _local_functions(config: GptOssConfig) -> list[ir.Function]:
    """The standard-ONNX bodies of the two ops, with the MoE variant of this model's weight format."""
    moe = MoEMxfp4 if config.is_mxfp4 else MoEFloat
    helpers = [MoEExperts, DequantizeMXFP4] if config.is_mxfp4 else [MoEExperts]
    functions = []
    for function, name in [(SinkAttention, "SinkAttention"), (moe, "MoE")] + [(h, h.name) for h in helpers]:
        proto = function.to_function_proto()
        proto.name = name
        functions.append(ir.serde.deserialize_function(proto))
    return functions


def export_step_graph(model: GptOssWithHead, all_positions: bool = False) -> ir.Model:
    """Trace `model`'s cache step with dynamic batch, sequence and cache length; return the ONNX IR model."""
    register_schemas()
    c = model.config
    batch, seq_len, capacity = 2, 5, max(2 * c.sliding_window, 8) + 3
    example = (
        torch.zeros(batch, seq_len, dtype=torch.int32),
        torch.zeros(batch, dtype=torch.int32),
        torch.full((batch,), seq_len, dtype=torch.int32),
        model.model.allocate_kv_caches(batch, capacity),
    )
    b, s, m = torch.export.Dim("batch"), torch.export.Dim("seq_len"), torch.export.Dim("max_seq_len")
    cache_shapes = [{0: b} if c.window_of(i) else {0: b, 3: m} for i in range(c.num_hidden_layers)]
    dynamic_shapes = ({0: b, 1: s}, {0: b}, {0: b}, cache_shapes)
    # torch's exporter logs a warning per missing optional library (torchvision): not ours to show.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            StepGraph(model, all_positions).eval(),
            example,
            dynamo=True,
            opset_version=ONNX_OPSET,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=_translations(c),
            optimize=False,
            verbose=False,
        )
    if program is None:
        raise GptOssError("torch.onnx.export returned no program")
    onnx_model = program.model
    _name_io(onnx_model, output_name(model.head), c.num_hidden_layers)
    for identifier in [i for i in onnx_model.functions if i[0] == OPSET.domain]:
        del onnx_model.functions[identifier]
    # Fold constants (TensorRT needs e.g. ReduceMean's axes as build-time constants); the gptoss nodes stay
    # nodes: their functions are attached afterwards, and inlining is off.
    onnxscript.optimizer.optimize_ir(onnx_model, inline=False)
    for function in _local_functions(c):
        onnx_model.functions[function.identifier()] = function
    onnx_model.opset_imports[OPSET.domain] = OPSET.version
    onnx_model.producer_name = "gptoss-export"
    return onnx_model


def _name_io(onnx_model: ir.Model, output: str, num_layers: int) -> None:
    graph = onnx_model.graph
    input_names = ["input_ids", "past_len", "new_len"] + [f"kv_cache.{i}" for i in range(num_layers)]
    output_names = [output] + [f"kv_cache_out.{i}" for i in range(num_layers)]
    if len(graph.inputs) != len(input_names) or len(graph.outputs) != len(output_names):
        raise GptOssError(
            f"exported graph has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs, "
            f"expected {len(input_names)} and {len(output_names)}"
        )
    for value, name in zip(graph.inputs, input_names, strict=True):
        value.name = name
    for value, name in zip(graph.outputs, output_names, strict=True):
        value.name = name


def save_onnx(onnx_model: ir.Model, path: Path, data_name: str) -> None:
    """Write `onnx_model` to `path` with every initializer in the external file `data_name` beside it."""
    ir.save(onnx_model, path, external_data=data_name)
