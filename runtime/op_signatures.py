"""The signatures of the two custom ops, `gptoss::SinkAttention` and `gptoss::MoE`, declared once.

Everything else is derived from these declarations: the PyTorch custom op and its fake (`exporter/ops.py`), the
ONNX node and its model-local function wrapper (`exporter/onnx_export.py`, `exporter/onnx_functions.py`), the
registered ONNX `OpSchema` (`exporter/onnx_schemas.py`) and the ctypes binding of the kernels' C ABI
(`tools/kernels.py`). Adding an attribute means adding it here (and to the C++ plugin fields and kernel
descriptor, which live in `plugins/`). The exact semantics are in docs/ops.md; imports nothing heavy.

Attributes come in two kinds: *passed* ones are arguments of the PyTorch op; *derived* ones (MoE's sizes and
weight format) are computed from the input tensors' static shapes, so the PyTorch op does not repeat them while
the ONNX node and the TensorRT plugin still receive them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

DOMAIN = "gptoss"  # ONNX domain of the custom nodes
VERSION = 1  # version of that domain
PLUGIN_VERSION = "1"  # TensorRT plugin version the nodes ask for (ONNX attribute plugin_version)
PLUGIN_NAMESPACE = ""
PLUGIN_ATTRIBUTES = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE}

FLOAT_TYPES = ("float32", "float16", "bfloat16")
# MXFP4 as the MoE op takes it: blocks of 32 elements along the input axis, each 16 bytes of E2M1 code pairs plus
# one E8M0 scale byte.
MXFP4_BLOCK = 32
MXFP4_BLOCK_BYTES = MXFP4_BLOCK // 2
AttributeValue = int | float | str
# name -> an object with `.shape` (a torch tensor, an ONNX IR value, ...) or None for an absent optional input
Tensors = Mapping[str, Any]


@dataclass(frozen=True)
class TensorArg:
    """One input or output. `types` is a type-constraint name of the op or a single element type name."""

    name: str
    types: str
    doc: str
    optional: bool = False  # may be None (absent): still passed, in its place
    like: str | None = None  # outputs: the input whose shape and element type this output has


def inputs_table(text: str) -> tuple[TensorArg, ...]:
    """Inputs, one per line: name, element type or type constraint (a `?` suffix: optional), description."""
    rows = [line.split(maxsplit=2) for line in text.strip().splitlines()]
    return tuple(TensorArg(name, types.rstrip("?"), doc, optional=types.endswith("?")) for name, types, doc in rows)


def outputs_table(text: str) -> tuple[TensorArg, ...]:
    """Outputs, one per line: name, the input whose shape and element type it has, description."""
    rows = [line.split(maxsplit=2) for line in text.strip().splitlines()]
    return tuple(TensorArg(name, "", doc, like=like) for name, like, doc in rows)


@dataclass(frozen=True)
class Attribute:
    """One attribute: a passed argument (with an optional default), or `derive`d from the inputs."""

    name: str
    kind: type  # int, float or str
    doc: str
    default: AttributeValue | None = None
    derive: Callable[[Tensors], AttributeValue] | None = None
    choices: tuple[str, ...] = ()  # str attributes: the accepted values, in the order of the C enum


@dataclass(frozen=True)
class OpSignature:
    name: str  # ONNX op type and TensorRT plugin name
    torch_name: str  # the PyTorch op is gptoss::<torch_name>; the C ABI function gptoss_<torch_name>
    doc: str
    inputs: tuple[TensorArg, ...]
    outputs: tuple[TensorArg, ...]
    attributes: tuple[Attribute, ...]
    type_constraints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The kernel's C descriptor struct: its fields in C order; each is an attribute, a tensor extent
    # (`extents[name] = (tensor, dim)`) or a tensor's element type (`element_types[name] = tensor`, a gptoss_dtype).
    descriptor: tuple[str, ...] = ()
    extents: dict[str, tuple[str, int]] = field(default_factory=dict)
    element_types: dict[str, str] = field(default_factory=dict)
    # Expected shape of every present tensor, from the descriptor's values (name -> value).
    shapes: Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]] | None = None

    def __post_init__(self) -> None:
        types = {t.name: t.types for t in self.inputs}  # each output has the element type of its `like` input
        object.__setattr__(self, "outputs", tuple(replace(t, types=types[t.like]) for t in self.outputs))

    @property
    def passed_attributes(self) -> tuple[Attribute, ...]:
        return tuple(a for a in self.attributes if a.derive is None)

    @cached_property
    def parameters(self) -> tuple[str, ...]:
        """Parameters of the PyTorch op, in order: every input, then the passed attributes."""
        return tuple(t.name for t in self.inputs) + tuple(a.name for a in self.passed_attributes)

    @cached_property
    def _signature(self) -> inspect.Signature:
        defaults = {a.name: a.default for a in self.passed_attributes if a.default is not None}
        return inspect.Signature([
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(name, inspect._empty))
            for name in self.parameters
        ])  # fmt: skip

    def python_signature(self) -> inspect.Signature:
        """`parameters` as a Python signature (defaults included), for functions that take the op's arguments."""
        return self._signature

    def bind(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The PyTorch op's arguments by parameter name, defaults filled in (a TypeError names what is wrong)."""
        if not kwargs and len(args) == len(self.parameters):  # every argument by position: the models' calls
            return dict(zip(self.parameters, args, strict=True))
        bound = self.python_signature().bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def attribute_values(self, tensors: Tensors, passed: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
        """Every attribute's value: `passed` ones (defaults filled in) and those derived from `tensors`."""
        values = {}
        for attribute in self.attributes:
            if attribute.derive is not None:
                values[attribute.name] = attribute.derive(tensors)
            elif attribute.name in passed:
                values[attribute.name] = passed[attribute.name]
            elif attribute.default is not None:
                values[attribute.name] = attribute.default
            else:
                raise TypeError(f"{self.torch_name}: missing attribute {attribute.name!r}")
        return values


SINK_ATTENTION = OpSignature(
    name="SinkAttention",
    torch_name="sink_attention",
    doc="Grouped-query attention with per-head sinks and an optional sliding window over a KV cache.",
    inputs=inputs_table("""
        q         T        [B,S,Hq*D], RoPE applied
        k         T        [B,S,Hkv*D], RoPE applied
        v         T        [B,S,Hkv*D]
        sinks     float32  [Hq] sink logits
        kv_cache  T        [B,2,Hkv,C,D]; sliding layers use C = window slots as a ring
        past_len  int32    [B] tokens already cached per row
        new_len   int32    [B] valid new tokens per row (rows right-padded to S)
    """),
    outputs=outputs_table("""
        out           q         [B,S,Hq*D]; zeros for padded queries
        kv_cache_out  kv_cache  the cache with the new keys and values written
    """),
    attributes=(
        Attribute("num_heads", int, "query heads Hq"),
        Attribute("num_kv_heads", int, "key/value heads Hkv"),
        Attribute("head_dim", int, "dimension D per head"),
        Attribute("sliding_window", int, "window W counting the current token; 0 = full attention"),
        Attribute("scale", float, "score scale, head_dim^-0.5"),
    ),
    type_constraints={"T": FLOAT_TYPES},
    descriptor=("batch", "seq_len", "num_heads", "num_kv_heads", "head_dim", "capacity", "sliding_window", "scale",
                "dtype"),  # fmt: skip
    extents={"batch": ("q", 0), "seq_len": ("q", 1), "capacity": ("kv_cache", 3)},
    element_types={"dtype": "q"},
    shapes=lambda d: {
        "q": (d["batch"], d["seq_len"], d["num_heads"] * d["head_dim"]),
        "k": (d["batch"], d["seq_len"], d["num_kv_heads"] * d["head_dim"]),
        "v": (d["batch"], d["seq_len"], d["num_kv_heads"] * d["head_dim"]),
        "sinks": (d["num_heads"],),
        "kv_cache": (d["batch"], 2, d["num_kv_heads"], d["capacity"], d["head_dim"]),
        "past_len": (d["batch"],),
        "new_len": (d["batch"],),
    },
)


def _moe_shapes(d: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    tokens, hidden, inter, experts, top_k = (
        d["num_tokens"], d["hidden_size"], d["intermediate_size"], d["num_experts"], d["top_k"]
    )  # fmt: skip
    shapes = {
        "hidden": (tokens, hidden),
        "expert_ids": (tokens, top_k),
        "expert_weights": (tokens, top_k),
        "gate_up_bias": (experts, 2 * inter),
        "down_bias": (experts, hidden),
    }
    if d["weight_format"] == "mxfp4":
        return shapes | {
            "gate_up_weight": (experts, 2 * inter, hidden // MXFP4_BLOCK, MXFP4_BLOCK_BYTES),
            "gate_up_scales": (experts, 2 * inter, hidden // MXFP4_BLOCK),
            "down_weight": (experts, hidden, inter // MXFP4_BLOCK, MXFP4_BLOCK_BYTES),
            "down_scales": (experts, hidden, inter // MXFP4_BLOCK),
        }
    return shapes | {"gate_up_weight": (experts, 2 * inter, hidden), "down_weight": (experts, hidden, inter)}


MOE = OpSignature(
    name="MoE",
    torch_name="moe",
    doc="Routed experts with clamped SwiGLU; MXFP4 weights stay packed (uint8 E2M1 pairs + E8M0 scales).",
    inputs=inputs_table("""
        hidden          T        [T,H]
        expert_ids      int32    [T,K]
        expert_weights  T        [T,K] softmax over the k selected router logits
        gate_up_weight  W        [E,2I,H] float, or MXFP4 blocks [E,2I,H/32,16]
        gate_up_scales  uint8?   MXFP4 scales [E,2I,H/32]; absent (None, or an empty ONNX input) for float weights
        gate_up_bias    float32  [E,2I], interleaved gate (even) / up (odd)
        down_weight     W        [E,H,I] float, or MXFP4 blocks [E,H,I/32,16]
        down_scales     uint8?   MXFP4 scales [E,H,I/32]; absent for float weights
        down_bias       float32  [E,H]
    """),
    outputs=outputs_table("""
        out  hidden  [T,H]
    """),
    attributes=(
        Attribute("num_experts", int, "E", derive=lambda t: t["gate_up_weight"].shape[0]),
        Attribute("top_k", int, "K", derive=lambda t: t["expert_ids"].shape[1]),
        Attribute("hidden_size", int, "H", derive=lambda t: t["hidden"].shape[1]),
        Attribute("intermediate_size", int, "I", derive=lambda t: t["gate_up_weight"].shape[1] // 2),
        Attribute(
            "weight_format", str, "'mxfp4' (packed blocks + scales) or 'float'",
            derive=lambda t: "float" if t["gate_up_scales"] is None else "mxfp4", choices=("float", "mxfp4"),
        ),  # fmt: skip
        Attribute("swiglu_alpha", float, "sigmoid gain", default=1.702),
        Attribute("swiglu_limit", float, "clamp limit", default=7.0),
    ),
    type_constraints={"T": FLOAT_TYPES, "W": (*FLOAT_TYPES, "uint8")},
    descriptor=("num_tokens", "hidden_size", "intermediate_size", "num_experts", "top_k", "swiglu_alpha",
                "swiglu_limit", "dtype", "weight_format", "weight_dtype"),  # fmt: skip
    extents={"num_tokens": ("hidden", 0)},
    element_types={"dtype": "hidden", "weight_dtype": "gate_up_weight"},
    shapes=_moe_shapes,
)

SIGNATURES = (SINK_ATTENTION, MOE)
