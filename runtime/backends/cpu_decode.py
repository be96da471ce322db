"""Decode steps of the cpu backend's bf16 models with one native call per layer up to its MoE
(`gptoss_cpu_decode_attention`: the previous MoE's residual add, norm, q/k/v, RoPE, sink attention, o_proj,
residual, norm, router), so that between the kernels of a layer the interpreter runs only the router's top-k and the
MoE call: after each kernel has streamed tens of megabytes through the caches, interpreted code runs several times
slower than usual, and the model's own code between the kernels cost about 2 ms per layer, close to what the
layer's MoE takes. Other steps
(prefill, hidden states or routing asked for, explicit position ids, float32 models) run the model as it is.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from gptoss.exporter import rope
from gptoss.exporter.model import DecoderLayer, DecoderOutput, GptOssModel
from gptoss.tools import kernels
from gptoss.tools.cpu_kernels import CpuKernels, DecodeAttentionDesc, DecodeAttentionWeights, dtype_code, pointer
from gptoss.tools.kernels import KernelError


class NativeDecode:
    """Takes over `model.forward` for the steps it runs natively; every other call goes to the model's own."""

    def __init__(self, kernels: CpuKernels, model: GptOssModel) -> None:
        self.kernels, self.lib, self.model = kernels, kernels.lib, model
        self.weights = [_layer_weights(layer) for layer in model.layers]
        self._model_forward = model.forward
        self._steps: dict[int, _Step] = {}
        model.forward = self.forward

    def forward(self, input_ids, past_len, new_len, kv_caches, position_ids=None, collect: bool = False) -> Any:
        model = self.model
        if collect or position_ids is not None or input_ids.shape[1] != 1:
            return self._model_forward(input_ids, past_len, new_len, kv_caches, position_ids, collect)
        h = model.embed_tokens(input_ids).contiguous()  # [B, 1, H], updated in place layer by layer
        positions = past_len.to(torch.int64).unsqueeze(-1)
        cos, sin = (t.contiguous() for t in rope.cos_sin(positions, model.inv_freq, model.rope_scale, h.dtype))
        past_len, new_len = past_len.contiguous(), new_len.contiguous()
        step = self._step(h.shape[0], h.dtype)
        rope_tables = [pointer(t) for t in (cos, sin)]
        rows = [pointer(t) for t in (past_len, new_len, step.normed, step.logits)]
        residual = None  # the previous layer's MoE output, added by the next call
        for layer, weights, cache, moe in zip(model.layers, self.weights, kv_caches, step.moe, strict=True):
            desc = _descriptor(layer, h.shape[0], cache.shape[3], h)
            code = self.lib.gptoss_cpu_decode_attention(
                ctypes.byref(desc), ctypes.byref(weights), pointer(h), residual, *rope_tables, pointer(cache), *rows,
                pointer(step.workspace),
            )  # fmt: skip
            if code:
                raise KernelError(f"gptoss_cpu_decode_attention failed with error {code}")
            torch.topk(step.logits, layer.mlp.top_k, dim=-1, out=(step.top_logits, step.top_ids))
            step.expert_ids.copy_(step.top_ids)
            step.expert_weights.copy_(torch.softmax(step.top_logits, dim=-1))
            moe()
            residual = pointer(step.moe_out)
        h += step.moe_out.view_as(h)
        return DecoderOutput(model.norm(h), list(kv_caches), [], [])

    def _step(self, batch: int, dtype: torch.dtype) -> _Step:
        """The buffers and prepared MoE calls of a step of `batch` rows, made on the first such step."""
        if batch not in self._steps:
            config, layers = self.model.config, self.model.layers
            top_k = config.num_experts_per_tok
            normed = torch.empty(batch, config.hidden_size, dtype=dtype)
            expert_ids = torch.empty(batch, top_k, dtype=torch.int32)
            expert_weights = torch.empty(batch, top_k, dtype=dtype)
            moe_out = torch.empty_like(normed)
            moe = [self.kernels.prepared(
                kernels.moe, normed, expert_ids, expert_weights, e.gate_up_weight, e.gate_up_scales, e.gate_up_bias,
                e.down_weight, e.down_scales, e.down_bias, e.alpha, e.limit, out=moe_out,
            ) for e in (layer.mlp.experts for layer in layers)]  # fmt: skip
            desc = _descriptor(layers[0], batch, 1, normed)  # the workspace does not depend on the layer
            workspace = torch.empty(self.lib.gptoss_cpu_decode_attention_workspace_size(ctypes.byref(desc)),
                                    dtype=torch.uint8)  # fmt: skip
            logits = torch.empty(batch, config.num_local_experts, dtype=dtype)
            top_logits, top_ids = torch.empty(batch, top_k, dtype=dtype), torch.empty(batch, top_k, dtype=torch.int64)
            self._steps[batch] = _Step(
                normed, logits, top_logits, top_ids, expert_ids, expert_weights, moe_out, moe, workspace
            )
        return self._steps[batch]


class _Step(NamedTuple):
    """What every decode step of one batch size reuses."""

    normed: torch.Tensor  # [B, H]: each layer's post-attention norm, the MoE's input
    logits: torch.Tensor  # [B, E]: the router's
    top_logits: torch.Tensor  # [B, k]
    top_ids: torch.Tensor  # [B, k] int64, as topk gives them
    expert_ids: torch.Tensor  # [B, k] int32, as the MoE takes them
    expert_weights: torch.Tensor  # [B, k]
    moe_out: torch.Tensor  # [B, H]
    moe: list[Callable[[], None]]  # per layer: the MoE kernel on the buffers above
    workspace: torch.Tensor  # gptoss_cpu_decode_attention's


def _layer_weights(layer: DecoderLayer) -> DecodeAttentionWeights:
    """Addresses of a layer's weights up to its experts (they stay where they are for the model's life)."""
    attention, router = layer.self_attn, layer.mlp.router
    tensors = [layer.input_layernorm.weight, layer.post_attention_layernorm.weight, attention.sinks]
    for linear in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj, router):
        tensors += [linear.weight, linear.bias]
    return DecodeAttentionWeights(*map(pointer, tensors))


def _descriptor(layer: DecoderLayer, batch: int, capacity: int, h: torch.Tensor) -> DecodeAttentionDesc:
    attention = layer.self_attn
    return DecodeAttentionDesc(
        batch, layer.input_layernorm.weight.numel(), attention.num_heads, attention.num_kv_heads, attention.head_dim,
        capacity, attention.sliding_window, layer.mlp.router.weight.shape[0], layer.input_layernorm.eps,
        attention.head_dim**-0.5, dtype_code(h),
    )  # fmt: skip
