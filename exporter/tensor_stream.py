"""Tensors written piece by piece: planned (name, dtype, shape) before their data exists, made on a thread pool a
few pieces ahead of the writer, so memory holds a few pieces and never a whole model. The checkpoint writer of
the tools and the exporter's `model.onnx.data` writer both stream through this."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

Piece = Callable[[], "torch.Tensor | memoryview"]  # a part of a tensor, or that part's bytes already


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor to write: its name, dtype and shape, and the pieces that make its data in order (each a callable
    returning a tensor of `dtype` or its bytes; their elements add up to `shape`)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    pieces: Sequence[Piece]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> PlannedTensor:
        """A tensor that already exists, written as one piece."""
        return cls(name, tensor.dtype, tuple(tensor.shape), (_Existing(tensor),))


@dataclass(frozen=True)
class _Existing:
    """A piece that is a tensor already made (picklable, unlike a lambda)."""

    tensor: torch.Tensor

    def __call__(self) -> torch.Tensor:
        return self.tensor


def made_in_order(
    pool: ThreadPoolExecutor, tensors: Sequence[PlannedTensor], ahead: int
) -> Iterator[tuple[PlannedTensor, memoryview]]:
    """The bytes of each piece of each tensor, made on `pool` at most `ahead` pieces before the consumer, in
    order."""
    pending: deque = deque()
    for tensor in tensors:
        for piece in tensor.pieces:
            pending.append((tensor, pool.submit(_bytes_of, tensor, piece)))
            if len(pending) > ahead:
                done, future = pending.popleft()
                yield done, future.result()
    while pending:
        done, future = pending.popleft()
        yield done, future.result()


def _bytes_of(tensor: PlannedTensor, piece: Piece) -> memoryview:
    made = piece()
    if isinstance(made, memoryview):
        return made
    if made.dtype != tensor.dtype:
        raise ValueError(f"tensor {tensor.name!r} is {made.dtype} in part, expected {tensor.dtype}")
    return raw_bytes(made)


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes (any dtype, bfloat16 included), without a copy when it is contiguous."""
    return memoryview(tensor.contiguous().view(-1).view(torch.uint8).numpy())
