"""PyTorch backend: the project's own model (gptoss.exporter), run through the same cache-step contract.

It takes an ONNX engine directory (and runs the engine's own weights), another engine directory (and loads the
checkpoint it was built from) or a checkpoint directory directly. It imports torch and the exporter, which the
other backends never do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import contract
from ..errors import GptOssError
from ..manifest import Manifest
from .engine_weights import has_engine_weights, step_graph_from_engine

if TYPE_CHECKING:
    from gptoss.exporter.config import GptOssConfig


def checkpoint_manifest(checkpoint_dir: str | Path, head: str = "causal-lm", max_seq_len: int = 4096) -> Manifest:
    """An in-memory manifest describing a checkpoint run by a PyTorch-model backend (no files are written)."""
    from gptoss.exporter.config import load_config

    checkpoint_dir = Path(checkpoint_dir)
    tokenizer = checkpoint_dir / "tokenizer.json"
    return model_manifest(
        load_config(checkpoint_dir), checkpoint_dir, head=head, max_seq_len=max_seq_len,
        tokenizer=tokenizer.name if tokenizer.is_file() else None,
    )  # fmt: skip


def model_manifest(
    config: GptOssConfig,
    source_dir: Path,
    *,
    head: str = "causal-lm",
    precision: str = "fp32",
    max_seq_len: int = 4096,
    max_batch: int = 8,
    tokenizer: str | None = None,
) -> Manifest:
    """An in-memory manifest of a model run by a PyTorch-model backend, its weights from `source_dir`."""
    return Manifest(
        engine_dir=source_dir,
        target="onnx",
        head=head,
        precision=precision,
        config=config,
        io=contract.graph_io(config, head, False, precision),
        files={"tokenizer": {"name": tokenizer}} if tokenizer else {},
        max_batch=max_batch,
        max_seq_len=min(max_seq_len, config.max_position_embeddings),
        tokenizer=tokenizer,
        chat_format="harmony",
        source_checkpoint=str(source_dir.resolve()),
    )


class TorchBackend:
    """`Backend` over `gptoss.exporter.load_model`, on CPU (or CUDA when asked)."""

    name = "torch"

    def __init__(self, manifest: Manifest, device: str = "cpu", model: Any = None) -> None:
        """Run `model` (a `GptOssWithHead` already on `device`), else the engine directory's own weights (ONNX
        engines), else the manifest's source checkpoint, on `device`."""
        import torch

        from gptoss.exporter import load_model
        from gptoss.exporter.model import StepGraph

        if model is None and has_engine_weights(manifest):
            graph = step_graph_from_engine(manifest).to(device)
        else:
            if model is None:
                if not manifest.source_checkpoint or not Path(manifest.source_checkpoint, "config.json").is_file():
                    raise GptOssError(
                        f"{manifest.engine_dir}: the {self.name} backend needs the source checkpoint, "
                        f"{manifest.source_checkpoint!r} is not one"
                    )
                dtype = getattr(torch, contract.precision(manifest.precision).name)
                model = load_model(manifest.source_checkpoint, head=manifest.head, dtype=dtype, device=device)
            graph = StepGraph(model, manifest.all_positions)
        self.graph = graph.eval()
        self.manifest = manifest
        self._torch = torch
        self._device = device
        self._caches: list = []

    def allocate(self, batch: int, max_seq_len: int) -> None:
        self._caches = self.graph.allocate_kv_caches(batch, max_seq_len)

    def _inputs(self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray) -> tuple:
        """The step's inputs as tensors on the model's device."""
        torch = self._torch

        def tensor(array: np.ndarray, dtype):
            return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=self._device)

        return tensor(input_ids, torch.int64), tensor(past_len, torch.int32), tensor(new_len, torch.int32)

    def step(self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray) -> np.ndarray:
        torch = self._torch
        ids, past, new = self._inputs(input_ids, past_len, new_len)
        with torch.no_grad():
            outputs, *self._caches = self.graph(ids, past, new, self._caches)
        return outputs.float().cpu().numpy()
