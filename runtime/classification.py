"""Classification requests: a text is fed whole and the head's scores at its row are the answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Classification:
    """Scores of one input: `[num_labels]` for sequence heads, `[tokens, num_labels]` for token heads."""

    token_ids: list[int]
    scores: np.ndarray
    labels: list[str] | str


@dataclass
class ClassificationRequest:
    """One input to classify (a `scheduler.Request`); its event is `(index, Classification)`."""

    index: int  # position of the input in its call
    prompt: list[int]
    label_names: dict[int, str]

    def advance(self, output: np.ndarray, room: int) -> tuple[tuple[int, Classification], None]:
        scores = np.array(output[: len(self.prompt)] if output.ndim == 2 else output)  # token head: one per token
        best = scores.argmax(-1)
        labels = self.label_names[int(best)] if best.ndim == 0 else [self.label_names[int(b)] for b in best]
        return (self.index, Classification(self.prompt, scores, labels)), None
