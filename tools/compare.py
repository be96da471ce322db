"""Accuracy report: an engine against the project's PyTorch model (or Hugging Face transformers).

For causal-LM engines every position's next-token distribution is compared (the engine is stepped token
by token, so last-token builds are covered too): max abs and relative logit error, top-1 agreement, KL
divergence, per-position error, and the first divergence of greedy continuations; over a text (`--text FILE`, or
the bundled sample), the perplexity of both and, for accuracy builds, their per-layer expert-routing agreement
(text_accuracy.py). Classification and bare-model engines compare their outputs. `gptoss-export compare` prints the
table, writes JSON, and with `--plot` a PNG.
"""

from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gptoss.exporter import load_model
from gptoss.runtime import Engine, GptOssError

from . import text_accuracy
from .sample_text import SAMPLE_TEXT

DEFAULT_PROMPTS = (
    "The quick brown fox jumps over the lazy dog while the compiler builds an engine.",
    "GPT-OSS is a mixture of experts transformer with attention sinks.",
    "Hello world!",
)


@dataclass
class Report:
    reference: str
    backend: str
    prompts: int
    positions: int
    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    top1_agreement: float
    kl_mean: float
    kl_max: float
    greedy_tokens: int
    greedy_identical: bool
    greedy_first_divergence: list[int | None] = field(default_factory=list)
    per_position_max_abs: list[list[float]] = field(default_factory=list)
    per_layer_max_abs: list[float] = field(default_factory=list)
    text_tokens: int = 0  # causal LM: tokens of the text perplexity and routing are measured on
    perplexity: float | None = None
    reference_perplexity: float | None = None
    perplexity_ratio: float | None = None  # engine / reference
    routing_agreement: float | None = None  # fraction of (token, layer) pairs with the same top-k expert set
    routing_agreement_per_layer: list[float] = field(default_factory=list)
    routing_first_mismatch: dict[str, int] | None = None  # lowest layer with a differing set, first token there
    engine_per_layer_max_abs: list[float] = field(default_factory=list)  # each layer's output but the last, text

    def passed(self, atol: float) -> bool:
        """Logits within `atol`, the same top-1 everywhere, the same greedy tokens. Routing agreement is reported, not
        judged: in reduced precision a router's near-tie may flip while every token stays the same."""
        return self.max_abs_error <= atol and self.top1_agreement == 1.0 and self.greedy_identical

    def verdict(self, atol: float) -> str:
        """The measures `passed` judges, and the routing agreement where measured, in one line."""
        routing = "" if self.routing_agreement is None else f", routing agreement {self.routing_agreement:.4f}"
        return (
            f"max abs error {self.max_abs_error:.3e} vs --atol {atol:g}, top-1 agreement {self.top1_agreement:.4f}, "
            f"greedy identical {self.greedy_identical}{routing}"
        )

    def table(self) -> str:
        rows = [
            ("reference", self.reference), ("backend", self.backend),
            ("prompts / positions", f"{self.prompts} / {self.positions}"),
            ("max abs error", f"{self.max_abs_error:.3e}"), ("max rel error", f"{self.max_rel_error:.3e}"),
            ("mean abs error", f"{self.mean_abs_error:.3e}"), ("top-1 agreement", f"{self.top1_agreement:.4f}"),
            ("KL mean / max", f"{self.kl_mean:.3e} / {self.kl_max:.3e}"),
            ("greedy identical", f"{self.greedy_identical} over {self.greedy_tokens} tokens "
                                 f"(first divergence {self.greedy_first_divergence})"),
        ]  # fmt: skip
        if self.per_layer_max_abs:
            rows.append(("per-layer max abs (hidden)", " ".join(f"{e:.1e}" for e in self.per_layer_max_abs)))
        if self.perplexity is not None:
            rows += [
                ("text tokens", str(self.text_tokens)),
                ("perplexity engine / ref", f"{self.perplexity:.4f} / {self.reference_perplexity:.4f}"),
                ("perplexity ratio", f"{self.perplexity_ratio:.6f}"),
                ("routing agreement", text_accuracy.ROUTING_UNAVAILABLE if self.routing_agreement is None
                 else f"{self.routing_agreement:.4f} (first mismatch: {self._first_mismatch()})"),
            ]  # fmt: skip
        if self.routing_agreement_per_layer:
            rows.append(("routing per layer", " ".join(f"{a:.4f}" for a in self.routing_agreement_per_layer)))
        if self.engine_per_layer_max_abs:
            rows.append(("layer outputs max abs", " ".join(f"{e:.1e}" for e in self.engine_per_layer_max_abs)))
        return "\n".join(f"{name:<28}{value}" for name, value in rows)

    def _first_mismatch(self) -> str:
        where = self.routing_first_mismatch
        return "none" if where is None else f"layer {where['layer']}, token {where['token']}"


def _engine_outputs(engine: Engine, ids: list[int]) -> np.ndarray:
    """`[S, width]`: the engine's output after every prefix of `ids` (`[1, labels]` for sequence heads)."""
    with engine.exclusive_rows(1) as rows:
        row = rows.acquire()
        if engine.manifest.head == "sequence-classification":
            return rows.step({row: ids})[row][None]
        if engine.manifest.io.every_position:
            return rows.step({row: ids})[row][: len(ids)]
        return np.stack([rows.step({row: [token]})[row] for token in ids])


def load_hf(checkpoint: str | Path, head: str = "causal-lm"):
    """Hugging Face transformers' GPT-OSS model with `head` for `checkpoint`, float32, eval mode, quiet."""
    import transformers

    classes = {
        "causal-lm": transformers.GptOssForCausalLM,
        "sequence-classification": transformers.GptOssForSequenceClassification,
        "token-classification": transformers.GptOssForTokenClassification,
        "model": transformers.GptOssModel,
    }
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return classes[head].from_pretrained(checkpoint, dtype=torch.float32).eval()


def _reference(reference_dir: Path, head: str, use_hf: bool, device: str = "cpu"):
    return (load_hf(reference_dir, head) if use_hf else load_model(reference_dir, head=head)).to(device)


def _batch_of(model, ids: list[int]) -> torch.Tensor:
    """`ids` as a batch of one on the model's device."""
    return torch.tensor([ids], device=next(model.parameters()).device)


def _reference_outputs(model, ids: list[int], use_hf: bool) -> np.ndarray:
    """Like `_engine_outputs`, from the reference model's full-sequence forward."""
    with torch.no_grad():
        output = model(_batch_of(model, ids))
    output = (output[0] if use_hf else output).float().cpu()  # Hugging Face: logits, or the bare model's states
    return output.numpy() if output.ndim == 2 else output[0].numpy()


def _greedy(model, ids: list[int], tokens: int, use_hf: bool) -> list[int]:
    prompt = _batch_of(model, ids)
    if use_hf:
        model.generation_config.eos_token_id = None  # exactly `tokens` tokens, no end token masked or stopping
        out = model.generate(prompt, max_new_tokens=tokens, do_sample=False, pad_token_id=model.config.pad_token_id)
        return out[0, len(ids) :].tolist()
    return model.generate_greedy(prompt, tokens)[0].tolist()


def _layer_states(model, ids: list[int]) -> list[torch.Tensor]:
    """The output of every decoder layer but the last, for the tokens `ids`, on the CPU: the project's PyTorch model
    or Hugging Face's, whose forwards take the same arguments (the last hidden state is after the final norm)."""
    with torch.no_grad():
        states = model(_batch_of(model, ids), output_hidden_states=True).hidden_states[1:-1]
    return [state.cpu() for state in states]


@dataclass
class _Side:
    """What one side (engine or reference) produced: outputs per prompt, greedy continuations, text pieces."""

    outputs: list[np.ndarray]
    greedy: list[list[int]]
    text: list[text_accuracy.Piece]


def compare(
    engine_dir: str | Path,
    reference_dir: str | Path,
    *,
    prompts: list[str] | None = None,
    backend: str | None = None,
    use_hf: bool = False,
    greedy_tokens: int = 16,
    reference_device: str = "cpu",
    per_layer: bool = True,
    text: str | None = None,
) -> Report:
    """Run the engine and the reference on the same prompts and measure how far apart they are. `reference_device`:
    where the reference runs; `per_layer`: with `use_hf`, also compare each layer's hidden states (on the CPU);
    `text`: what a causal LM's perplexity and routing are measured on (default: the bundled sample).

    One model is held at a time, so that a real-size model and its reference need not fit in memory together: the
    engine runs first and is released, then (for `per_layer`) the project's model, then the reference."""
    engine = Engine.load(engine_dir, backend)
    head, backend_name, top_k = engine.manifest.head, engine.backend.name, engine.config.num_experts_per_tok
    causal = head == "causal-lm"
    if text is not None and not causal:
        raise GptOssError(f"--text: a {head} engine has no next-token logits to measure perplexity with")
    encoded = [engine.encode(p, i) for i, p in enumerate(prompts or DEFAULT_PROMPTS)]
    pieces = text_accuracy.chunks(engine, text or SAMPLE_TEXT) if causal else []
    ours = _Side(
        [_engine_outputs(engine, ids) for ids in encoded],
        [engine.generate(ids, max_new_tokens=greedy_tokens, stop=[])[0].token_ids for ids in encoded] if causal else [],
        text_accuracy.engine_pieces(engine, pieces, _engine_outputs),
    )
    del engine
    reference_dir = Path(reference_dir)
    layer_states = None
    if per_layer and use_hf and causal:
        layer_states = _layer_states(load_model(reference_dir), encoded[0])
    gc.collect()
    model = _reference(reference_dir, head, use_hf, reference_device)
    theirs = _Side(
        [_reference_outputs(model, ids, use_hf) for ids in encoded],
        [_greedy(model, ids, greedy_tokens, use_hf) for ids in encoded] if causal else [],
        text_accuracy.reference_pieces(model, pieces, top_k),
    )
    per_layer_errors = []
    if layer_states is not None:
        hf_states = _layer_states(model, encoded[0])
        per_layer_errors = [(a - b).abs().max().item() for a, b in zip(layer_states, hf_states, strict=True)]
    del model
    report = _report(ours, theirs, use_hf, reference_dir, backend_name, greedy_tokens if causal else 0)
    report.per_layer_max_abs = per_layer_errors
    if causal:
        _add_text_metrics(report, text_accuracy.measure(ours.text, theirs.text))
    return report


def _report(ours: _Side, theirs: _Side, use_hf: bool, reference_dir: Path, backend: str, greedy_tokens: int) -> Report:
    """The logit, top-1, KL and greedy figures of both sides' outputs."""
    errors, relative, agree, kls, per_position = [], [], [], [], []
    for mine, ref in zip(ours.outputs, theirs.outputs, strict=True):
        diff = np.abs(mine - ref)
        errors.append(diff)
        # Relative to each position's largest reference logit: per-logit ratios explode near zero.
        relative.append(diff.max(-1) / np.maximum(np.abs(ref).max(-1), 1e-12))
        agree.append(mine.argmax(-1) == ref.argmax(-1))
        log_p, log_q = text_accuracy.log_softmax(ref), text_accuracy.log_softmax(mine)
        kls.append((np.exp(log_p) * (log_p - log_q)).sum(-1))
        per_position.append(diff.max(-1).tolist())
    divergences = []
    for engine_tokens, reference_tokens in zip(ours.greedy, theirs.greedy, strict=True):
        mismatch = [i for i, (a, b) in enumerate(zip(engine_tokens, reference_tokens, strict=True)) if a != b]
        divergences.append(mismatch[0] if mismatch else None)
    flat = np.concatenate([e.reshape(-1) for e in errors])
    return Report(
        reference=f"{'huggingface' if use_hf else 'pytorch'}:{reference_dir}",
        backend=backend,
        prompts=len(ours.outputs),
        positions=sum(len(p) for p in per_position),
        max_abs_error=float(flat.max()),
        max_rel_error=float(max(r.max() for r in relative)),
        mean_abs_error=float(flat.mean()),
        top1_agreement=float(np.concatenate([a.reshape(-1) for a in agree]).mean()),
        kl_mean=float(np.concatenate([k.reshape(-1) for k in kls]).mean()),
        kl_max=float(max(k.max() for k in kls)),
        greedy_tokens=greedy_tokens,
        greedy_identical=all(d is None for d in divergences),
        greedy_first_divergence=divergences,
        per_position_max_abs=per_position,
    )


def _add_text_metrics(report: Report, measured: text_accuracy.TextAccuracy) -> None:
    """Perplexities, routing agreement and layer-output errors over the text into `report`."""
    report.text_tokens = measured.tokens
    report.perplexity, report.reference_perplexity = measured.perplexity, measured.reference_perplexity
    report.perplexity_ratio = measured.perplexity_ratio
    if measured.agreement is not None:
        report.routing_agreement = float(measured.agreement.mean())
        report.routing_agreement_per_layer = measured.agreement.mean(axis=1).tolist()
        report.routing_first_mismatch = measured.first_mismatch()
    if measured.layer_errors is not None:
        report.engine_per_layer_max_abs = measured.layer_errors.tolist()


def read_text(path: Path) -> str:
    """The text of `--text FILE`, or a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GptOssError(f"--text {path}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None


def write_json(report: Report, path: str | Path) -> None:
    Path(path).write_text(json.dumps(asdict(report), indent=2) + "\n")


def plot(report: Report, path: str | Path) -> None:
    """PNG of the max abs error by position (each prompt; the perplexity ratio in its title) and, when measured, by
    layer: the model's hidden-state error against Hugging Face, the engine's routing agreement and output error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GptOssError("--plot needs matplotlib (pip install 'gptoss-export[plot]')") from None
    layer_panels = [(values, title, label, scale) for values, title, label, scale in (
        (report.per_layer_max_abs, "PyTorch model vs Hugging Face, hidden states", "max abs error", "log"),
        (report.routing_agreement_per_layer, "expert routing, engine vs reference", "same top-k experts", "linear"),
        (report.engine_per_layer_max_abs, "layer outputs, engine vs reference", "max abs error", "log"),
    ) if values]  # fmt: skip
    figure, axes = plt.subplots(1, 1 + len(layer_panels), figsize=(6 * (1 + len(layer_panels)), 4), squeeze=False)
    for index, errors in enumerate(report.per_position_max_abs):
        axes[0][0].plot(range(len(errors)), errors, marker=".", label=f"prompt {index}")
    title = f"engine vs {report.reference.split(':')[0]}"
    if report.perplexity_ratio is not None:
        title += f" (perplexity ratio {report.perplexity_ratio:.4f})"
    axes[0][0].set(title=title, xlabel="position", ylabel="max abs error")
    axes[0][0].set_yscale("log")
    axes[0][0].legend()
    for axis, (values, panel_title, label, scale) in zip(axes[0][1:], layer_panels, strict=True):
        axis.bar(range(len(values)), values)
        axis.set_xticks(range(len(values)))
        axis.set(title=panel_title, xlabel="layer", ylabel=label)
        axis.set_yscale(scale)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
