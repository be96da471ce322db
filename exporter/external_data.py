"""Write `model.onnx.data` by streaming each initializer from the checkpoint, hashing while writing.

The graph is traced without real weights (parameters on the "meta" device). Each parameter initializer is then
read from the checkpoint (MXFP4 bytes untouched, dense weights converted to the build precision), written,
hashed and released before the next one, so memory does not grow with the model's depth; constants the
tracer made keep their values. Afterwards every initializer is an `ir.ExternalTensor` into the written file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from .checkpoint import Checkpoint
from .errors import GptOssError
from .loading import WeightSource, weight_sources
from .model import STEP_GRAPH_PREFIX, GptOssWithHead
from .progress import ByteProgress

ALIGNMENT = 4096  # tensors of at least ALIGN_THRESHOLD bytes start at multiples of this (page-aligned mmap)
ALIGN_THRESHOLD = 1 << 20


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's raw bytes (any dtype, bfloat16 included), without a copy."""
    return memoryview(tensor.contiguous().view(-1).view(torch.uint8).numpy())


def _torch_dtype(value: ir.Value) -> torch.dtype:
    """torch dtype of an initializer (its traced value, meta or real)."""
    raw = getattr(value.const_value, "raw", None)
    if isinstance(raw, torch.Tensor):
        return raw.dtype
    return torch.from_numpy(np.empty(0, dtype=value.const_value.dtype.numpy())).dtype


class HashingWriter:
    """Appends bytes to a file while computing its size and sha256."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._digest = hashlib.sha256()
        self._file = open(path, "wb")  # noqa: SIM115  (closed by close())

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    def pad_to(self, alignment: int) -> None:
        self.write(bytes(-self.size % alignment))

    def close(self) -> dict[str, int | str]:
        """Close the file; returns its manifest entry (name, size, sha256)."""
        self._file.close()
        return {"name": self.path.name, "size": self.size, "sha256": self._digest.hexdigest()}


def stream_weights(onnx_model: ir.Model, model: GptOssWithHead, checkpoint_dir: Path, data_path: Path) -> dict:
    """Write the weights of `onnx_model`, traced from `model` (which may hold no weights), from the checkpoint
    into `data_path`; returns the file's manifest entry."""
    sources = {STEP_GRAPH_PREFIX + n: s for n, s in weight_sources(model.config, model.head).items()}
    buffers = {STEP_GRAPH_PREFIX + n: b for n, b in model.computed_buffers().items()}
    checkpoint = Checkpoint(checkpoint_dir)
    try:
        return stream_initializers(onnx_model, checkpoint, sources, buffers, data_path)
    finally:
        checkpoint.close()


def stream_initializers(
    model: ir.Model,
    checkpoint: Checkpoint,
    sources: Mapping[str, WeightSource],
    buffers: Mapping[str, torch.Tensor],
    data_path: Path,
) -> dict[str, int | str]:
    """Write the weights and buffers of `model` into `data_path` and point the model at it; returns the file's
    manifest entry. `sources` and `buffers` say where their values come from, by initializer name. The tracer's
    own constants (shapes, scalars) stay inline: ONNX shape inference needs them in the graph."""
    values = [v for name, v in model.graph.initializers.items() if name in sources or name in buffers]
    readers = [_reader(value, checkpoint, sources, buffers) for value in values]
    total = sum(_nbytes(value) for value in values)
    progress = ByteProgress(f"writing {data_path.name}", total)
    writer = HashingWriter(data_path)
    try:
        for value, read in zip(values, readers, strict=True):
            nbytes = _nbytes(value)
            if nbytes >= ALIGN_THRESHOLD:
                writer.pad_to(ALIGNMENT)
            offset = writer.size
            data = read()
            if len(data) != nbytes:
                raise GptOssError(f"{value.name}: {len(data)} bytes, the traced graph expects {nbytes}")
            writer.write(data)
            del data
            value.const_value = ir.ExternalTensor(
                data_path.name, offset, nbytes, value.dtype, shape=value.shape, name=value.name,
                base_dir=data_path.parent,
            )  # fmt: skip
            progress.advance(nbytes)
    finally:
        entry = writer.close()
    progress.finish()
    return entry


def _nbytes(value: ir.Value) -> int:
    return value.const_value.nbytes


def _reader(
    value: ir.Value,
    checkpoint: Checkpoint,
    sources: Mapping[str, WeightSource],
    buffers: Mapping[str, torch.Tensor],
) -> Callable[[], memoryview | bytes]:
    """How to produce the bytes of one initializer (checked before anything is written)."""
    name, dtype = value.name, _torch_dtype(value)
    if name in sources:
        source = sources[name]
        checkpoint.check(source.spec)
        return lambda: _as_bytes(source.read(checkpoint, dtype))
    return lambda: _as_bytes(buffers[name].to(dtype))
