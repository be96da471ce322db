"""Embedding requests: a text is fed whole and the bare model's hidden states at its row are the answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Embedding:
    """The last hidden state of every token of one input, after the final norm: `[tokens, hidden_size]`."""

    token_ids: list[int]
    hidden_states: np.ndarray


@dataclass
class EmbeddingRequest:
    """One input to embed (a `scheduler.Request`); its event is `(index, Embedding)`."""

    index: int  # position of the input in its call
    prompt: list[int]

    def advance(self, output: np.ndarray, room: int) -> tuple[tuple[int, Embedding], None]:
        return (self.index, Embedding(self.prompt, np.array(output[: len(self.prompt)]))), None
