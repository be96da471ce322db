"""The training-time losses of the PyTorch model, computed as Hugging Face transformers computes them for GPT-OSS
(`transformers.loss.loss_utils` and `load_balancing_loss_func`), so a loss here equals transformers' on the same
weights and inputs."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .config import PROBLEM_TYPES

IGNORE_INDEX = -100  # labels equal to it take no part in a cross-entropy (padding, prompt tokens)


def causal_lm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's logits `[B,S,V]` against the next position's label `[B,S]`."""
    next_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    return _cross_entropy(logits, next_labels)


def token_classification(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each token's scores `[B,S,labels]` against its label `[B,S]`."""
    return _cross_entropy(scores, labels)


def problem_type_of(num_labels: int, labels: torch.Tensor) -> str:
    """Hugging Face's inference when the config names no `problem_type`: one label regresses, integer labels pick a
    class, anything else (float vectors) is multi-label."""
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def sequence_classification(scores: torch.Tensor, labels: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """The loss of pooled scores `[B,labels]`: mean squared error (regression), cross-entropy (single label) or
    binary cross-entropy on logits (multi-label), by `problem_type` (None: `problem_type_of`)."""
    num_labels = scores.shape[-1]
    problem_type = problem_type or problem_type_of(num_labels, labels)
    labels = labels.to(scores.device)
    if problem_type == "regression":
        return F.mse_loss(scores.squeeze(), labels.squeeze()) if num_labels == 1 else F.mse_loss(scores, labels)
    if problem_type == "single_label_classification":
        return F.cross_entropy(scores.view(-1, num_labels), labels.view(-1), ignore_index=IGNORE_INDEX)
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(scores, labels)
    raise ValueError(f"problem_type {problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")


def load_balancing(
    router_logits: tuple[torch.Tensor, ...], top_k: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Switch Transformer's auxiliary loss over every layer's router logits `[B·S, E]`: the number of experts times
    the sum over experts of (share of top-k picks) × (mean routing probability), tokens where `attention_mask` is 0
    left out."""
    probabilities = torch.softmax(torch.cat(router_logits), dim=-1)  # in the logits' dtype, as Hugging Face
    num_experts = probabilities.shape[-1]
    chosen = F.one_hot(torch.topk(probabilities, top_k, dim=-1).indices, num_experts).sum(1).float()
    if attention_mask is None:
        weight = torch.ones(probabilities.shape[0], device=probabilities.device)
    else:
        weight = attention_mask.reshape(-1).float().to(probabilities.device).repeat(len(router_logits))
    picks_per_expert = (chosen * weight[:, None]).sum(0) / weight.sum()
    probability_per_expert = (probabilities.float() * weight[:, None]).sum(0) / weight.sum()
    return (picks_per_expert * probability_per_expert).sum() * num_experts


def _cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in float32 over every position whose label is not IGNORE_INDEX."""
    flat = scores.float().reshape(-1, scores.shape[-1])
    return F.cross_entropy(flat, labels.reshape(-1).to(flat.device), ignore_index=IGNORE_INDEX)
