"""A tracing-friendly GPT-OSS in PyTorch: no Python control flow depends on tensor values.

Every forward runs through the KV-cache contract (docs/graph-contract.md): `step(input_ids, past_len, new_len,
kv_caches)` processes `S` new tokens per row (rows right-padded, `new_len` valid) after `past_len`
cached ones. The Hugging Face-like `forward(input_ids, attention_mask)` is a step from an empty cache.
Parameters are allocated uninitialised: every value comes from a checkpoint (see `loading.py`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gptoss.runtime import contract

from . import ops, rope
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


class MoE(nn.Module):
    """Router (linear + bias, top-k, softmax over the k selected logits) in plain ops, then the experts."""

    def __init__(self, config: GptOssConfig, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.router = Linear(config.hidden_size, config.num_local_experts, True, dtype, device)
        self.experts = Experts(config, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        top_logits, expert_ids = torch.topk(self.router(tokens), self.top_k, dim=-1)
        expert_weights = torch.softmax(top_logits, dim=-1)
        return self.experts(tokens, expert_ids.to(torch.int32), expert_weights).view_as(x)


class DecoderLayer(nn.Module):
    def __init__(self, config: GptOssConfig, layer: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)
        self.self_attn = Attention(config, layer, dtype, device)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)
        self.mlp = MoE(config, dtype, device)

    def forward(self, h, cos, sin, kv_cache, past_len, new_len) -> tuple[torch.Tensor, torch.Tensor]:
        attn, kv_cache = self.self_attn(self.input_layernorm(h), cos, sin, kv_cache, past_len, new_len)
        h = h + attn
        return h + self.mlp(self.post_attention_layernorm(h)), kv_cache


class GptOssModel(nn.Module):
    """Embedding, decoder layers and final norm; returns normed hidden states and updated caches."""

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

    def forward(self, input_ids, past_len, new_len, kv_caches) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.embed_tokens(input_ids)
        steps = torch.arange(input_ids.shape[1], device=input_ids.device)
        positions = past_len.to(torch.int64).unsqueeze(-1) + steps
        cos, sin = rope.cos_sin(positions, self.inv_freq, self.rope_scale, h.dtype)
        new_caches = []
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            h, kv_cache = layer(h, cos, sin, kv_cache, past_len, new_len)
            new_caches.append(kv_cache)
        return self.norm(h), new_caches

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


class GptOssWithHead(nn.Module):
    """Decoder plus an output head; subclasses name the head and implement `project`."""

    head: str

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

    def hidden_states(self, input_ids, past_len, new_len, kv_caches) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run `S` new tokens per row through the decoder; returns normed hidden states and new caches."""
        return self.model(input_ids, past_len, new_len, kv_caches)

    def step(self, input_ids, past_len, new_len, kv_caches) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run `S` new tokens per row through the cache; returns per-position outputs and new caches."""
        hidden, kv_caches = self.hidden_states(input_ids, past_len, new_len, kv_caches)
        return self.project(hidden), kv_caches

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position outputs with no cache, like Hugging Face (right-padded `attention_mask`)."""
        new_len = lengths_from_mask(input_ids, attention_mask)
        past_len = torch.zeros_like(new_len)
        caches = self.allocate_kv_caches(input_ids.shape[0], input_ids.shape[1])
        return self.step(input_ids, past_len, new_len, caches)[0]


class GptOssForCausalLM(GptOssWithHead):
    """Decoder plus untied LM head."""

    head = "causal-lm"

    def __init__(self, config: GptOssConfig, dtype: torch.dtype = torch.float32, device="cpu") -> None:
        super().__init__(config, dtype, device)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, False, dtype, device)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        scores = super().forward(input_ids, attention_mask)
        if self.config.pad_token_id is None:
            last = torch.full_like(input_ids[:, 0], input_ids.shape[1] - 1)
        else:
            steps = torch.arange(input_ids.shape[1], device=input_ids.device)
            last = (steps * (input_ids != self.config.pad_token_id)).argmax(-1)
        return scores[torch.arange(input_ids.shape[0]), last]


class GptOssForTokenClassification(GptOssWithHead):
    """Class scores for every token (the classifier's dropout is inactive at inference)."""

    head = "token-classification"

    def __init__(self, config: GptOssConfig, dtype: torch.dtype = torch.float32, device="cpu") -> None:
        super().__init__(config, dtype, device)
        self.score = Linear(config.hidden_size, config.num_labels, True, dtype, device)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.score(hidden)


STEP_GRAPH_PREFIX = "model."  # StepGraph holds the model as `.model`: the prefix of its parameter names


class StepGraph(nn.Module):
    """One cache step with outputs reduced as the graph contract says: the head at each row's last valid token,
    or at every position for all-positions and token-classification models. This is what the ONNX export traces
    and what the PyTorch runtime backend runs."""

    def __init__(self, model: GptOssWithHead, all_positions: bool) -> None:
        super().__init__()
        self.model = model
        self.per_token = contract.outputs_every_position(model.head, all_positions)

    def allocate_kv_caches(self, batch: int, max_seq_len: int) -> list[torch.Tensor]:
        return self.model.allocate_kv_caches(batch, max_seq_len)

    def forward(self, input_ids, past_len, new_len, kv_caches):
        hidden, kv_caches = self.model.hidden_states(input_ids, past_len, new_len, kv_caches)
        if not self.per_token:
            last = (new_len.to(torch.int64) - 1).clamp(min=0)
            index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
            hidden = hidden.gather(1, index).squeeze(1)
        return self.model.project(hidden), *kv_caches


MODEL_CLASSES = {
    cls.head: cls for cls in (GptOssForCausalLM, GptOssForSequenceClassification, GptOssForTokenClassification)
}
