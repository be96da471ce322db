"""`onnx.defs.OpSchema` registrations for the `gptoss` domain, so the ONNX checker and shape inference
know `SinkAttention` and `MoE` (DESIGN.md "The two custom ops")."""

from __future__ import annotations

import onnx
from onnx.defs import OpSchema

from .onnx_functions import DOMAIN, VERSION

_FLOATS = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
_INT, _FLOAT, _STRING = OpSchema.AttrType.INT, OpSchema.AttrType.FLOAT, OpSchema.AttrType.STRING


def _input(name: str, type_str: str, doc: str = "", optional: bool = False) -> OpSchema.FormalParameter:
    option = OpSchema.FormalParameterOption.Optional if optional else OpSchema.FormalParameterOption.Single
    return OpSchema.FormalParameter(name, type_str, doc, param_option=option)


def _attribute(name: str, kind: OpSchema.AttrType, doc: str) -> OpSchema.Attribute:
    return OpSchema.Attribute(name, kind, doc, required=True)


_PLUGIN_ATTRIBUTES = [
    _attribute("plugin_version", _STRING, "TensorRT plugin version the ONNX parser looks up"),
    _attribute("plugin_namespace", _STRING, "TensorRT plugin namespace the ONNX parser looks up"),
]

SINK_ATTENTION = OpSchema(
    "SinkAttention",
    DOMAIN,
    VERSION,
    doc="Grouped-query attention with per-head sinks and an optional sliding window over a KV cache.",
    inputs=[
        _input("q", "T", "[B,S,Hq*D], RoPE applied"),
        _input("k", "T", "[B,S,Hkv*D], RoPE applied"),
        _input("v", "T", "[B,S,Hkv*D]"),
        _input("sinks", "tensor(float)", "[Hq] sink logits"),
        _input("kv_cache", "T", "[B,2,Hkv,C,D]; sliding layers use C = window slots as a ring"),
        _input("past_len", "tensor(int32)", "[B] tokens already cached per row"),
        _input("new_len", "tensor(int32)", "[B] valid new tokens per row (rows right-padded to S)"),
    ],
    outputs=[_input("out", "T", "[B,S,Hq*D]"), _input("kv_cache_out", "T", "updated cache, same shape")],
    type_constraints=[("T", _FLOATS, "activation type")],
    attributes=[
        _attribute("num_heads", _INT, "query heads"),
        _attribute("num_kv_heads", _INT, "key/value heads"),
        _attribute("head_dim", _INT, "dimension per head"),
        _attribute("sliding_window", _INT, "window counting the current token; 0 = full attention"),
        _attribute("scale", _FLOAT, "score scale, head_dim^-0.5"),
        *_PLUGIN_ATTRIBUTES,
    ],
)

MOE = OpSchema(
    "MoE",
    DOMAIN,
    VERSION,
    doc="Routed experts with clamped SwiGLU; MXFP4 weights stay packed (uint8 E2M1 pairs + E8M0 scales).",
    inputs=[
        _input("hidden", "T", "[T,H]"),
        _input("expert_ids", "tensor(int32)", "[T,K]"),
        _input("expert_weights", "T", "[T,K] softmax over the k selected router logits"),
        _input("gate_up_weight", "W", "[E,2I,H] float, or MXFP4 blocks [E,2I,H/32,16]"),
        _input("gate_up_scales", "tensor(uint8)", "MXFP4 scales [E,2I,H/32]", optional=True),
        _input("gate_up_bias", "tensor(float)", "[E,2I], interleaved gate (even) / up (odd)"),
        _input("down_weight", "W", "[E,H,I] float, or MXFP4 blocks [E,H,I/32,16]"),
        _input("down_scales", "tensor(uint8)", "MXFP4 scales [E,H,I/32]", optional=True),
        _input("down_bias", "tensor(float)", "[E,H]"),
    ],
    outputs=[_input("out", "T", "[T,H]")],
    type_constraints=[("T", _FLOATS, "activation type"), ("W", [*_FLOATS, "tensor(uint8)"], "expert weights")],
    attributes=[
        _attribute("num_experts", _INT, "E"),
        _attribute("top_k", _INT, "K"),
        _attribute("hidden_size", _INT, "H"),
        _attribute("intermediate_size", _INT, "I"),
        _attribute("weight_format", _STRING, "'mxfp4' or 'float'"),
        _attribute("swiglu_alpha", _FLOAT, "sigmoid gain, 1.702"),
        _attribute("swiglu_limit", _FLOAT, "clamp limit, 7.0"),
        *_PLUGIN_ATTRIBUTES,
    ],
)


def register_schemas() -> None:
    """Register both schemas with `onnx.defs` (idempotent)."""
    for schema in (SINK_ATTENTION, MOE):
        if not onnx.defs.has(schema.name, schema.since_version, schema.domain):
            onnx.defs.register_schema(schema)
