"""The graph I/O contract: the names, symbolic shapes and dtypes every engine graph has, and the precisions.

One module states it; the exporter names the graph's inputs and outputs from it, the manifest records it, and
every backend, `compare` and the tests read it. It imports neither torch nor onnx: dtypes are names, which each
side turns into its own type (`getattr(torch, precision.torch)`, `onnx.TensorProto.<onnx>`, ...).

One graph serves prefill and decode: `input_ids [B,S]`, `past_len [B]`, `new_len [B]` (rows right-padded to S,
`new_len` tokens valid, after `past_len` cached ones) and one `kv_cache.{i} [B,2,Hkv,C,D]` per layer, where C is
the window on sliding layers (a ring) and `max_seq_len` on full ones. Outputs: the head's output at each row's last
valid token (`logits [B,V]`, `scores [B,labels]`), or at every position for token classification, the bare model
(`hidden_states [B,S,H]`) and all-positions builds, then `kv_cache_out.{i}`. Accuracy builds add per-layer outputs
after those: the router's top-k expert ids (`router_topk.{i} [B,S,k]`) and each layer's output
(`layer_output.{i} [B,S,H]`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from gptoss.exporter.config import GptOssConfig

CONTRACT_VERSION = 1
BARE_MODEL = "model"  # the head-less model: its output is the last hidden state (normed) of every position
HEADS = ("causal-lm", "sequence-classification", "token-classification", BARE_MODEL)
# Optional per-layer outputs of an accuracy build (`build --accuracy-outputs`), in graph order.
ROUTER, LAYER_HIDDEN = "router", "hidden"
ACCURACY_OUTPUTS = (ROUTER, LAYER_HIDDEN)

# Symbolic dimensions of the contract's shapes.
BATCH, SEQ_LEN, MAX_SEQ_LEN = "batch", "seq_len", "max_seq_len"
INPUT_IDS, PAST_LEN, NEW_LEN = "input_ids", "past_len", "new_len"
STEP_INPUTS = (INPUT_IDS, PAST_LEN, NEW_LEN)
INDEX_DTYPE = "int32"  # input_ids, past_len, new_len

Dim = int | str


@dataclass(frozen=True)
class ElementType:
    """One element type of graph tensors, by its torch/numpy name, and its name in each other library."""

    name: str  # torch attribute and numpy dtype name
    numpy: str | None  # None: numpy has no such type
    onnx: str  # onnx.TensorProto / onnx_ir.DataType member
    tensorrt: str  # tensorrt.DataType member

    @property
    def onnx_type_string(self) -> str:
        """As in ONNX schemas: `tensor(float)`, `tensor(int32)`, ..."""
        return f"tensor({self.onnx.lower()})"


ELEMENT_TYPES = {
    t.name: t
    for t in (
        ElementType("float32", "float32", "FLOAT", "FLOAT"),
        ElementType("float16", "float16", "FLOAT16", "HALF"),
        ElementType("bfloat16", None, "BFLOAT16", "BF16"),
        ElementType("int32", "int32", "INT32", "INT32"),
        ElementType("uint8", "uint8", "UINT8", "UINT8"),
    )
}
# Build precision (command line, manifest) -> element type of the activations, caches and dense weights.
PRECISIONS = {"fp32": ELEMENT_TYPES["float32"], "fp16": ELEMENT_TYPES["float16"], "bf16": ELEMENT_TYPES["bfloat16"]}


def precision(name: str) -> ElementType:
    """The element type of build precision `name` (fp32, fp16, bf16), or an error naming the option."""
    if name not in PRECISIONS:
        raise ConfigError(f"--precision {name!r} is not supported, expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


@dataclass(frozen=True)
class TensorSpec:
    """Shape (ints and symbolic dimension names) and element type name of one graph input or output."""

    shape: tuple[Dim, ...]
    dtype: str  # a key of ELEMENT_TYPES

    def concrete(self, **sizes: int) -> tuple[int, ...]:
        """The shape with each symbolic dimension replaced by `sizes[name]`."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(tuple(data["shape"]), data["dtype"])


def cache_input(layer: int) -> str:
    return f"kv_cache.{layer}"


def cache_output(layer: int) -> str:
    return f"kv_cache_out.{layer}"


def output_name(head: str) -> str:
    """The head's output: `logits` for the language model, `hidden_states` for the bare model, `scores` for the
    classifiers."""
    return {"causal-lm": "logits", BARE_MODEL: "hidden_states"}.get(head, "scores")


def outputs_every_position(head: str, all_positions: bool) -> bool:
    """Whether the graph outputs every position (`[B,S,...]`) rather than each row's last valid token."""
    return all_positions or head in ("token-classification", BARE_MODEL)


def router_output(layer: int) -> str:
    """Accuracy output: the experts layer `layer` routes each token to, `[B,S,k]` int32."""
    return f"router_topk.{layer}"


def layer_output(layer: int) -> str:
    """Accuracy output: the hidden state layer `layer` outputs (before the final norm), `[B,S,H]`."""
    return f"layer_output.{layer}"


def accuracy_kinds(kinds: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`kinds` checked against ACCURACY_OUTPUTS and put in graph order, or an error naming the option."""
    unknown = [kind for kind in kinds if kind not in ACCURACY_OUTPUTS]
    if unknown:
        raise ConfigError(f"--accuracy-outputs {unknown[0]!r} is unknown, expected {' or '.join(ACCURACY_OUTPUTS)}")
    return tuple(kind for kind in ACCURACY_OUTPUTS if kind in kinds)


def input_names(num_layers: int) -> list[str]:
    return [*STEP_INPUTS, *(cache_input(i) for i in range(num_layers))]


def output_names(head: str, num_layers: int) -> list[str]:
    return [output_name(head), *(cache_output(i) for i in range(num_layers))]


@dataclass(frozen=True)
class GraphIO:
    """Every input and output of one engine graph, in graph order."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @property
    def output(self) -> str:
        """Name of the head's output (the first one)."""
        return next(iter(self.outputs))

    @property
    def every_position(self) -> bool:
        return len(self.outputs[self.output].shape) == 3

    def cache_specs(self) -> list[TensorSpec]:
        """The `kv_cache.{i}` inputs, layer by layer."""
        return [spec for name, spec in self.inputs.items() if name not in STEP_INPUTS]

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": {name: spec.to_json() for name, spec in self.inputs.items()},
            "outputs": {name: spec.to_json() for name, spec in self.outputs.items()},
        }

    @classmethod
    def from_json(cls, inputs: dict[str, Any], outputs: dict[str, Any]) -> GraphIO:
        return cls(
            {name: TensorSpec.from_json(spec) for name, spec in inputs.items()},
            {name: TensorSpec.from_json(spec) for name, spec in outputs.items()},
        )


def graph_io(
    config: GptOssConfig, head: str, all_positions: bool, precision_name: str, accuracy_outputs: tuple[str, ...] = ()
) -> GraphIO:
    """The I/O of the graph built from `config` with this head, output mode, precision and accuracy outputs."""
    c = config
    dtype = precision(precision_name).name
    width = {"causal-lm": c.vocab_size, BARE_MODEL: c.hidden_size}.get(head, c.num_labels)
    out_shape = (BATCH, SEQ_LEN, width) if outputs_every_position(head, all_positions) else (BATCH, width)
    caches = [
        TensorSpec((BATCH, 2, c.num_key_value_heads, c.window_of(i) or MAX_SEQ_LEN, c.head_dim), dtype)
        for i in range(c.num_hidden_layers)
    ]
    inputs = {
        INPUT_IDS: TensorSpec((BATCH, SEQ_LEN), INDEX_DTYPE),
        PAST_LEN: TensorSpec((BATCH,), INDEX_DTYPE),
        NEW_LEN: TensorSpec((BATCH,), INDEX_DTYPE),
    }
    inputs |= {cache_input(i): spec for i, spec in enumerate(caches)}
    outputs = {output_name(head): TensorSpec(out_shape, dtype)}
    outputs |= {cache_output(i): spec for i, spec in enumerate(caches)}
    layers = range(c.num_hidden_layers)
    if ROUTER in accuracy_outputs:
        outputs |= {router_output(i): TensorSpec((BATCH, SEQ_LEN, c.num_experts_per_tok), INDEX_DTYPE) for i in layers}
    if LAYER_HIDDEN in accuracy_outputs:
        outputs |= {layer_output(i): TensorSpec((BATCH, SEQ_LEN, c.hidden_size), dtype) for i in layers}
    return GraphIO(inputs, outputs)
