"""Typed, validated GPT-OSS configuration read from a Hugging Face `config.json`; imports no torch (the runtime
reads engine manifests with it)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from gptoss.runtime.errors import ConfigError
from gptoss.runtime.files import read_json

SLIDING = "sliding_attention"
FULL = "full_attention"
# Hugging Face's `problem_type` of a sequence classifier: which loss its labels get (None: inferred from them).
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RopeConfig:
    """YaRN rotary-embedding parameters (HF `rope_parameters` / older `rope_scaling`)."""

    theta: float = 150000.0
    rope_type: str = "yarn"
    factor: float = 32.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    original_max_position_embeddings: int = 4096
    truncate: bool = False
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None


@dataclass(frozen=True)
class QuantizationConfig:
    """How the checkpoint stores its expert weights."""

    method: str = "none"  # "mxfp4" or "none"
    modules_to_not_convert: tuple[str, ...] = ()


@dataclass(frozen=True)
class GptOssConfig:
    """Every model dimension the exporter, plugins and runtime need."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_local_experts: int
    num_experts_per_tok: int
    sliding_window: int
    layer_types: tuple[str, ...]
    max_position_embeddings: int
    rms_norm_eps: float = 1e-5
    rope: RopeConfig = field(default_factory=RopeConfig)
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    attention_bias: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    id2label: dict[int, str] = field(default_factory=dict)
    problem_type: str | None = None  # one of PROBLEM_TYPES
    router_aux_loss_coef: float = 0.001  # weight of the load-balancing loss in the causal-LM loss (HF's default)
    output_router_logits: bool = False  # forward's default for `output_router_logits`

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def is_mxfp4(self) -> bool:
        return self.quantization.method == "mxfp4"

    def window_of(self, layer: int) -> int:
        """Sliding window of `layer`, 0 for full attention."""
        return self.sliding_window if self.layer_types[layer] == SLIDING else 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> GptOssConfig:
        """Inverse of `to_dict` (used by engine manifests); `source` names the origin in errors."""
        data = dict(data)
        data["rope"] = RopeConfig(**data["rope"])
        quant = data["quantization"]
        data["quantization"] = QuantizationConfig(quant["method"], tuple(quant["modules_to_not_convert"]))
        data["layer_types"] = tuple(data["layer_types"])
        data["eos_token_ids"] = tuple(data["eos_token_ids"])
        data["id2label"] = {int(k): v for k, v in data["id2label"].items()}
        config = cls(**data)
        validate(config, source)
        return config


def load_config(model_dir: str | Path) -> GptOssConfig:
    """Read and validate `config.json` in `model_dir`."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (expected a Hugging Face GPT-OSS config.json)")
    raw = read_json(path, ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, Any], source: str = "config.json") -> GptOssConfig:
    """Turn a Hugging Face GPT-OSS config dict into a validated `GptOssConfig`."""
    reader = _Reader(raw, source)
    if raw.get("model_type", "gpt_oss") != "gpt_oss":
        raise ConfigError(f"{source}: model_type is {raw['model_type']!r}, expected 'gpt_oss'")
    num_layers = reader.positive_int("num_hidden_layers", 36)
    num_heads = reader.positive_int("num_attention_heads", 64)
    hidden = reader.positive_int("hidden_size", 2880)
    # Absent keys take Hugging Face's class defaults; an explicit null derives the value as HF does.
    head_dim = hidden // num_heads if _is_null(raw, "head_dim") else reader.positive_int("head_dim", 64)
    num_kv_heads = num_heads if _is_null(raw, "num_key_value_heads") else reader.positive_int("num_key_value_heads", 8)
    layer_types = reader.strings("layer_types")
    if layer_types is None:
        layer_types = default_layer_types(num_layers)
    sliding_window = raw.get("sliding_window", 128)  # absent: HF's default; null: no sliding layers
    config = GptOssConfig(
        vocab_size=reader.positive_int("vocab_size", 201088),
        hidden_size=hidden,
        intermediate_size=reader.positive_int("intermediate_size", 2880),
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        num_local_experts=reader.positive_int(
            "num_local_experts", raw.get("num_experts", 128), aliases=("num_experts",)
        ),
        num_experts_per_tok=_experts_per_token(raw, reader),
        sliding_window=0 if sliding_window is None else reader.positive_int("sliding_window", 128),
        layer_types=tuple(layer_types),
        max_position_embeddings=reader.positive_int("max_position_embeddings", 131072),
        rms_norm_eps=reader.positive_float("rms_norm_eps", 1e-5),
        rope=_parse_rope(raw, reader),
        swiglu_alpha=reader.positive_float("swiglu_alpha", 1.702),
        swiglu_limit=reader.positive_float("swiglu_limit", 7.0),
        attention_bias=bool(raw.get("attention_bias", True)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        pad_token_id=reader.optional_token("pad_token_id"),
        bos_token_id=reader.optional_token("bos_token_id"),
        eos_token_ids=reader.token_list("eos_token_id"),
        quantization=_parse_quantization(raw, source),
        id2label=_parse_labels(raw, source),
        problem_type=raw.get("problem_type"),
        router_aux_loss_coef=reader.finite("router_aux_loss_coef", 0.001),
        output_router_logits=bool(raw.get("output_router_logits", False)),
    )
    validate(config, source)
    return config


def default_layer_types(num_layers: int) -> list[str]:
    """Hugging Face's layer pattern when `layer_types` is absent: even layers slide, odd layers attend fully."""
    return [SLIDING if i % 2 == 0 else FULL for i in range(num_layers)]


def _experts_per_token(raw: dict[str, Any], reader: _Reader) -> int:
    """Top-k of the router. Hub configs also carry `experts_per_token`, a leftover of OpenAI's original config that
    transformers ignores; `num_experts_per_tok` wins here too, so the export runs the model transformers runs, and a
    disagreement is logged rather than silently dropped."""
    top_k = reader.positive_int("num_experts_per_tok", 4)
    leftover = raw.get("experts_per_token")
    if leftover is not None and leftover != top_k:
        log.warning(
            "%s: experts_per_token=%r is ignored, as transformers ignores it; num_experts_per_tok=%d is used",
            reader.source, leftover, top_k,
        )  # fmt: skip
    return top_k


def validate(config: GptOssConfig, source: str = "config") -> None:
    """Reject configurations that cannot describe a GPT-OSS model."""
    c = config

    def fail(message: str) -> None:
        raise ConfigError(f"{source}: {message}")

    for message in _type_errors(c):
        fail(message)
    for name in _POSITIVE:
        if getattr(c, name) <= 0:
            fail(f"{name} must be positive, got {getattr(c, name)}")
    if c.sliding_window < 0:
        fail(f"sliding_window must not be negative, got {c.sliding_window}")
    if c.num_attention_heads % c.num_key_value_heads:
        fail(
            f"num_attention_heads ({c.num_attention_heads}) must be a multiple of "
            f"num_key_value_heads ({c.num_key_value_heads})"
        )
    if c.head_dim % 2:
        fail(f"head_dim must be even for rotary embeddings, got {c.head_dim}")
    if c.num_experts_per_tok > c.num_local_experts:
        fail(f"num_experts_per_tok ({c.num_experts_per_tok}) exceeds num_local_experts ({c.num_local_experts})")
    if len(c.layer_types) != c.num_hidden_layers:
        fail(f"layer_types has {len(c.layer_types)} entries, expected num_hidden_layers={c.num_hidden_layers}")
    unknown = sorted({t for t in c.layer_types if t not in (SLIDING, FULL)})
    if unknown:
        fail(f"layer_types contains {unknown}, expected only {SLIDING!r} or {FULL!r}")
    if SLIDING in c.layer_types and c.sliding_window <= 0:
        fail("sliding_window must be a positive integer when a layer is 'sliding_attention'")
    if c.tie_word_embeddings:
        fail("tie_word_embeddings=true is not a GPT-OSS layout (the LM head is a separate matrix)")
    if c.is_mxfp4 and (c.hidden_size % 32 or c.intermediate_size % 32):
        fail(
            f"MXFP4 experts need hidden_size and intermediate_size divisible by 32, "
            f"got {c.hidden_size} and {c.intermediate_size}"
        )
    for name in ("pad_token_id", "bos_token_id"):
        token = getattr(c, name)
        if token is not None and not 0 <= token < c.vocab_size:
            fail(f"{name}={token} is outside the vocabulary (size {c.vocab_size})")
    for token in c.eos_token_ids:
        if not 0 <= token < c.vocab_size:
            fail(f"eos_token_id {token} is outside the vocabulary (size {c.vocab_size})")
    if c.problem_type is not None and c.problem_type not in PROBLEM_TYPES:
        fail(f"problem_type {c.problem_type!r} is not supported, expected one of {', '.join(PROBLEM_TYPES)} or null")
    rope = c.rope
    if rope.rope_type not in ("yarn", "default"):
        fail(f"rope type {rope.rope_type!r} is not supported, expected 'yarn' or 'default'")
    if rope.theta <= 1 or rope.factor <= 0:
        fail(f"rope_theta must exceed 1 and the rope factor be positive, got {rope.theta} and {rope.factor}")
    if rope.beta_fast <= 0 or rope.beta_slow <= 0 or rope.original_max_position_embeddings <= 0:
        fail("rope beta_fast, beta_slow and original_max_position_embeddings must be positive")


INT32_MAX = 2**31 - 1  # dimensions and token ids are int32 in the graph and the plugins
FLOAT32_MAX = 3.4028234663852886e38  # config floats become float32 attributes and constants


def is_int32(value: Any) -> bool:
    """An integer that fits int32 (booleans excluded): what a dimension, length or token id may be."""
    return type(value) is int and -INT32_MAX - 1 <= value <= INT32_MAX


def _is_number(value: Any) -> bool:
    """A number that is finite in float32 (booleans, NaN and infinities excluded)."""
    return type(value) in (int, float) and abs(value) <= FLOAT32_MAX


# What a value of each annotation of the config dataclasses must be (`from_dict` takes manifests' JSON as it is).
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (is_int32, "an int32 integer"),
    "float": (_is_number, "a finite float32 number"),
    "bool": (lambda v: type(v) is bool, "true or false"),
    "str": (lambda v: type(v) is str, "a string"),
    "int | None": (lambda v: v is None or is_int32(v), "an int32 integer or null"),
    "str | None": (lambda v: v is None or type(v) is str, "a string or null"),
    "float | None": (lambda v: v is None or _is_number(v), "a finite float32 number or null"),
    "tuple[int, ...]": (lambda v: all(map(is_int32, v)), "a list of int32 integers"),
    "tuple[str, ...]": (lambda v: all(type(x) is str for x in v), "a list of strings"),
    "dict[int, str]": (lambda v: all(is_int32(k) and type(x) is str for k, x in v.items()), "ids mapped to names"),
}
_POSITIVE = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok", "max_position_embeddings",
             "rms_norm_eps", "swiglu_alpha", "swiglu_limit")  # fmt: skip


def _type_errors(config: Any, prefix: str = "") -> Iterator[str]:
    """`key must be ..., got ...` for each field of a config dataclass whose value its annotation does not allow."""
    for item in fields(config):
        value = getattr(config, item.name)
        if is_dataclass(value):
            yield from _type_errors(value, f"{prefix}{item.name}.")
        elif not _TYPES[item.type][0](value):
            yield f"{prefix}{item.name} must be {_TYPES[item.type][1]}, got {value!r}"


class _Reader:
    """Typed field access that names the offending field (after `prefix`, for a nested object) on error."""

    def __init__(self, raw: dict[str, Any], source: str, prefix: str = "") -> None:
        self.raw = raw
        self.source = source
        self.prefix = prefix

    def _error(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.source}: {self.prefix}{key} must be {expected}, got {value!r}")

    def _get(self, key: str, default: Any, aliases: tuple[str, ...] = ()) -> Any:
        for name in (key, *aliases):
            if self.raw.get(name) is not None:
                return self.raw[name]
        return default

    def positive_int(self, key: str, default: int, aliases: tuple[str, ...] = ()) -> int:
        value = self._get(key, default, aliases)
        if not is_int32(value) or value <= 0:
            raise self._error(key, "a positive integer (int32)", value)
        return value

    def positive_float(self, key: str, default: float) -> float:
        value = self._get(key, default)
        if not _is_number(value) or value <= 0:
            raise self._error(key, "a positive number (finite in float32)", value)
        return float(value)

    def finite(self, key: str, default: float | None) -> float | None:
        """The number at `key` (`default` when absent or null), which must be finite."""
        value = self._get(key, default)
        if value is not None and not _is_number(value):
            raise self._error(key, "a finite float32 number", value)
        return None if value is None else float(value)

    def strings(self, key: str) -> list[str] | None:
        """The list of strings at `key`, None when absent or null."""
        value = self.raw.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise self._error(key, "a list of strings", value)
        return value

    def optional_token(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not is_int32(value) or value < 0:
            raise self._error(key, "a non-negative integer (int32)", value)
        return value

    def token_list(self, key: str) -> tuple[int, ...]:
        value = self.raw.get(key)
        if value is None:
            return ()
        values = value if isinstance(value, list) else [value]
        if not all(is_int32(v) and v >= 0 for v in values):
            raise self._error(key, "a token id or a list of token ids", value)
        return tuple(values)


def _parse_rope(raw: dict[str, Any], reader: _Reader) -> RopeConfig:
    section = "rope_parameters" if raw.get("rope_parameters") else "rope_scaling"
    params = raw.get(section) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{reader.source}: {section} must be an object, got {params!r}")
    rope = _Reader(params, reader.source, prefix=f"{section}.")
    rope_type = params.get("rope_type", params.get("type", "yarn" if params else "default"))
    defaults = RopeConfig()
    original = rope.finite("original_max_position_embeddings", reader.positive_int("max_position_embeddings", 131072))
    return RopeConfig(
        theta=rope.finite("rope_theta", reader.finite("rope_theta", 150000.0)),
        rope_type=str(rope_type),
        factor=rope.finite("factor", defaults.factor if rope_type == "yarn" else 1.0),
        beta_fast=rope.finite("beta_fast", None) or defaults.beta_fast,
        beta_slow=rope.finite("beta_slow", None) or defaults.beta_slow,
        original_max_position_embeddings=int(original),
        # Hugging Face's generic YaRN truncates the correction range unless told not to.
        truncate=bool(params.get("truncate", True)),
        attention_factor=rope.finite("attention_factor", None),
        mscale=rope.finite("mscale", None),
        mscale_all_dim=rope.finite("mscale_all_dim", None),
    )


def _is_null(raw: dict[str, Any], key: str) -> bool:
    return key in raw and raw[key] is None


def _parse_quantization(raw: dict[str, Any], source: str) -> QuantizationConfig:
    quant = raw.get("quantization_config")
    if not quant:
        return QuantizationConfig()
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    if method != "mxfp4":
        raise ConfigError(f"{source}: quantization_config.quant_method is {method!r}, only 'mxfp4' is supported")
    modules = _Reader(quant, source, prefix="quantization_config.").strings("modules_to_not_convert") or ()
    return QuantizationConfig("mxfp4", tuple(modules))


def _parse_labels(raw: dict[str, Any], source: str) -> dict[int, str]:
    id2label = raw.get("id2label")
    if id2label:
        try:
            return {int(k): str(v) for k, v in id2label.items()}
        except (AttributeError, ValueError):
            raise ConfigError(f"{source}: id2label must map integer ids to names") from None
    num_labels = raw.get("num_labels")
    if num_labels is None:
        return {}
    if not is_int32(num_labels) or num_labels <= 0:
        raise ConfigError(f"{source}: num_labels must be a positive integer, got {num_labels!r}")
    return {i: f"LABEL_{i}" for i in range(num_labels)}
