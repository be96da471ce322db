"""Write `model.onnx.data` by streaming the weights from the checkpoint, and point the traced graph at it.

The graph is traced without real weights (parameters on the "meta" device), so nothing holds a copy of the model.
`plan_weights` checks the checkpoint; `write_weights` reads each weight in pieces of at most `PIECE_BYTES`
straight from the safetensors files (MXFP4 bytes untouched, dense tensors converted to the build precision),
writes and hashes them. A few pieces are in flight at once, so memory does not grow with the model, and reading,
converting, writing and hashing overlap. Writing needs only the model's parameter list, so it runs while the graph
is traced; `attach_weights` then makes each weight initializer an `ir.ExternalTensor` into the written file.
"""

from __future__ import annotations

import mmap
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir
import torch

from .checkpoint import SAFETENSORS_DTYPES, Checkpoint, NonFinite
from .engine_dir import HashingWriter
from .errors import ConfigError, GptOssError
from .loading import WeightSource, weight_sources
from .model import STEP_GRAPH_PREFIX, GptOssWithHead
from .progress import ByteProgress
from .tensor_stream import PlannedTensor, made_in_order

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


class Cancelled(GptOssError):
    """The build stopped the weight writer (it failed elsewhere or was interrupted)."""


def plan_weights(model: GptOssWithHead, checkpoint_dir: Path) -> list[PlannedTensor]:
    """What to write for every parameter of `model` (which may hold no values) and its computed buffers, after
    checking the whole checkpoint (names, shapes, dtypes, file sizes): a bad or truncated checkpoint fails here,
    before anything is written."""
    checkpoint = Checkpoint(checkpoint_dir)
    try:
        parameters = dict(model.named_parameters())
        plan = [
            _plan_source(STEP_GRAPH_PREFIX + name, source, parameters[name], checkpoint)
            for name, source in weight_sources(model.config, model.head).items()
        ]
    finally:
        checkpoint.close()
    buffers = dict(model.named_buffers())
    for name, value in model.computed_buffers().items():
        if not torch.isfinite(value).all():  # extreme RoPE parameters overflow float32
            raise ConfigError(f"{checkpoint_dir / 'config.json'}: its RoPE parameters make {name} NaN or infinite")
        plan.append(PlannedTensor.of(STEP_GRAPH_PREFIX + name, value.to(buffers[name].dtype)))
    return plan


def write_weights(plan: list[PlannedTensor], data_path: Path, cancel: threading.Event | None = None) -> WrittenWeights:
    """Write the planned tensors into `data_path`, hashing as they go; setting `cancel` stops at the next piece."""
    cancel = cancel or threading.Event()
    progress = ByteProgress(f"writing {data_path.name}", sum(t.nbytes for t in plan))
    writer = HashingWriter(data_path)
    tensors = {}
    try:
        with ThreadPoolExecutor(2) as readers:
            for tensor, piece in made_in_order(readers, plan, PIECES_AHEAD):
                if cancel.is_set():
                    raise Cancelled(f"{data_path}: writing the weights was stopped")
                if tensor.name not in tensors:  # its first piece
                    if tensor.nbytes >= ALIGN_THRESHOLD:
                        writer.pad_to(ALIGNMENT)
                    tensors[tensor.name] = WrittenTensor(writer.size, tensor.nbytes, tensor.dtype, tensor.shape)
                writer.write(piece)
                progress.advance(len(piece))
    finally:
        entry = writer.close()
    progress.finish()
    return WrittenWeights(data_path, tensors, entry)


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


@dataclass(frozen=True)
class _Rows:
    """Rows `first .. first+count` (along the first axis; experts for expert tensors) of a checkpoint tensor,
    transposed when stored in Hugging Face's float expert layout, converted to `dtype`. The rows are mapped from
    the file, not read into fresh memory, so bytes that need no conversion (the MXFP4 experts: most of a model)
    go from the page cache to the writer without a copy or an allocation. Stored values that are not finite (per
    `non_finite`) are refused. A plain value (picklable)."""

    path: Path
    tensor: str
    offset: int  # of the first row in the file
    row_bytes: int
    count: int
    stored: torch.dtype
    row_shape: tuple[int, ...]
    transpose: bool
    dtype: torch.dtype
    non_finite: NonFinite | None

    def __call__(self) -> torch.Tensor | memoryview:
        start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
        length = self.offset + self.count * self.row_bytes - start
        try:
            with open(self.path, "rb", buffering=0) as handle:
                # populated now, on a reader's thread, so the writer and the hasher never wait on the disk
                mapped = mmap.mmap(handle.fileno(), length, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ,
                                   offset=start)  # fmt: skip
        except ValueError:
            raise GptOssError(f"{self.path}: tensor {self.tensor!r} is cut short (file truncated while read)") from None
        rows = memoryview(mapped)[self.offset - start :]
        if self.non_finite is not None:
            self.non_finite.refuse(rows, f"{self.path}: tensor {self.tensor!r}")
        if self.stored == self.dtype and not self.transpose:
            return rows
        tensor = torch.frombuffer(bytearray(rows), dtype=self.stored).view(self.count, *self.row_shape)
        return (tensor.transpose(1, 2) if self.transpose else tensor).to(self.dtype)


def _plan_source(name: str, source: WeightSource, parameter: torch.Tensor, checkpoint: Checkpoint) -> PlannedTensor:
    """Pieces of whole rows of at most PIECE_BYTES, in the parameter's dtype."""
    path, begin, end = checkpoint.data_range(source.spec)
    shape = source.spec.shape
    stored = SAFETENSORS_DTYPES[checkpoint.dtype_name(source.spec.name)]
    non_finite = source.spec.non_finite(stored)
    row_bytes = (end - begin) // max(shape[0], 1)
    rows = max(1, PIECE_BYTES // max(row_bytes, 1))
    pieces = [
        _Rows(path, source.spec.name, begin + first * row_bytes, row_bytes, min(rows, shape[0] - first), stored,
              shape[1:], source.transpose, parameter.dtype, non_finite)
        for first in range(0, shape[0], rows)
    ]  # fmt: skip
    return PlannedTensor(name, parameter.dtype, tuple(parameter.shape), pieces)
