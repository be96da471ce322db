"""Write `model.onnx.data` by streaming the weights from the checkpoint, and point the traced graph at it.

The graph is traced without real weights (parameters on the "meta" device), so nothing holds a copy of the model.
`stream_weights` reads each weight in pieces of at most `PIECE_BYTES` straight from the safetensors files (MXFP4
bytes untouched, dense tensors converted to the build precision), writes and hashes them; a few pieces are in
flight at once, so memory does not grow with the model, and reading, converting, writing and hashing overlap.
It needs only the model's parameter list, so it runs while the graph is traced; `attach_weights` then makes each
weight initializer an `ir.ExternalTensor` into the written file.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import onnx_ir as ir
import torch

from .checkpoint import SAFETENSORS_DTYPES, Checkpoint
from .engine_dir import HashingWriter
from .errors import GptOssError
from .loading import WeightSource, weight_sources
from .model import STEP_GRAPH_PREFIX, GptOssWithHead
from .progress import ByteProgress

PIECE_BYTES = 64 << 20
PIECES_AHEAD = 4  # pieces read and converted ahead of the writer (bounds the memory in flight)
ALIGNMENT = 4096  # tensors of at least ALIGN_THRESHOLD bytes start at page boundaries (mmap-friendly)
ALIGN_THRESHOLD = 1 << 20


@dataclass(frozen=True)
class WrittenTensor:
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class WrittenWeights:
    """Where each weight and buffer (by initializer name) lies in the data file, and the file's manifest entry."""

    path: Path
    tensors: dict[str, WrittenTensor]
    entry: dict


@dataclass(frozen=True)
class _Planned:
    name: str  # initializer name
    dtype: torch.dtype
    shape: tuple[int, ...]
    pieces: list[Callable[[], memoryview]]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def stream_weights(model: GptOssWithHead, checkpoint_dir: Path, data_path: Path) -> WrittenWeights:
    """Write every parameter of `model` (which may hold no values) from the checkpoint, and its computed buffers,
    into `data_path`. The whole checkpoint is checked (names, shapes, dtypes, file sizes) before the first byte."""
    checkpoint = Checkpoint(checkpoint_dir)
    try:
        parameters = dict(model.named_parameters())
        plan = [
            _plan_source(STEP_GRAPH_PREFIX + name, source, parameters[name], checkpoint)
            for name, source in weight_sources(model.config, model.head).items()
        ]
        buffers = dict(model.named_buffers())
        for name, value in model.computed_buffers().items():
            buffer = value.to(buffers[name].dtype)
            pieces = [partial(_bytes, buffer)]
            plan.append(_Planned(STEP_GRAPH_PREFIX + name, buffer.dtype, tuple(buffer.shape), pieces))
        return _write(plan, data_path)
    finally:
        checkpoint.close()


def attach_weights(onnx_model: ir.Model, weights: WrittenWeights) -> None:
    """Make every written initializer of `onnx_model` an external tensor into the data file; any initializer left
    without a value (a traced weight that was not written) is an error."""
    for name, value in onnx_model.graph.initializers.items():
        written = weights.tensors.get(name)
        if written is None:
            raw = getattr(value.const_value, "raw", None)
            if getattr(raw, "is_meta", False):
                raise GptOssError(f"initializer {name}: no checkpoint tensor or buffer provides its value")
            continue  # one of the tracer's own small constants: stays inline
        if value.const_value.nbytes != written.nbytes or tuple(value.shape) != written.shape:
            raise GptOssError(f"initializer {name}: the traced graph expects {value.shape}, {written.nbytes} bytes "
                              f"were written")  # fmt: skip
        value.const_value = ir.ExternalTensor(
            weights.path.name, written.offset, written.nbytes, value.dtype, shape=value.shape, name=name,
            base_dir=weights.path.parent,
        )  # fmt: skip


def _plan_source(name: str, source: WeightSource, parameter: torch.Tensor, checkpoint: Checkpoint) -> _Planned:
    """Pieces of whole rows (first axis; experts for expert tensors) read with `pread`, transposed when the source
    is in Hugging Face's float expert layout, converted to the parameter's dtype."""
    path, begin, end = checkpoint.data_range(source.spec)
    shape = source.spec.shape
    stored = SAFETENSORS_DTYPES[checkpoint.dtype_name(source.spec.name)]
    row_bytes = (end - begin) // max(shape[0], 1)
    rows = max(1, PIECE_BYTES // max(row_bytes, 1))

    def piece(first: int, count: int) -> memoryview:
        raw = bytearray(count * row_bytes)
        with open(path, "rb", buffering=0) as handle:
            handle.seek(begin + first * row_bytes)
            if handle.readinto(raw) != len(raw):
                raise GptOssError(f"{path}: tensor {source.spec.name!r} is cut short (file truncated while read)")
        tensor = torch.frombuffer(raw, dtype=stored).view(count, *shape[1:])
        if source.transpose:
            tensor = tensor.transpose(1, 2)
        return _bytes(tensor.to(parameter.dtype))

    pieces = [lambda f=first: piece(f, min(rows, shape[0] - f)) for first in range(0, shape[0], rows)]
    return _Planned(name, parameter.dtype, tuple(parameter.shape), pieces)


def _bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's raw bytes (any dtype, bfloat16 included)."""
    return memoryview(tensor.contiguous().view(-1).view(torch.uint8).numpy())


def _write(plan: list[_Planned], data_path: Path) -> WrittenWeights:
    progress = ByteProgress(f"writing {data_path.name}", sum(t.nbytes for t in plan))
    writer = HashingWriter(data_path)
    tensors = {}
    try:
        with ThreadPoolExecutor(2) as readers:
            for tensor, data, first in _read_ahead(readers, plan):
                if first:
                    if tensor.nbytes >= ALIGN_THRESHOLD:
                        writer.pad_to(ALIGNMENT)
                    tensors[tensor.name] = WrittenTensor(writer.size, tensor.nbytes, tensor.dtype, tensor.shape)
                writer.write(data)
                progress.advance(len(data))
    finally:
        entry = writer.close()
    for name, written in tensors.items():
        if writer.size < written.offset + written.nbytes:
            raise GptOssError(f"{data_path}: {name} was not written completely")
    progress.finish()
    return WrittenWeights(data_path, tensors, entry)


def _read_ahead(pool: ThreadPoolExecutor, plan: list[_Planned]) -> Iterator[tuple[_Planned, memoryview, bool]]:
    """Each piece of each tensor in order, made on `pool` at most PIECES_AHEAD ahead (True on a tensor's first)."""
    pending: deque = deque()
    items = ((tensor, piece, index == 0) for tensor in plan for index, piece in enumerate(tensor.pieces))
    for tensor, piece, first in items:
        pending.append((tensor, pool.submit(piece), first))
        if len(pending) > PIECES_AHEAD:
            done, future, is_first = pending.popleft()
            yield done, future.result(), is_first
    while pending:
        done, future, is_first = pending.popleft()
        yield done, future.result(), is_first
