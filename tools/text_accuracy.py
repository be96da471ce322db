"""Accuracy on running text: the perplexity of an engine and of its reference, how often both route a token to the
same experts in each layer (MoE models drift first where a token's expert choice flips) and how far apart each
layer's output is.

The engine's layers are read from the `router_topk.{i}` and `layer_output.{i}` outputs of an accuracy build
(`build --accuracy-outputs router,hidden`), run through the ONNX Runtime session the engine already holds, or, on
the backends that run the PyTorch model (torch, cuda, cpu), from that model with the backend's own kernels; the
reference's from its router logits and hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gptoss.runtime import Engine, GptOssError, contract
from gptoss.runtime.backends import MODEL_BACKENDS, cache_shapes

ROUTING_UNAVAILABLE = (
    "not measured: needs onnxruntime on an engine built with --accuracy-outputs router, or the torch, cuda or cpu "
    "backend"
)


@dataclass
class TextAccuracy:
    """Perplexities over the text's tokens and the routing agreement of every (token, layer) pair."""

    tokens: int
    perplexity: float
    reference_perplexity: float
    agreement: np.ndarray | None  # [layers, tokens] bool: the same top-k expert set; None when not measured
    layer_errors: np.ndarray | None  # [layers - 1]: largest abs difference of each layer's output but the last

    @property
    def perplexity_ratio(self) -> float:
        return self.perplexity / self.reference_perplexity

    def first_mismatch(self) -> dict[str, int] | None:
        """The lowest layer where some token's experts differ, and the first such token of the text there."""
        if self.agreement is None or self.agreement.all():
            return None
        layer = int(np.flatnonzero(~self.agreement.all(axis=1))[0])
        return {"layer": layer, "token": int(np.flatnonzero(~self.agreement[layer])[0])}


def chunks(engine: Engine, text: str) -> list[list[int]]:
    """The text's tokens in consecutive pieces the engine holds (each shorter than its max_seq_len)."""
    if engine.tokenizer is None:
        raise GptOssError(f"{engine.manifest.engine_dir}: no tokenizer.json to read the text with")
    ids = engine.tokenizer.encode(text)
    size = max(2, engine.manifest.max_seq_len - 1)  # a piece predicts its tokens after the first
    pieces = [ids[start : start + size] for start in range(0, len(ids), size)]
    return [engine.encode(piece, i) for i, piece in enumerate(pieces) if len(piece) > 1]


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-probabilities of logits over the last axis, in float64."""
    x = x.astype(np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def negative_log_likelihoods(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """`-log p(ids[i+1] | ids[:i+1])` from each position's logits `[S, V]`."""
    return -log_softmax(logits[:-1])[np.arange(len(ids) - 1), ids[1:]]


@dataclass
class Layers:
    """What each layer did with one piece of text; None where it cannot be read."""

    routing: np.ndarray | None  # [layers, S, k]: the experts each token went to
    outputs: np.ndarray | None  # [layers, S, H] float32: each layer's output (the reference's: all but the last)


def engine_layers(engine: Engine, ids: list[int]) -> Layers:
    """The engine's layers for the tokens `ids` (one prefill step from an empty cache): from a PyTorch-model backend,
    or from ONNX Runtime with the accuracy outputs the graph has; nothing from TensorRT."""
    if engine.backend.name in MODEL_BACKENDS:
        return _model_layers(engine, ids)
    manifest = engine.manifest
    layers = range(manifest.config.num_hidden_layers)
    wanted = {kind: [name(i) for i in layers] for kind, name in
              ((contract.ROUTER, contract.router_output), (contract.LAYER_HIDDEN, contract.layer_output))
              if kind in manifest.accuracy_outputs}  # fmt: skip
    if engine.backend.name != "onnxruntime" or not wanted:
        return Layers(None, None)
    dtype = contract.ELEMENT_TYPES[manifest.io.cache_specs()[0].dtype].numpy
    feeds = {
        contract.INPUT_IDS: np.array([ids], np.int32),
        contract.PAST_LEN: np.zeros(1, np.int32),
        contract.NEW_LEN: np.array([len(ids)], np.int32),
    }
    feeds |= {contract.cache_input(i): np.zeros(s, dtype) for i, s in enumerate(cache_shapes(manifest, 1, len(ids)))}
    names = [name for kind_names in wanted.values() for name in kind_names]
    with engine.exclusive_rows(1):  # nothing else steps meanwhile
        outputs = dict(zip(names, engine.backend.session.run(names, feeds), strict=True))
    stacked = {kind: np.stack([outputs[name][0] for name in kind_names]) for kind, kind_names in wanted.items()}
    hidden = stacked.get(contract.LAYER_HIDDEN)
    return Layers(stacked.get(contract.ROUTER), None if hidden is None else hidden.astype(np.float32))


def _model_layers(engine: Engine, ids: list[int]) -> Layers:
    """The layers of a backend that runs the PyTorch model (its `graph.model`, ops routed to its kernels)."""
    model = engine.backend.graph.model
    device = next(model.parameters()).device
    tokens = torch.tensor([ids], device=device)
    lengths = torch.tensor([len(ids)], dtype=torch.int32, device=device)
    caches = model.allocate_kv_caches(1, len(ids))
    with engine.exclusive_rows(1), torch.no_grad():
        decoded = model.model(tokens, torch.zeros_like(lengths), lengths, caches, collect=True)
    routing = np.stack([routing.expert_ids.cpu().numpy() for routing in decoded.routings])
    return Layers(routing, np.stack([state[0].float().cpu().numpy() for state in decoded.layer_states[1:]]))


def reference_outputs(model, ids: list[int], top_k: int) -> tuple[np.ndarray, Layers]:
    """The reference's logits `[S, V]` and its layers: the top-k of its router logits, and the output of every layer
    but the last (whose output Hugging Face reports only after the final norm). `model` is the project's PyTorch
    model or Hugging Face's, whose forwards take the same arguments."""
    batch = torch.tensor([ids], device=next(model.parameters()).device)
    with torch.no_grad():
        output = model(batch, output_router_logits=True, output_hidden_states=True)
    routing = torch.stack([torch.topk(logits, top_k, dim=-1).indices for logits in output.router_logits])
    states = torch.stack([state[0] for state in output.hidden_states[1:-1]]).float()
    return output.logits[0].float().cpu().numpy(), Layers(routing.cpu().numpy(), states.cpu().numpy())


def same_experts(engine: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`[layers, S]`: whether both chose the same set of experts (order within the top k does not matter)."""
    return (np.sort(engine, axis=-1) == np.sort(reference, axis=-1)).all(-1)


@dataclass
class Piece:
    """One side's reading of one piece of the text: each next token's negative log-likelihood, and its layers."""

    nll: np.ndarray
    layers: Layers


def engine_pieces(engine: Engine, pieces: list[list[int]], engine_logits) -> list[Piece]:
    """The engine's side; `engine_logits(engine, ids)` gives its logits `[S, V]`."""
    read = []
    for ids in pieces:
        read.append(Piece(negative_log_likelihoods(engine_logits(engine, ids), ids), engine_layers(engine, ids)))
    return read


def reference_pieces(model, pieces: list[list[int]], top_k: int) -> list[Piece]:
    """The reference's side (`reference_outputs`), run after the engine has been released."""
    read = []
    for ids in pieces:
        logits, layers = reference_outputs(model, ids, top_k)
        read.append(Piece(negative_log_likelihoods(logits, ids), layers))
    return read


def measure(ours: list[Piece], theirs: list[Piece]) -> TextAccuracy:
    """Perplexities, routing agreement and layer-output errors from both sides' readings of the same pieces."""
    if not ours:
        raise GptOssError("--text: fewer than 2 tokens, nothing to predict")
    agreement, errors = [], []
    for engine, reference in zip(ours, theirs, strict=True):
        mine, other = engine.layers, reference.layers
        agreement.append(None if mine.routing is None else same_experts(mine.routing, other.routing))
        errors.append(None if mine.outputs is None else np.abs(mine.outputs[:-1] - other.outputs).max(axis=(1, 2)))
    return TextAccuracy(
        tokens=sum(len(piece.nll) + 1 for piece in ours),
        perplexity=float(np.exp(np.concatenate([piece.nll for piece in ours]).mean())),
        reference_perplexity=float(np.exp(np.concatenate([piece.nll for piece in theirs]).mean())),
        agreement=None if agreement[0] is None else np.concatenate(agreement, axis=1),
        layer_errors=None if errors[0] is None else np.max(errors, axis=0),
    )
