"""Cache rows: hands out the rows of the KV caches a backend preallocates, and runs steps over them.

A row's cache is "empty" whenever its length is 0: the ops ignore every slot at or past `past_len`, so a
finished row takes a new request without clearing or reallocating anything (row reuse).
"""

from __future__ import annotations

import numpy as np

from .backends import Backend
from .errors import GptOssError


class CacheRows:
    """`batch` cache rows of `max_seq_len` tokens each (sliding layers keep only their window, as a ring), the
    length of each, which are in use, and the step that feeds new tokens to some of them."""

    def __init__(self, backend: Backend, batch: int, max_seq_len: int) -> None:
        backend.allocate(batch, max_seq_len)
        self.backend = backend
        self.batch = batch
        self.max_seq_len = max_seq_len
        self.lengths = np.zeros(batch, dtype=np.int32)
        self.in_use = np.zeros(batch, dtype=bool)

    def acquire(self) -> int:
        """A free row, reset to length 0."""
        free = np.flatnonzero(~self.in_use)
        if not free.size:
            raise GptOssError(f"all {self.batch} cache rows are in use")
        row = int(free[0])
        self.in_use[row] = True
        self.lengths[row] = 0
        return row

    def release(self, row: int) -> None:
        self.in_use[row] = False
        self.lengths[row] = 0

    def step(self, tokens: dict[int, list[int]]) -> np.ndarray:
        """Feed `tokens[row]` (new tokens per row; rows not listed get none); returns the backend output."""
        width = max(len(t) for t in tokens.values())
        input_ids = np.zeros((self.batch, width), dtype=np.int32)
        new_len = np.zeros(self.batch, dtype=np.int32)
        for row, row_tokens in tokens.items():
            if self.lengths[row] + len(row_tokens) > self.max_seq_len:
                total = self.lengths[row] + len(row_tokens)
                raise GptOssError(f"row {row}: {total} tokens exceed the cache length {self.max_seq_len}")
            input_ids[row, : len(row_tokens)] = row_tokens
            new_len[row] = len(row_tokens)
        output = self.backend.step(input_ids, self.lengths.copy(), new_len)
        self.lengths += new_len
        return output
