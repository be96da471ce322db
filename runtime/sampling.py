"""Next-token choice from logits: greedy, or sampling with temperature, top-k and top-p (nucleus)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .errors import GptOssError


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = no limit
    top_p: float = 1.0
    seed: int | None = None

    def validate(self) -> None:
        if not _is_number(self.temperature) or not 0 < self.temperature < math.inf:
            raise GptOssError(f"temperature must be a positive finite number, got {self.temperature!r}")
        if not is_integer(self.top_k) or self.top_k < 0:
            raise GptOssError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise GptOssError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (not is_integer(self.seed) or self.seed < 0):
            raise GptOssError(f"seed must be an integer >= 0, got {self.seed!r}")


def is_integer(value: object) -> bool:
    """An int (numpy's included), not a bool or a float."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def choose_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """One token id from float logits `[V]`. `top_k=1` is exactly greedy."""
    if not params.do_sample or params.top_k == 1:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / params.temperature
    order = np.argsort(-scaled, kind="stable")
    if params.top_k:
        order = order[: params.top_k]
    probs = np.exp(scaled[order] - scaled[order[0]])
    probs /= probs.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)  # smallest prefix reaching top_p
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])
