"""Tensor-by-tensor access to Hugging Face GPT-OSS safetensors checkpoints (single file or sharded)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from safetensors import safe_open

from gptoss.runtime.contract import BARE_MODEL
from gptoss.runtime.files import confined, read_json
from gptoss.runtime.op_signatures import MXFP4_BLOCK, MXFP4_BLOCK_BYTES

from .config import GptOssConfig
from .errors import CheckpointError
from .tensor_stream import raw_bytes

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
PACKED_DTYPES = (torch.uint8,)
# safetensors header names of the dtypes a checkpoint may hold
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "U8": torch.uint8}


@dataclass(frozen=True)
class NonFinite:
    """How a stored value that is not finite looks: every bit of `bits` set in its `unsigned` view (the exponent of
    an IEEE float; the whole byte of an E8M0 scale, whose 0xFF is NaN)."""

    unsigned: str  # numpy dtype of the view
    bits: int
    what: str

    CHUNK = 1 << 18  # elements tested at once: the temporary stays in the cache (about 0.12 s per GiB)

    def refuse(self, data: bytes | memoryview, where: str) -> None:
        """A CheckpointError naming `where` if the raw stored bytes `data` hold such a value."""
        values = np.frombuffer(data, dtype=self.unsigned)
        scratch = np.empty(min(values.size, self.CHUNK), values.dtype)
        for start in range(0, values.size, self.CHUNK):
            chunk = values[start : start + self.CHUNK]
            if np.bitwise_and(chunk, self.bits, out=scratch[: chunk.size]).max() == self.bits:
                raise CheckpointError(f"{where} holds {self.what}, expected finite values")


_IEEE_NON_FINITE = {
    torch.float32: NonFinite("uint32", 0x7F80_0000, "NaN or infinity"),
    torch.bfloat16: NonFinite("uint16", 0x7F80, "NaN or infinity"),
    torch.float16: NonFinite("uint16", 0x7C00, "NaN or infinity"),
}
_E8M0_NAN = NonFinite("uint8", 0xFF, "the scale byte 0xFF (E8M0 NaN)")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor the model needs: its checkpoint name, shape and allowed storage dtypes."""

    name: str
    shape: tuple[int, ...]
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES
    scales: bool = False  # MXFP4 E8M0 scales (the FP4 blocks beside them have no NaN or infinity)

    def non_finite(self, stored: torch.dtype) -> NonFinite | None:
        """What a NaN or infinity of this tensor looks like when stored as `stored`; None if it has none."""
        return _E8M0_NAN if self.scales else _IEEE_NON_FINITE.get(stored)


class Checkpoint:
    """Lazily reads named tensors from the safetensors files of one checkpoint directory."""

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        self._handles: dict[Path, object] = {}
        self._headers: dict[Path, tuple[int, dict]] = {}  # file -> (first data byte, safetensors header)
        self._file_of = self._index()

    def _index(self) -> dict[str, Path]:
        index_path = self.model_dir / INDEX_FILE
        if index_path.is_file():
            index = read_json(index_path, CheckpointError)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index_path}: expected a safetensors index, an object with a weight_map object")
            return {
                name: confined(self.model_dir, file, CheckpointError, f"{index_path}: weight_map[{name!r}]")
                for name, file in weight_map.items()
            }
        single = self.model_dir / SINGLE_FILE
        if not single.is_file():
            raise CheckpointError(f"{self.model_dir}: no {SINGLE_FILE} or {INDEX_FILE} found")
        return dict.fromkeys(self._open(single).keys(), single)

    def _open(self, path: Path):
        if path not in self._handles:
            if not path.is_file():
                raise CheckpointError(f"{path}: listed in {INDEX_FILE} but missing")
            try:
                self._handles[path] = safe_open(str(path), framework="pt")
            except Exception as exc:  # safetensors raises its own error types for bad headers
                raise CheckpointError(f"{path}: truncated or not a safetensors file ({exc})") from None
        return self._handles[path]

    def names(self) -> Iterator[str]:
        return iter(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def dtype_name(self, name: str) -> str:
        """The tensor's safetensors dtype name (`BF16`, `U8`, ...)."""
        return self._slice(name).get_dtype()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._slice(name).get_shape())

    def head(self) -> str:
        """The output head these tensors were saved with."""
        if "score.weight" not in self:
            return "causal-lm"
        return "token-classification" if "score.bias" in self else "sequence-classification"

    def _slice(self, name: str):
        if name not in self._file_of:
            raise CheckpointError(f"{self.model_dir}: tensor {name!r} is missing from the checkpoint")
        path = self._file_of[name]
        handle = self._open(path)
        try:
            return handle.get_slice(name)
        except Exception:  # safetensors' own error type
            raise CheckpointError(f"{path}: has no tensor {name!r} ({INDEX_FILE} lists it there)") from None

    def check(self, spec: TensorSpec) -> None:
        """Check a tensor's shape and dtype against `spec` from the file header alone."""
        where = f"{self._file_of.get(spec.name, self.model_dir)}: tensor {spec.name!r}"
        header = self._slice(spec.name)
        shape = tuple(header.get_shape())
        if shape != spec.shape:
            raise CheckpointError(f"{where} has shape {list(shape)}, expected {list(spec.shape)}")
        dtype = SAFETENSORS_DTYPES.get(header.get_dtype())
        if dtype not in spec.dtypes:
            expected = ", ".join(str(d).removeprefix("torch.") for d in spec.dtypes)
            raise CheckpointError(f"{where} is {header.get_dtype()}, expected one of {expected}")

    def data_range(self, spec: TensorSpec) -> tuple[Path, int, int]:
        """File and absolute byte range of a tensor's data, after checking `spec` and that the file holds all of it
        (so a truncated shard fails here, before anything is written)."""
        self.check(spec)
        path = self._file_of[spec.name]
        if path not in self._headers:
            with open(path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                self._headers[path] = (8 + size, json.loads(handle.read(size)))
        data_start, header = self._headers[path]
        begin, end = (data_start + offset for offset in header[spec.name]["data_offsets"])
        if end > path.stat().st_size:
            raise CheckpointError(f"{path}: truncated (tensor {spec.name!r} ends at byte {end}, the file has "
                                  f"{path.stat().st_size})")  # fmt: skip
        return path, begin, end

    def read(self, spec: TensorSpec) -> torch.Tensor:
        """Read one tensor, checking it against `spec` before any data is copied. Read with plain reads rather than
        mapped: a mapping would keep every page read in this process's resident memory next to the copy."""
        path, begin, end = self.data_range(spec)
        tensor = torch.empty(self.shape(spec.name), dtype=SAFETENSORS_DTYPES[self.dtype_name(spec.name)])
        where = f"{path}: tensor {spec.name!r}"
        with open(path, "rb", buffering=0) as handle:
            read_exactly(handle, begin, raw_bytes(tensor), where)
        non_finite = spec.non_finite(tensor.dtype)
        if non_finite is not None:
            non_finite.refuse(raw_bytes(tensor), where)
        return tensor

    def close(self) -> None:
        self._handles.clear()


def read_exactly(handle: BinaryIO, offset: int, out: memoryview, where: str) -> None:
    """Fill `out` from `handle` at `offset` (a single read returns at most about 2 GiB on Linux)."""
    handle.seek(offset)
    done = 0
    while done < len(out):
        count = handle.readinto(out[done:])
        if not count:
            raise CheckpointError(f"{where} cannot be read (the file ended after {done} of {len(out)} bytes)")
        done += count


def expert_specs(config: GptOssConfig, layer: int) -> dict[str, TensorSpec]:
    """Checkpoint tensors of one layer's experts, keyed by role, in the checkpoint's own layout."""
    c = config
    prefix = f"model.layers.{layer}.mlp.experts."
    e, h, i = c.num_local_experts, c.hidden_size, c.intermediate_size
    specs = {
        "gate_up_bias": TensorSpec(prefix + "gate_up_proj_bias", (e, 2 * i)),
        "down_bias": TensorSpec(prefix + "down_proj_bias", (e, h)),
    }
    if c.is_mxfp4:
        specs |= {
            "gate_up_weight": TensorSpec(
                prefix + "gate_up_proj_blocks", (e, 2 * i, h // MXFP4_BLOCK, MXFP4_BLOCK_BYTES), PACKED_DTYPES
            ),
            "gate_up_scales": TensorSpec(
                prefix + "gate_up_proj_scales", (e, 2 * i, h // MXFP4_BLOCK), PACKED_DTYPES, scales=True
            ),
            "down_weight": TensorSpec(
                prefix + "down_proj_blocks", (e, h, i // MXFP4_BLOCK, MXFP4_BLOCK_BYTES), PACKED_DTYPES
            ),
            "down_scales": TensorSpec(
                prefix + "down_proj_scales", (e, h, i // MXFP4_BLOCK), PACKED_DTYPES, scales=True
            ),
        }
    else:
        specs |= {
            "gate_up_weight": TensorSpec(prefix + "gate_up_proj", (e, h, 2 * i)),
            "down_weight": TensorSpec(prefix + "down_proj", (e, i, h)),
        }
    return specs


def layer_specs(config: GptOssConfig, layer: int) -> dict[str, TensorSpec]:
    """Checkpoint tensors of one decoder layer except its experts, keyed by their name in our model."""
    c = config
    prefix = f"model.layers.{layer}."
    q_out, kv_out = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    shapes = {
        "input_layernorm.weight": (c.hidden_size,),
        "post_attention_layernorm.weight": (c.hidden_size,),
        "self_attn.q_proj.weight": (q_out, c.hidden_size),
        "self_attn.k_proj.weight": (kv_out, c.hidden_size),
        "self_attn.v_proj.weight": (kv_out, c.hidden_size),
        "self_attn.o_proj.weight": (c.hidden_size, q_out),
        "self_attn.sinks": (c.num_attention_heads,),
        "mlp.router.weight": (c.num_local_experts, c.hidden_size),
        "mlp.router.bias": (c.num_local_experts,),
    }
    if c.attention_bias:
        shapes |= {
            "self_attn.q_proj.bias": (q_out,),
            "self_attn.k_proj.bias": (kv_out,),
            "self_attn.v_proj.bias": (kv_out,),
            "self_attn.o_proj.bias": (c.hidden_size,),
        }
    return {name: TensorSpec(prefix + name, shape) for name, shape in shapes.items()}


def head_specs(config: GptOssConfig, head: str) -> dict[str, TensorSpec]:
    """Checkpoint tensors outside the decoder layers for `head` (the bare model reads the decoder's alone, so it loads
    from any GPT-OSS checkpoint)."""
    c = config
    specs = {
        "model.embed_tokens.weight": TensorSpec("model.embed_tokens.weight", (c.vocab_size, c.hidden_size)),
        "model.norm.weight": TensorSpec("model.norm.weight", (c.hidden_size,)),
    }
    if head == "causal-lm":
        specs["lm_head.weight"] = TensorSpec("lm_head.weight", (c.vocab_size, c.hidden_size))
    elif head != BARE_MODEL:
        specs["score.weight"] = TensorSpec("score.weight", (c.num_labels, c.hidden_size))
        if head == "token-classification":
            specs["score.bias"] = TensorSpec("score.bias", (c.num_labels,))
    return specs


def all_specs(config: GptOssConfig, head: str) -> list[TensorSpec]:
    """Every checkpoint tensor the model with `head` needs."""
    specs = list(head_specs(config, head).values())
    for layer in range(config.num_hidden_layers):
        specs += layer_specs(config, layer).values()
        specs += expert_specs(config, layer).values()
    return specs
