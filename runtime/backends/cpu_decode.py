"""Decode steps of the cpu backend's bf16 models with one native call per layer up to its MoE
(`gptoss_cpu_decode_attention`: norm, q/k/v, RoPE, sink attention, o_proj, residual, norm, router), so that between
the kernels of a layer the interpreter runs only the router's top-k, the MoE call and the residual add: after each
kernel has streamed tens of megabytes through the caches, interpreted code runs several times slower than usual, and
a step of the model's own code cost as much as its MoE. Other steps (prefill, hidden states or routing asked for,
explicit position ids, float32 models) run the model as it is.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from gptoss.exporter import rope
from gptoss.exporter.model import DecoderLayer, DecoderOutput, GptOssModel
from gptoss.tools.cpu_kernels import CpuKernels, DecodeAttentionDesc, DecodeAttentionWeights, dtype_code, pointer
from gptoss.tools.kernels import KernelError


class NativeDecode:
    """Takes over `model.forward` for the steps it runs natively; every other call goes to the model's own."""

    def __init__(self, kernels: CpuKernels, model: GptOssModel) -> None:
        self.lib, self.model = kernels.lib, model
        self.weights = [_layer_weights(layer) for layer in model.layers]
        self._model_forward = model.forward
        self._workspaces: dict[int, torch.Tensor] = {}
        model.forward = self.forward

    def forward(self, input_ids, past_len, new_len, kv_caches, position_ids=None, collect: bool = False) -> Any:
        model = self.model
        if collect or position_ids is not None or input_ids.shape[1] != 1:
            return self._model_forward(input_ids, past_len, new_len, kv_caches, position_ids, collect)
        h = model.embed_tokens(input_ids).contiguous()  # [B, 1, H], updated in place layer by layer
        cos, sin = rope.cos_sin(past_len.to(torch.int64).unsqueeze(-1), model.inv_freq, model.rope_scale, h.dtype)
        batch, hidden = h.shape[0], h.shape[-1]
        normed = torch.empty(batch, hidden, dtype=h.dtype)
        logits = torch.empty(batch, model.config.num_local_experts, dtype=h.dtype)
        shared = [pointer(t) for t in (h, cos.contiguous(), sin.contiguous())]
        rows = [pointer(past_len.contiguous()), pointer(new_len.contiguous()), pointer(normed), pointer(logits)]
        for layer, weights, cache in zip(model.layers, self.weights, kv_caches, strict=True):
            desc = _descriptor(layer, batch, cache.shape[3], h)
            workspace = self._workspace(desc)
            code = self.lib.gptoss_cpu_decode_attention(
                ctypes.byref(desc), ctypes.byref(weights), *shared, pointer(cache), *rows, workspace.data_ptr()
            )
            if code:
                raise KernelError(f"gptoss_cpu_decode_attention failed with error {code}")
            top_logits, expert_ids = torch.topk(logits, layer.mlp.top_k, dim=-1)
            moe = layer.mlp.experts(normed, expert_ids.to(torch.int32), torch.softmax(top_logits, dim=-1))
            h += moe.view_as(h)
        return DecoderOutput(model.norm(h), list(kv_caches), [], [])

    def _workspace(self, desc: DecodeAttentionDesc) -> torch.Tensor:
        """A workspace for `desc`'s shape, kept per batch size (every layer of a step needs the same)."""
        size = self.lib.gptoss_cpu_decode_attention_workspace_size(ctypes.byref(desc))
        kept = self._workspaces.get(desc.batch)
        if kept is None or kept.numel() < size:
            kept = self._workspaces[desc.batch] = torch.empty(size, dtype=torch.uint8)
        return kept


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
