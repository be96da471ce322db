"""A tracing-friendly GPT-OSS in PyTorch: no Python control flow depends on tensor values.

Every forward runs through the KV-cache contract (docs/graph-contract.md): `step(input_ids, past_len, new_len,
kv_caches)` processes `S` new tokens per row (rows right-padded, `new_len` valid) after `past_len`
cached ones. The Hugging Face-like `forward(input_ids, attention_mask, ...)` is a step from an empty cache, with
Hugging Face's losses, hidden states and router logits on request.
Parameters are allocated uninitialised: every value comes from a checkpoint (see `loading.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from gptoss.runtime import contract

from . import losses, ops, rope
from .config import GptOssConfig


def _empty(*shape: int, dtype: torch.dtype, device: torch.device | str) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype, device=device), requires_grad=False)


class Linear(nn.Module):
    """`y = x W^T + b` with uninitialised parameters. `matmul` computes it: a backend may set its own on an
    instance (runtime/backends/cpu.py); the export traces the default."""

    matmul = staticmethod(F.linear)

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.weight = _empty(out_features, in_features, dtype=dtype, device=device)
        self.bias = _empty(out_features, dtype=dtype, device=device) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x, self.weight, self.bias)


class Embedding(nn.Module):
    """Token-id lookup with an uninitialised table."""

    def __init__(self, num_embeddings: int, size: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.weight = _empty(num_embeddings, size, dtype=dtype, device=device)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 with a float32 weight, cast back to the input dtype."""

    def __init__(self, size: int, eps: float, device) -> None:
        super().__init__()
        self.weight = _empty(size, dtype=torch.float32, device=device)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * h).to(x.dtype)


class Attention(nn.Module):
    """Projections, RoPE and the `gptoss::sink_attention` op (`sink_attention`: a backend may set its own
    implementation on an instance)."""

    sink_attention = ops.sink_attention

    def __init__(self, config: GptOssConfig, layer: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        )
        self.sliding_window = c.window_of(layer)
        q_out, kv_out = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        self.q_proj = Linear(c.hidden_size, q_out, c.attention_bias, dtype, device)
        self.k_proj = Linear(c.hidden_size, kv_out, c.attention_bias, dtype, device)
        self.v_proj = Linear(c.hidden_size, kv_out, c.attention_bias, dtype, device)
        self.o_proj = Linear(q_out, c.hidden_size, c.attention_bias, dtype, device)
        self.sinks = _empty(c.num_attention_heads, dtype=torch.float32, device=device)

    def forward(self, x, cos, sin, kv_cache, past_len, new_len) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq_len, _ = x.shape
        q = self.q_proj(x).view(batch, seq_len, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(batch, seq_len, self.num_kv_heads, self.head_dim)
        q = rope.apply_rotary(q, cos, sin).flatten(2)
        k = rope.apply_rotary(k, cos, sin).flatten(2)
        out, kv_cache = self.sink_attention(
            q, k, self.v_proj(x), self.sinks, kv_cache, past_len, new_len,
            self.num_heads, self.num_kv_heads, self.head_dim, self.sliding_window, self.head_dim**-0.5,
        )  # fmt: skip
        return self.o_proj(out), kv_cache


class Experts(nn.Module):
    """Expert weights in `[out, in]` orientation: dense floats, or packed MXFP4 bytes plus scales; `moe` runs the
    `gptoss::moe` op (a backend may set its own implementation on an instance)."""

    moe = ops.moe

    def __init__(self, config: GptOssConfig, dtype: torch.dtype, device) -> None:
        super().__init__()
        c = config
        e, h, i = c.num_local_experts, c.hidden_size, c.intermediate_size
        self.alpha, self.limit = c.swiglu_alpha, c.swiglu_limit
        if c.is_mxfp4:
            packed = dict(dtype=torch.uint8, device=device)
            self.gate_up_weight = _empty(e, 2 * i, h // 32, 16, **packed)
            self.gate_up_scales = _empty(e, 2 * i, h // 32, **packed)
            self.down_weight = _empty(e, h, i // 32, 16, **packed)
            self.down_scales = _empty(e, h, i // 32, **packed)
        else:
            self.gate_up_weight = _empty(e, 2 * i, h, dtype=dtype, device=device)
            self.down_weight = _empty(e, h, i, dtype=dtype, device=device)
            self.gate_up_scales = self.down_scales = None
        self.gate_up_bias = _empty(e, 2 * i, dtype=torch.float32, device=device)
        self.down_bias = _empty(e, h, dtype=torch.float32, device=device)

    def forward(self, x: torch.Tensor, expert_ids: torch.Tensor, expert_weights: torch.Tensor) -> torch.Tensor:
        return self.moe(
            x, expert_ids, expert_weights,
            self.gate_up_weight, self.gate_up_scales, self.gate_up_bias,
            self.down_weight, self.down_scales, self.down_bias,
            self.alpha, self.limit,
        )  # fmt: skip


class Routing(NamedTuple):
    """How one MoE layer routed its `T = B·S` tokens."""

    logits: torch.Tensor  # [T, E]: the router's logits over every expert
    expert_ids: torch.Tensor  # [T, k] int32: the experts chosen, best first


class MoE(nn.Module):
    """Router (linear + bias, top-k, softmax over the k selected logits) in plain ops, then the experts."""

    def __init__(self, config: GptOssConfig, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.router = Linear(config.hidden_size, config.num_local_experts, True, dtype, device)
        self.experts = Experts(config, dtype, device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        tokens = x.reshape(-1, x.shape[-1])
        logits = self.router(tokens)
        top_logits, expert_ids = torch.topk(logits, self.top_k, dim=-1)
        expert_weights = torch.softmax(top_logits, dim=-1)
        expert_ids = expert_ids.to(torch.int32)
        return self.experts(tokens, expert_ids, expert_weights).view_as(x), Routing(logits, expert_ids)


class DecoderLayer(nn.Module):
    def __init__(self, config: GptOssConfig, layer: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)
        self.self_attn = Attention(config, layer, dtype, device)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)
        self.mlp = MoE(config, dtype, device)

    def forward(self, h, cos, sin, kv_cache, past_len, new_len) -> tuple[torch.Tensor, torch.Tensor, Routing]:
        attn, kv_cache = self.self_attn(self.input_layernorm(h), cos, sin, kv_cache, past_len, new_len)
        h = h + attn
        moe, routing = self.mlp(self.post_attention_layernorm(h))
        return h + moe, kv_cache, routing


class DecoderOutput(NamedTuple):
    """One cache step of the decoder."""

    last_hidden_state: torch.Tensor  # [B,S,H], after the final norm
    kv_caches: list[torch.Tensor]
    layer_states: list[torch.Tensor]  # with `collect`: the embeddings, then each layer's output (L + 1)
    routings: list[Routing]  # with `collect`: each layer's routing


class GptOssModel(nn.Module):
    """Embedding, decoder layers and final norm: one cache step (`DecoderOutput`)."""

    def __init__(self, config: GptOssConfig, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype, device)
        self.layers = nn.ModuleList(DecoderLayer(config, i, dtype, device) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)
        self.rope_scale = rope.yarn_inv_freq(config.rope, config.head_dim)[1]
        for name, value in self.computed_buffers(config).items():
            self.register_buffer(name, value.to(device), persistent=False)

    @staticmethod
    def computed_buffers(config: GptOssConfig) -> dict[str, torch.Tensor]:
        """Buffers computed from the config rather than read from a checkpoint, on the CPU."""
        return {"inv_freq": rope.yarn_inv_freq(config.rope, config.head_dim)[0]}

    def forward(
        self, input_ids, past_len, new_len, kv_caches, position_ids: torch.Tensor | None = None, collect: bool = False
    ) -> DecoderOutput:
        """`S` new tokens per row after `past_len` cached ones. RoPE takes `position_ids` `[B|1, S]` when given (as
        Hugging Face does), else each token's place in its row. `collect` keeps every layer's output and routing."""
        h = self.embed_tokens(input_ids)
        if position_ids is None:
            steps = torch.arange(input_ids.shape[1], device=input_ids.device)
            position_ids = past_len.to(torch.int64).unsqueeze(-1) + steps
        cos, sin = rope.cos_sin(position_ids, self.inv_freq, self.rope_scale, h.dtype)
        new_caches, states, routings = [], [h] if collect else [], []
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            h, kv_cache, routing = layer(h, cos, sin, kv_cache, past_len, new_len)
            new_caches.append(kv_cache)
            if collect:
                states.append(h)
                routings.append(routing)
        return DecoderOutput(self.norm(h), new_caches, states, routings)

    def allocate_kv_caches(self, batch: int, max_seq_len: int) -> list[torch.Tensor]:
        """Zeroed caches `[B,2,Hkv,C,D]`: C = max_seq_len for full layers, the window for sliding ones."""
        c = self.config
        like = self.embed_tokens.weight
        return [
            like.new_zeros(batch, 2, c.num_key_value_heads, c.window_of(i) or max_seq_len, c.head_dim)
            for i in range(c.num_hidden_layers)
        ]


def lengths_from_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Valid tokens per row of a right-padded batch, `[B]` int32."""
    batch, seq_len = input_ids.shape
    if attention_mask is None:
        return torch.full((batch,), seq_len, dtype=torch.int32, device=input_ids.device)
    lengths = attention_mask.to(torch.int32).sum(-1)
    steps = torch.arange(seq_len, device=input_ids.device)
    if not torch.equal(attention_mask.bool(), steps < lengths.unsqueeze(-1)):
        raise ValueError("attention_mask must be right-padded: each row all ones, then all zeros")
    return lengths


@dataclass
class ModelOutput:
    """What `forward` returns when asked for more than the head's output; fields as Hugging Face names them."""

    logits: torch.Tensor | None = None  # the head's output (the bare model's is `last_hidden_state`)
    last_hidden_state: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None  # causal LM with router logits: the load-balancing loss
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, each later layer's input, the normed last
    router_logits: tuple[torch.Tensor, ...] | None = None  # per layer, `[B·S, E]`


def keep_positions(hidden: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """Hugging Face's `logits_to_keep`: an int keeps the last n positions (0: all), a 1-D tensor those positions,
    a 2-D integer tensor those positions per row, a 2-D boolean mask its positions (flattened to `[n, H]`)."""
    if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.ndim == 2:
        if logits_to_keep.dtype == torch.bool:
            return hidden[logits_to_keep]
        return torch.take_along_dim(hidden, logits_to_keep[..., None], dim=1)
    if isinstance(logits_to_keep, int):
        logits_to_keep = slice(-logits_to_keep, None)
    return hidden[:, logits_to_keep, :]


class GptOssWithHead(nn.Module):
    """Decoder plus an output head; subclasses name the head and implement `project` (and `loss` if it has one)."""

    head: str
    output_field = "logits"  # the `ModelOutput` field of the head's output

    def __init__(self, config: GptOssConfig, dtype: torch.dtype = torch.float32, device="cpu") -> None:
        super().__init__()
        self.config = config
        self.model = GptOssModel(config, dtype, device)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the output head to hidden states."""
        raise NotImplementedError

    def allocate_kv_caches(self, batch: int, max_seq_len: int) -> list[torch.Tensor]:
        """Zeroed caches for `batch` rows (see `GptOssModel.allocate_kv_caches`)."""
        return self.model.allocate_kv_caches(batch, max_seq_len)

    def computed_buffers(self) -> dict[str, torch.Tensor]:
        """The decoder's computed buffers by their name in this module."""
        return {f"model.{name}": value for name, value in GptOssModel.computed_buffers(self.config).items()}

    def step(self, input_ids, past_len, new_len, kv_caches) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run `S` new tokens per row through the cache; returns per-position outputs and new caches."""
        decoded = self.model(input_ids, past_len, new_len, kv_caches)
        return self.project(decoded.last_hidden_state), decoded.kv_caches

    def head_output(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """`forward`'s output from the last hidden states: the head at every position."""
        return self.project(hidden)

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The head's loss against `labels`, as Hugging Face computes it."""
        raise ValueError(f"labels: the {self.head} model has no loss")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_router_logits: bool | None = None,
        return_dict: bool = False,
        **head_options: Any,
    ) -> torch.Tensor | ModelOutput:
        """Per-position outputs with no cache, like Hugging Face (right-padded `attention_mask`).

        Returns the head's output, or a `ModelOutput` when `return_dict`, `labels`, `output_hidden_states` or
        `output_router_logits` (default: the config's) ask for more: the loss as Hugging Face computes it for this
        head, the hidden states (the embeddings, each later layer's input, the last normed) and each layer's
        router logits. `position_ids` `[B|1, S]` replace the positions RoPE sees, as in Hugging Face."""
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        details = return_dict or labels is not None or output_hidden_states or output_router_logits
        new_len = lengths_from_mask(input_ids, attention_mask)
        caches = self.allocate_kv_caches(input_ids.shape[0], input_ids.shape[1])
        collect = bool(output_hidden_states or output_router_logits)  # what reads the layers' outputs and routings
        decoded = self.model(input_ids, torch.zeros_like(new_len), new_len, caches, position_ids, collect=collect)
        output = self.head_output(decoded.last_hidden_state, input_ids, **head_options)
        if not details:
            return output
        result = ModelOutput(**{self.output_field: output})
        if labels is not None:
            result.loss = self.loss(output, labels)
        if output_hidden_states:
            result.hidden_states = (*decoded.layer_states[:-1], decoded.last_hidden_state)
        if output_router_logits:
            result.router_logits = tuple(routing.logits for routing in decoded.routings)
        return result


class GptOssForCausalLM(GptOssWithHead):
    """Decoder plus untied LM head."""

    head = "causal-lm"

    def __init__(self, config: GptOssConfig, dtype: torch.dtype = torch.float32, device="cpu") -> None:
        super().__init__(config, dtype, device)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, False, dtype, device)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def head_output(self, hidden: torch.Tensor, input_ids: torch.Tensor, logits_to_keep: int | torch.Tensor = 0):
        """Logits at the positions `logits_to_keep` selects (`keep_positions`; 0: all)."""
        return self.project(keep_positions(hidden, logits_to_keep))

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return losses.causal_lm(output, labels)

    def forward(self, input_ids, attention_mask=None, **options: Any) -> torch.Tensor | ModelOutput:
        """As `GptOssWithHead.forward`, plus `logits_to_keep`, and with router logits the load-balancing `aux_loss`,
        added to the loss times the config's `router_aux_loss_coef`, as Hugging Face does."""
        result = super().forward(input_ids, attention_mask, **options)
        if isinstance(result, ModelOutput) and result.router_logits is not None:
            top_k = self.config.num_experts_per_tok
            result.aux_loss = losses.load_balancing(result.router_logits, top_k, attention_mask)
            if result.loss is not None:
                result.loss = result.loss + self.config.router_aux_loss_coef * result.aux_loss
        return result

    @torch.no_grad()
    def generate_greedy(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuation of one unpadded batch `[B,S]` through the KV cache; returns `[B, max_new_tokens]`."""
        batch, seq_len = input_ids.shape
        caches = self.allocate_kv_caches(batch, seq_len + max_new_tokens)
        past_len = torch.zeros(batch, dtype=torch.int32)
        new_len = torch.full((batch,), seq_len, dtype=torch.int32)
        tokens, generated = input_ids, []
        for _ in range(max_new_tokens):
            logits, caches = self.step(tokens, past_len, new_len, caches)
            tokens = logits[:, -1].argmax(-1, keepdim=True)
            generated.append(tokens)
            past_len, new_len = past_len + new_len, torch.ones_like(new_len)
        return torch.cat(generated, dim=1)


class GptOssForSequenceClassification(GptOssWithHead):
    """Class scores pooled at the last token that is not padding, as Hugging Face pools them."""

    head = "sequence-classification"

    def __init__(self, config: GptOssConfig, dtype: torch.dtype = torch.float32, device="cpu") -> None:
        super().__init__(config, dtype, device)
        self.score = Linear(config.hidden_size, config.num_labels, False, dtype, device)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.score(hidden)

    def head_output(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        scores = self.project(hidden)
        if self.config.pad_token_id is None:
            last = torch.full_like(input_ids[:, 0], input_ids.shape[1] - 1)
        else:
            steps = torch.arange(input_ids.shape[1], device=input_ids.device)
            last = (steps * (input_ids != self.config.pad_token_id)).argmax(-1)
        return scores[torch.arange(input_ids.shape[0]), last]

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return losses.sequence_classification(output, labels, self.config.problem_type)


class GptOssForTokenClassification(GptOssWithHead):
    """Class scores for every token (the classifier's dropout is inactive at inference)."""

    head = "token-classification"

    def __init__(self, config: GptOssConfig, dtype: torch.dtype = torch.float32, device="cpu") -> None:
        super().__init__(config, dtype, device)
        self.score = Linear(config.hidden_size, config.num_labels, True, dtype, device)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.score(hidden)

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return losses.token_classification(output, labels)


class GptOssBareModel(GptOssWithHead):
    """The model without a head, like Hugging Face's `GptOssModel`: the last hidden state of every position, after
    the final norm (features or embeddings for other models)."""

    head = contract.BARE_MODEL
    output_field = "last_hidden_state"

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


STEP_GRAPH_PREFIX = "model."  # StepGraph holds the model as `.model`: the prefix of its parameter names


class StepGraph(nn.Module):
    """One cache step with outputs as the graph contract says: the head at each row's last valid token, or at
    every position for all-positions, token-classification and bare models; then the caches, then the accuracy
    outputs asked for (`contract.ACCURACY_OUTPUTS`: each layer's expert ids `[B,S,k]`, each layer's output
    `[B,S,H]`). This is what the ONNX export traces and what the PyTorch runtime backend runs."""

    def __init__(self, model: GptOssWithHead, all_positions: bool, accuracy_outputs: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model = model
        self.per_token = contract.outputs_every_position(model.head, all_positions)
        self.accuracy_outputs = contract.accuracy_kinds(accuracy_outputs)

    def allocate_kv_caches(self, batch: int, max_seq_len: int) -> list[torch.Tensor]:
        return self.model.allocate_kv_caches(batch, max_seq_len)

    def forward(self, input_ids, past_len, new_len, kv_caches):
        decoded = self.model.model(input_ids, past_len, new_len, kv_caches, collect=bool(self.accuracy_outputs))
        hidden = decoded.last_hidden_state
        if not self.per_token:
            last = (new_len.to(torch.int64) - 1).clamp(min=0)
            index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
            hidden = hidden.gather(1, index).squeeze(1)
        extra = []
        if contract.ROUTER in self.accuracy_outputs:
            extra += [routing.expert_ids.view(*input_ids.shape, -1) for routing in decoded.routings]
        if contract.LAYER_HIDDEN in self.accuracy_outputs:
            extra += decoded.layer_states[1:]
        return self.model.project(hidden), *decoded.kv_caches, *extra


MODEL_CLASSES = {
    cls.head: cls
    for cls in (GptOssForCausalLM, GptOssForSequenceClassification, GptOssForTokenClassification, GptOssBareModel)
}
